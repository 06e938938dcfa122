"""Shared fixtures: every async test runs on asyncio (aiohttp needs it) via anyio's plugin;
``fake_clock`` is a clock that moves only when the test says so (:mod:`tests.unit.fakeclock`).
"""

from __future__ import annotations

import pytest

from .unit.fakeclock import FakeClock


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh fake clock at t=1000: ``await fake_clock.advance(s)`` moves it and wakes waits."""
    return FakeClock()
