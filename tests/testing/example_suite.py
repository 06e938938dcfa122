"""A user's test file, run by ``test_plugins.py`` in a child pytest under each async plugin.

``EXAMPLE_MODE`` picks how the async tests are marked: ``anyio`` (anyio's plugin),
``asyncio`` / ``asyncio-module`` (pytest-asyncio strict mode, function or module loop) or
``auto`` (pytest-asyncio auto mode: no marks). ``EXAMPLE_ALONE=1`` also asserts that the other
async plugin is not loaded, so that each one is proven to suffice on its own.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import asyncsdk
from asyncsdk.emulator import Emulator
from asyncsdk.testing import NSFW_PROMPT, WebhookReceiver, fill_window, occupy_slot

F = TypeVar("F", bound=Callable[..., Any])
MODE = os.environ.get("EXAMPLE_MODE", "anyio")
MODEL = "google/nano-banana"

if MODE == "anyio":
    mark: Any = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend() -> str:
        return "asyncio"

elif MODE == "asyncio":
    mark = pytest.mark.asyncio
elif MODE == "asyncio-module":
    mark = pytest.mark.asyncio(loop_scope="module")
elif MODE == "auto":
    mark = None
else:
    raise ValueError(f"unknown EXAMPLE_MODE {MODE!r}")

if os.environ.get("EXAMPLE_ALONE") == "1":
    other = "pytest_asyncio" if MODE == "anyio" else "anyio.pytest_plugin"
    assert other not in sys.modules, f"{other} is loaded: this run must prove {MODE} suffices"


def run(test: F) -> F:
    """Mark an async test for the plugin under test."""
    return test if mark is None else mark(test)


def created(emulator: Emulator) -> int:
    return emulator.stats.created[emulator.tokens[0]]


def throttled(emulator: Emulator, code: str) -> int:
    return emulator.stats.throttled[emulator.tokens[0]][code]


@run
async def test_generate(babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator) -> None:
    generation = await babysea_client.generate(MODEL, "a red kite")
    assert generation.status is asyncsdk.GenerationStatus.SUCCEEDED
    records = babysea_emulator.generations(babysea_emulator.tokens[0])
    assert [r["generationId"] for r in records] == [generation.generation_id]


@run
async def test_a_lost_answer_is_paid_once(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    babysea_emulator.faults.drop_after_create(1)
    await babysea_client.generate(MODEL, "a lost answer")
    assert created(babysea_emulator) == 1


@run
async def test_a_connection_lost_before_create_is_sent_again(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    babysea_emulator.faults.drop_before_create(1)
    await babysea_client.generate(MODEL, "lost on the way")
    assert created(babysea_emulator) == 1


@run
async def test_5xx_are_retried(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    babysea_emulator.faults.fail_submissions(2)
    babysea_emulator.faults.fail_reads(2)
    await babysea_client.generate(MODEL, "through two failures")
    assert created(babysea_emulator) == 1


@run
async def test_a_full_window_is_waited_out(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    assert fill_window(babysea_emulator) == babysea_client.limits.submissions
    await babysea_client.generate(MODEL, "after the window")
    assert throttled(babysea_emulator, "RATE_LIMIT_ERROR") == 1
    assert created(babysea_emulator) == 1


@run
async def test_a_busy_slot_is_waited_for(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    other = occupy_slot(babysea_emulator)
    mine = await babysea_client.generate(MODEL, "after the other one")
    assert throttled(babysea_emulator, "CONCURRENT_GENERATION_ERROR") == 1
    assert mine.generation_id != other
    assert created(babysea_emulator) == 2


@run
async def test_a_stuck_generation_is_cancelled(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    babysea_emulator.faults.stick(1)
    with pytest.raises(asyncsdk.GenerationFailedError) as failed:
        await babysea_client.generate(MODEL, "never done")
    assert "timed out" in (failed.value.generation.failure_reason or "")


@run
async def test_nsfw_is_refused(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    with pytest.raises(asyncsdk.ContentPolicyError):
        await babysea_client.generate(MODEL, NSFW_PROMPT)
    assert created(babysea_emulator) == 0


@run
async def test_webhooks_are_delivered(
    babysea_client: asyncsdk.AsyncClient, babysea_webhooks: WebhookReceiver
) -> None:
    generation = await babysea_client.generate(MODEL, "a delivered one")
    [event] = await babysea_webhooks.wait(1)
    assert event.type == "generation.completed"
    assert event.generation.generation_id == generation.generation_id
    assert babysea_webhooks.rejected == []


@run
@pytest.mark.babysea_emulator(accounts=2, concurrent=2)
async def test_the_marker_configures_emulator_and_client(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    assert len(babysea_emulator.tokens) == 2
    assert babysea_client.limits.concurrent == 2
    assert (await babysea_client.status()).account_id


def test_a_sync_test_can_use_the_emulator(babysea_emulator: Emulator) -> None:
    request = urllib.request.Request(
        babysea_emulator.base_url + "/status",
        headers={"Authorization": f"Bearer {babysea_emulator.tokens[0]}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as reply:
        body = json.load(reply)
    assert body["success"] is True
    assert body["data"]["accountId"]
