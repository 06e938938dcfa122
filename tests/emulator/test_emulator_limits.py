"""Sliding window, concurrency slot, credits, refunds and the auto-cancel, over real sockets."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest

if TYPE_CHECKING:
    from .conftest import Serve

pytestmark = pytest.mark.anyio


async def test_eleventh_submission_in_the_window_is_refused_then_allowed(serve: Serve) -> None:
    emulator, api = await serve(window=0.6, concurrent=20, processing_time=0.01)
    first = time.time()
    for n in range(10):
        reply = await api.submit()
        assert reply.status == 200
        assert reply.headers["X-RateLimit-Remaining"] == str(9 - n)
    refused = await api.submit()
    assert (refused.status, refused.error) == (429, "RATE_LIMIT_ERROR")
    assert refused.body["message"] == (
        "You can create up to 10 generations per 0.6 seconds. Please wait and try again."
    )
    assert refused.headers["X-RateLimit-Limit"] == "10"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["Retry-After"] == "1"  # 0.6 s or less, rounded up
    reset = int(refused.headers["X-RateLimit-Reset"])
    assert first + 0.6 <= reset <= first + 0.6 + 1
    assert emulator.stats.throttled[api.token]["RATE_LIMIT_ERROR"] == 1
    # A refused attempt takes no place: once the first place frees, one more is allowed.
    await anyio.sleep(first + 0.6 - time.time() + 0.02)
    assert (await api.submit()).status == 200
    assert emulator.stats.created[api.token] == 11
    assert len(emulator.stats.arrivals[api.token]) == 12


async def test_the_window_slides(serve: Serve) -> None:
    _, api = await serve(submissions=2, window=0.5, concurrent=5, processing_time=0.01)
    start = time.monotonic()
    assert (await api.submit()).status == 200  # t = 0
    await anyio.sleep(0.25)
    assert (await api.submit()).status == 200  # t = 0.25
    assert (await api.submit()).error == "RATE_LIMIT_ERROR"
    await anyio.sleep(start + 0.5 + 0.03 - time.monotonic())
    # The first place is free again; the second is still taken until t = 0.75.
    allowed = await api.submit()
    assert allowed.status == 200
    assert allowed.headers["X-RateLimit-Remaining"] == "0"
    assert (await api.submit()).error == "RATE_LIMIT_ERROR"


async def test_rate_limit_window_is_per_account(serve: Serve) -> None:
    emulator, api = await serve(accounts=2, submissions=1, concurrent=5)
    assert (await api.submit()).status == 200
    assert (await api.submit()).error == "RATE_LIMIT_ERROR"
    assert (await api.submit(token=emulator.tokens[1])).status == 200


async def test_one_generation_in_progress(serve: Serve) -> None:
    emulator, api = await serve(starting_time=0.05, processing_time=0.2)
    first = (await api.submit()).data["generationId"]
    busy = await api.submit()
    assert (busy.status, busy.error) == (429, "CONCURRENT_GENERATION_ERROR")
    assert busy.body["message"] == (
        "You already have a generation in progress. Please wait for it to complete."
    )
    assert busy.headers["Retry-After"] == "1"
    assert busy.headers["X-RateLimit-Remaining"] == "9"  # the 429 took no place
    await api.wait_for(first, "succeeded")
    assert (await api.submit()).status == 200
    assert emulator.stats.throttled[api.token] == {"CONCURRENT_GENERATION_ERROR": 1}
    assert emulator.stats.max_in_progress[api.token] == 1


async def test_concurrency_limit_is_a_constructor_argument(serve: Serve) -> None:
    emulator, api = await serve(concurrent=2, processing_time=0.3)
    assert (await api.submit()).status == 200
    assert (await api.submit()).status == 200
    assert (await api.submit()).error == "CONCURRENT_GENERATION_ERROR"
    assert emulator.stats.max_in_progress[api.token] == 2


async def test_insufficient_credits_reserves_nothing(serve: Serve) -> None:
    emulator, api = await serve(credits=5)
    reply = await api.submit(json={"prompt": "three kites", "output_number": 3})
    assert (reply.status, reply.error) == (402, "INSUFFICIENT_CREDITS")
    assert reply.body["message"] == (
        "Not enough credits to complete this request. Required: 6 credits. "
        "Please add more credits to your account."
    )
    assert emulator.credits(api.token)["total"] == 5
    assert emulator.generations(api.token) == []
    assert reply.headers["X-RateLimit-Remaining"] == "10"
    emulator.set_credits(api.token, 6)
    ok = await api.submit(json={"prompt": "three kites", "output_number": 3})
    assert ok.status == 200
    account = (await api.get("/data/account")).data["credits"]
    assert account["total"] == 0 and account["purchased"] == 6


async def test_credits_are_reserved_then_kept_on_success(serve: Serve) -> None:
    _, api = await serve(credits=100)
    generation_id = (await api.submit(json={"prompt": "kite", "output_number": 2})).data[
        "generationId"
    ]
    assert (await api.get("/data/account")).data["credits"]["total"] == 96
    await api.wait_for(generation_id, "succeeded")
    credits = (await api.get("/data/account")).data["credits"]
    assert (credits["total"], credits["refunded"]) == (96, 0)


async def test_a_failed_generation_is_refunded(serve: Serve) -> None:
    emulator, api = await serve(credits=100)
    emulator.faults.fail_generations(1, reason="The model refused.")
    generation_id = (await api.submit(json={"prompt": "kite", "output_number": 2})).data[
        "generationId"
    ]
    assert emulator.credits(api.token)["total"] == 96
    record = await api.wait_for(generation_id, "failed")
    assert record["failureReason"] == "The model refused."
    assert (record["outputSuccess"], record["outputFailed"], record["outputImages"]) == (0, 2, [])
    assert record["creditCost"] == 4
    assert record["predictTime"] is not None and record["totalTime"] is not None
    credits = (await api.get("/data/account")).data["credits"]
    assert credits == {
        "total": 100, "free": 0, "purchased": 100, "refunded": 4, "redeemed": 0, "bonus": 0,
        "affiliate": 0,
    }  # fmt: skip
    # The next generation is not scripted to fail.
    second = (await api.submit()).data["generationId"]
    await api.wait_for(second, "succeeded")


async def test_a_stuck_generation_is_cancelled_at_the_deadline_and_refunded(
    serve: Serve,
) -> None:
    emulator, api = await serve(generation_timeout=0.4, credits=10)
    emulator.faults.stick(1)
    created = time.monotonic()
    generation_id = (await api.submit()).data["generationId"]
    assert (await api.submit()).error == "CONCURRENT_GENERATION_ERROR"
    await anyio.sleep(0.2)
    assert (await api.generation(generation_id))["status"] == "processing"
    record = await api.wait_for(generation_id, "failed")
    assert time.monotonic() - created >= 0.4
    assert record["failureReason"] == "Generation timed out after 0.4 seconds and was cancelled"
    assert record["totalTime"] == pytest.approx(0.4, abs=1e-6)
    assert record["predictTime"] == pytest.approx(0.35, abs=1e-6)
    assert emulator.credits(api.token)["refunded"] == 2
    assert emulator.credits(api.token)["total"] == 10
    # The slot is free the moment the deadline passes.
    assert (await api.submit()).status == 200


async def test_slow_processing_also_hits_the_deadline(serve: Serve) -> None:
    _, api = await serve(generation_timeout=0.3, processing_time=5.0)
    generation_id = (await api.submit()).data["generationId"]
    record = await api.wait_for(generation_id, "failed")
    assert "timed out after 0.3 seconds" in record["failureReason"]


async def test_processing_time_may_be_a_callable(serve: Serve) -> None:
    calls: list[tuple[str, str]] = []

    def processing(model: str, prompt: str) -> float:
        calls.append((model, prompt))
        return 0.3 if "slow" in prompt else 0.01

    _, api = await serve(processing_time=processing, starting_time=0.0, concurrent=2)
    slow = (await api.submit(json={"prompt": "slow one"})).data["generationId"]
    fast = (await api.submit("bfl/flux-schnell", json={"prompt": "fast one"})).data["generationId"]
    await api.wait_for(fast, "succeeded")
    assert (await api.generation(slow))["status"] == "processing"
    assert calls == [("google/nano-banana", "slow one"), ("bfl/flux-schnell", "fast one")]


async def test_time_scale_compresses_every_duration(serve: Serve) -> None:
    emulator, api = await serve(
        time_scale=0.01,
        window=60.0,
        submissions=1,
        generation_timeout=50.0,
        starting_time=0.5,
        processing_time=3.0,
    )
    emulator.faults.stick(1)
    generation_id = (await api.submit()).data["generationId"]
    refused = await api.submit()
    assert refused.error == "RATE_LIMIT_ERROR"
    assert "per 0.6 seconds" in refused.body["message"]
    record = await api.wait_for(generation_id, "failed")
    assert record["failureReason"] == "Generation timed out after 0.5 seconds and was cancelled"
    await anyio.sleep(0.15)  # the 0.6 s window has passed by now
    second = (await api.submit()).data["generationId"]
    record = await api.wait_for(second, "succeeded")
    assert record["totalTime"] == pytest.approx(0.035, abs=1e-6)


async def test_default_limits_match_the_contract(serve: Serve) -> None:
    emulator, api = await serve(window=60.0, generation_timeout=50.0)
    assert emulator.settings.submissions == 10 and emulator.settings.concurrent == 1
    emulator.set_credits(api.token, 1)
    reply = await api.submit()
    assert "Required: 2 credits" in reply.body["message"]
    emulator.set_credits(api.token, 100)
    assert (await api.submit()).status == 200
    refused = await api.submit()
    assert refused.error == "CONCURRENT_GENERATION_ERROR"
    assert 58 <= int(refused.headers["X-RateLimit-Reset"]) - time.time() <= 61


def test_invalid_settings_are_refused() -> None:
    from asyncsdk.emulator import Emulator

    for bad in (
        {"submissions": 0},
        {"window": 0},
        {"concurrent": -1},
        {"time_scale": 0},
        {"starting_time": -1},
        {"processing_time": -0.5},
        {"tokens": ["not-a-token"]},
        {"credits": -1},
    ):
        with pytest.raises(ValueError):
            Emulator(**bad)  # type: ignore[arg-type]
