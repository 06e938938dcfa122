"""Tests of the web example (``examples/web``); the library's webhook tests are in tests/unit.

:func:`need` imports an optional dependency of these tests: without it a local run skips the
module with a message, while under CI (``CI`` set and not false) it is an error, so that CI
never passes by skipping.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import anyio
import pytest

#: True under CI, where nothing in this package may be skipped.
CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(module: str, why: str) -> ModuleType:
    """``module``, or skip the calling test module (locally) / fail (under CI) without it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({why}): pip install -e '.[dev]'"
        if CI:
            raise RuntimeError(f"{message}; CI must run these tests") from exc
        pytest.skip(message, allow_module_level=True)


#: Emulator mode, clock x0.05: a generation takes ~0.2 s, the window is 3 s.
FAST: dict[str, Any] = {"time_scale": 0.05, "poll_interval": 0.02}
#: A generation that runs for ~50 s (clock x0.05) unless someone stops watching it.
SLOW: dict[str, Any] = {"emulator": {"processing_time": 1000.0, "generation_timeout": 1000.0}}
#: Bound on every wait for a condition in these tests.
WAIT = 10.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


async def async_wait_for(
    condition: Callable[[], Awaitable[object]], what: str, timeout: float = WAIT
) -> None:
    """:func:`wait_for` for an async condition."""
    with anyio.move_on_after(timeout):
        while True:
            if await condition():
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a Server-Sent Events body (data parsed as JSON)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        events.append((name, json.loads("\n".join(data))))
    return events
