"""The plugin's fixtures and helpers, in the project's own suite (anyio's plugin runs it)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

import asyncsdk
import asyncsdk.testing
from asyncsdk import webhooks
from asyncsdk.emulator import Emulator, Faults
from asyncsdk.testing import (
    COMPRESSED,
    NSFW_PROMPT,
    SUPPORTED_FAULTS,
    EmulatorThread,
    WebhookReceiver,
    client_for,
    fill_window,
    limits_for,
    occupy_slot,
)

pytestmark = pytest.mark.anyio
MODEL = "google/nano-banana"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def submit(
    session: aiohttp.ClientSession, emulator: Emulator, prompt: str = "a kite"
) -> tuple[int, Any]:
    """A plain submission, as another process sharing the account would send it."""
    async with session.post(
        f"{emulator.base_url}/image-generation/{MODEL}",
        json={"prompt": prompt},
        headers={"Authorization": f"Bearer {emulator.tokens[0]}"},
    ) as reply:
        return reply.status, await reply.json()


class TestOptions:
    @pytest.fixture
    def babysea_emulator_options(self) -> dict[str, Any]:
        return {"window": 2.0, "accounts": 2}

    def test_the_options_fixture_overrides_the_compressed_defaults(
        self, babysea_emulator: Emulator
    ) -> None:
        settings = babysea_emulator.settings
        assert (settings.window, len(babysea_emulator.tokens)) == (2.0, 2)
        assert settings.starting_time == COMPRESSED["starting_time"]

    @pytest.mark.babysea_emulator(accounts=3)
    def test_the_marker_wins(self, babysea_emulator: Emulator) -> None:
        assert (babysea_emulator.settings.window, len(babysea_emulator.tokens)) == (2.0, 3)


@pytest.mark.babysea_emulator(time_scale=0.5, submissions=4)
async def test_the_client_has_the_emulators_limits(
    babysea_client: asyncsdk.AsyncClient, babysea_emulator: Emulator
) -> None:
    assert babysea_client.limits == limits_for(babysea_emulator)
    assert babysea_client.limits.window == COMPRESSED["window"] * 0.5
    assert babysea_client.limits.submissions == 4
    assert babysea_client.base_url == babysea_emulator.base_url
    await babysea_client.status()  # opened in this test's loop


def test_client_for_compresses_poll_and_retry_timings(babysea_emulator: Emulator) -> None:
    client = client_for(babysea_emulator, babysea_emulator.tokens[0], max_retries=1)
    assert client.poll_interval < asyncsdk.AsyncClient("bye_00").poll_interval / 10
    assert client.max_retries == 1


async def test_fill_window_makes_the_next_submission_a_rate_limit_429(
    babysea_emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    assert fill_window(babysea_emulator) == babysea_emulator.settings.submissions
    assert fill_window(babysea_emulator) == 0
    status, body = await submit(session, babysea_emulator)
    assert (status, body["error"]) == (429, "RATE_LIMIT_ERROR")
    assert babysea_emulator.stats.created[babysea_emulator.tokens[0]] == 0


async def test_occupy_slot_makes_the_next_submission_a_concurrency_429(
    babysea_emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    generation_id = occupy_slot(babysea_emulator)
    [record] = babysea_emulator.generations(babysea_emulator.tokens[0])
    assert record["generationId"] == generation_id
    status, body = await submit(session, babysea_emulator)
    assert (status, body["error"]) == (429, "CONCURRENT_GENERATION_ERROR")


async def test_a_stuck_slot_is_held_until_the_auto_cancel(babysea_emulator: Emulator) -> None:
    occupy_slot(babysea_emulator, stuck=True)
    token = babysea_emulator.tokens[0]
    natural = COMPRESSED["starting_time"] + COMPRESSED["processing_time"]
    await anyio.sleep(natural + 0.1)
    assert babysea_emulator.generations(token)[0]["status"] == "processing"
    await anyio.sleep(COMPRESSED["generation_timeout"] - natural)
    assert "timed out" in babysea_emulator.generations(token)[0]["failureReason"]


async def test_the_nsfw_prompt_is_refused_and_nothing_is_charged(
    babysea_emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await submit(session, babysea_emulator, NSFW_PROMPT)
    assert (status, body["error"]) == (400, "NSFW_CONTENT_DETECTED")
    assert babysea_emulator.credits(babysea_emulator.tokens[0])["total"] == 1000


async def test_the_receiver_keeps_verified_deliveries_and_refuses_forged_ones(
    babysea_client: asyncsdk.AsyncClient,
    babysea_webhooks: WebhookReceiver,
    session: aiohttp.ClientSession,
) -> None:
    body = b'{"type": "generation.completed", "data": {"generationId": "g1", "status": "failed"}}'
    forged = webhooks.sign(body, "whsec_not_the_secret")
    headers = {webhooks.SIGNATURE_HEADER: forged}
    async with session.post(babysea_webhooks.url, data=body, headers=headers) as reply:
        assert reply.status == 400
    [refused] = babysea_webhooks.rejected
    assert isinstance(refused, webhooks.InvalidSignatureError)

    submission = await babysea_client.submit(MODEL, "a kite")
    [event] = await babysea_webhooks.wait(1)
    assert event.generation.generation_id == submission.generation_id
    assert babysea_webhooks.for_generation(submission.generation_id) == [event]
    assert babysea_webhooks.for_generation("g1") == []


async def test_waiting_for_deliveries_that_never_come_times_out(
    babysea_webhooks: WebhookReceiver,
) -> None:
    with pytest.raises(TimeoutError, match=r"0 of 1 webhook deliveries arrived within 0\.05 s"):
        await babysea_webhooks.wait(1, timeout=0.05)


def test_babysea_webhooks_must_be_a_test_argument(
    request: pytest.FixtureRequest, babysea_emulator: Emulator
) -> None:
    with pytest.raises(RuntimeError, match="must be a test argument"):
        request.getfixturevalue("babysea_webhooks")


def test_babysea_client_needs_an_async_test(request: pytest.FixtureRequest) -> None:
    with pytest.raises(RuntimeError, match="make the test async"):
        request.getfixturevalue("babysea_client")


def test_a_failed_start_is_raised_in_the_caller_and_leaves_no_thread() -> None:
    served = EmulatorThread(window=-1.0)
    with pytest.raises(ValueError, match="window"):
        served.start()
    assert served._thread is not None and not served._thread.is_alive()
    with pytest.raises(RuntimeError, match="not running"):
        served.call(lambda: None)


def test_the_thread_stops_with_the_emulator() -> None:
    with EmulatorThread(**COMPRESSED) as served:
        thread = served._thread
        assert thread is not None and thread.is_alive()
        assert served.call(lambda: len(served.emulator.tokens)) == 1
    assert not thread.is_alive()
    served.close()  # twice is fine


async def test_helpers_refuse_an_emulator_in_the_tests_own_loop() -> None:
    async with Emulator(**COMPRESSED) as emulator:
        with pytest.raises(RuntimeError, match="not served by an EmulatorThread"):
            fill_window(emulator)
        with pytest.raises(RuntimeError, match="not served by an EmulatorThread"):
            occupy_slot(emulator)


def test_the_supported_faults_exist_and_are_documented() -> None:
    doc = asyncsdk.testing.__doc__ or ""
    for name in SUPPORTED_FAULTS:
        method = getattr(Faults, name)
        assert inspect.isfunction(method), name
        assert f"faults.{name}(" in doc, f"{name} is not in the plugin's table"
