"""Pay once, never hang: each hostile path of the submission protocol, against the emulator.

Every test scripts the fault on a real emulator and checks the emulator's own records (what
it created, the 429s it served), not what the client believes. Numbers refer to the cases of
the issue "Pay once, never hang".
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import asyncsdk
from asyncsdk import AsyncClient, Limits
from asyncsdk.emulator import Emulator

from .conftest import FAST

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"
#: Client-side settle time: longer than any list lag these tests script.
SETTLE = 0.6


def limits(emu: Emulator, **overrides: Any) -> Limits:
    s = emu.settings
    values: dict[str, Any] = {
        "submissions": s.submissions,
        "window": s.scaled(s.window),
        "concurrent": s.concurrent,
        "generation_timeout": s.scaled(s.generation_timeout),
        "settle_time": SETTLE,
    }
    values.update(overrides)
    return Limits(**values)


def client_for(emu: Emulator, token: str | None = None, **kwargs: Any) -> AsyncClient:
    kwargs.setdefault("limits", limits(emu))
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    kwargs.setdefault("timeout", 2.0)
    return AsyncClient(token or emu.tokens[0], base_url=emu.base_url, **kwargs)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(accounts=2, **FAST) as emulator:
        yield emulator


def created(emu: Emulator, token: str | None = None) -> list[dict[str, Any]]:
    return emu.generations(token or emu.tokens[0])


def throttled(emu: Emulator, code: str, token: str | None = None) -> int:
    return emu.stats.throttled[token or emu.tokens[0]][code]


# -- 1. lost answer, then the list can't be read -----------------------------------------------
@pytest.mark.parametrize("kind", ["500", "html503", "timeout"])
async def test_lost_answer_while_the_list_is_down_is_adopted(emu: Emulator, kind: str) -> None:
    emu.faults.drop_after_create(1)
    emu.faults.outage(0.8, route="list", kind=kind)  # type: ignore[arg-type]
    async with client_for(emu, timeout=0.3) as client:
        with anyio.fail_after(10):
            generation = await client.generate(MODEL, "a kite over a dark list")
    assert [g["generationId"] for g in created(emu)] == [generation.generation_id]
    assert generation.status is asyncsdk.GenerationStatus.SUCCEEDED


# -- 2. lost answer, the list lags -----------------------------------------------------------
async def test_lost_answer_behind_a_lagging_list_is_adopted(emu: Emulator) -> None:
    emu.faults.drop_after_create(1)
    emu.faults.list_lag(0.4)  # listed only 0.4 s after creation; settle time is 0.6 s
    async with client_for(emu) as client:
        with anyio.fail_after(10):
            generation = await client.generate(MODEL, "a kite behind a slow list")
            again = await client.generate(MODEL, "the next one")
    assert [g["generationId"] for g in created(emu)] == [
        generation.generation_id,
        again.generation_id,
    ]
    assert throttled(emu, "CONCURRENT_GENERATION_ERROR") == 0
    assert throttled(emu, "RATE_LIMIT_ERROR") == 0


async def test_a_lost_answer_that_created_nothing_is_sent_again_once_settled(
    emu: Emulator,
) -> None:
    emu.faults.drop_before_create(1)  # the connection breaks before the service acts
    async with client_for(emu) as client:
        started = time.monotonic()
        with anyio.fail_after(10):
            generation = await client.generate(MODEL, "a kite that was never made")
        elapsed = time.monotonic() - started
    assert [g["generationId"] for g in created(emu)] == [generation.generation_id]
    assert elapsed >= SETTLE  # resent only once the list had settled without it


# -- 3. a 2xx answer that can't be read ------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncated", "html", "no_id", "empty"])
async def test_an_unreadable_2xx_answer_is_adopted_and_frees_the_slot(
    emu: Emulator, kind: str
) -> None:
    emu.faults.garble_submissions(1, kind)  # type: ignore[arg-type]
    async with client_for(emu) as client:
        with anyio.fail_after(10):
            first = await client.generate(MODEL, "a kite with a garbled receipt")
            second = await client.generate(MODEL, "and one more")
        assert client.gate.statistics().in_progress == 0
    assert [g["generationId"] for g in created(emu)] == [
        first.generation_id,
        second.generation_id,
    ]
    assert throttled(emu, "CONCURRENT_GENERATION_ERROR") == 0


# -- 4. cancelled while reconciling; cancelled between acquire and send ----------------------
@pytest.mark.parametrize("how", ["cancelled", "deadline"])
async def test_a_submitter_gone_while_looking_leaves_an_orphan_the_probe_resolves(
    emu: Emulator, how: str
) -> None:
    # The client believes generations may run 20 s: only the probe can free the slot early.
    slow_limits = limits(emu, generation_timeout=20.0)
    emu.faults.drop_after_create(1)
    emu.faults.outage(1.0, route="list")
    async with client_for(emu, limits=slow_limits) as client:
        if how == "cancelled":  # cancelled from outside: no deadline it could know of
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.submit, MODEL, "cancelled while looking")
                await anyio.sleep(0.3)
                tg.cancel_scope.cancel()
        else:  # its own deadline: it says what it knows
            with pytest.raises(asyncsdk.SubmissionUnknownError) as caught, anyio.fail_after(0.3):
                await client.submit(MODEL, "out of time while looking")
            assert caught.value.tag == created(emu)[0]["name"]
        stats = client.gate.statistics()
        assert (stats.in_progress, stats.orphans) == (1, 1)
        with anyio.fail_after(6):  # far less than the 20 s backstop
            generation = await client.generate(MODEL, "the next caller")
        assert client.gate.statistics().in_progress == 0
    names = [g["name"] for g in created(emu)]
    assert len(names) == 2 and len(set(names)) == 2  # the first was never resent
    assert created(emu)[1]["generationId"] == generation.generation_id
    assert throttled(emu, "CONCURRENT_GENERATION_ERROR") == 0


async def test_a_reservation_left_unused_or_by_an_exception_is_given_back(
    emu: Emulator,
) -> None:
    async with client_for(emu) as client:
        with anyio.move_on_after(0.05):
            async with client.reserve():
                await anyio.sleep(1)  # cancelled between acquire and send
        with pytest.raises(RuntimeError):
            async with client.reserve():
                raise RuntimeError("the journal write failed")
        stats = client.gate.statistics()
        assert (stats.in_progress, stats.submissions_in_window) == (0, 0)
    assert created(emu) == []


# -- 5. CONCURRENT_GENERATION_ERROR ----------------------------------------------------------
async def test_a_foreign_generation_costs_one_429_not_one_per_queued_caller(
    emu: Emulator,
) -> None:
    other = client_for(emu, gate=asyncsdk.LocalGate())  # another process, same account
    async with other, client_for(emu) as client:
        await other.submit(MODEL, "started elsewhere")
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(client.generate, MODEL, f"queued caller {i}")
    assert len(created(emu)) == 4
    assert throttled(emu, "CONCURRENT_GENERATION_ERROR") <= 1


# -- 6. a 429 without any rate-limit header --------------------------------------------------
@pytest.fixture
async def roomy() -> AsyncIterator[Emulator]:
    """An emulator whose window another process can fill at once (10 slots, 1.5 s)."""
    async with Emulator(**{**FAST, "window": 1.5, "concurrent": 10}) as emulator:
        yield emulator


async def fill_the_window_elsewhere(emu: Emulator) -> None:
    async with client_for(emu, gate=asyncsdk.LocalGate()) as other:  # another process
        for i in range(emu.settings.submissions):
            await other.submit(MODEL, f"elsewhere {i}")


async def test_a_headerless_rate_429_waits_out_the_window_instead_of_retrying_in_it(
    roomy: Emulator,
) -> None:
    await fill_the_window_elsewhere(roomy)
    roomy.faults.strip_rate_limit_headers()
    async with client_for(roomy) as client:
        with anyio.fail_after(10):
            await client.generate(MODEL, "after the window")
    assert throttled(roomy, "RATE_LIMIT_ERROR") == 1  # one, then it waited the window out
    assert roomy.stats.faults["strip_rate_limit_headers"] >= 1


async def test_a_headerless_rate_429_past_the_deadline_raises_at_once(roomy: Emulator) -> None:
    await fill_the_window_elsewhere(roomy)
    roomy.faults.strip_rate_limit_headers()
    async with client_for(roomy) as client:
        started = time.monotonic()
        with pytest.raises(asyncsdk.RateLimitError) as caught, anyio.fail_after(0.5):
            await client.submit(MODEL, "no time to wait")
        assert time.monotonic() - started < 0.4
        assert caught.value.reset_at is not None
    assert throttled(roomy, "RATE_LIMIT_ERROR") == 1


# -- 7. the key in server text ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["html", "json"])
async def test_error_pages_echoing_the_key_never_leak_it(
    emu: Emulator, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = emu.tokens[0]
    caplog.set_level(logging.DEBUG, logger="asyncsdk")
    emu.faults.echo_headers(1, status=502, method="GET", kind=kind)  # type: ignore[arg-type]
    async with client_for(emu, max_retries=0) as client:
        with pytest.raises(asyncsdk.ServerError) as caught:
            await client.account()
    error = caught.value
    assert key not in str(error) and key not in repr(error) and key not in error.message
    if kind == "json":  # the echo is in the message: there, and redacted
        assert "Bearer ***" in error.message
    emu.faults.echo_headers(2, status=502, method="POST", kind=kind)  # type: ignore[arg-type]
    async with client_for(emu) as client:
        with anyio.fail_after(10):
            await client.generate(MODEL, "after two echoing proxies")
    assert key not in caplog.text
    assert "Request headers" in caplog.text  # the echoes were logged, without the key
    assert len(created(emu)) == 1


# -- 8. watch never abandons a paid generation for transient read failures -------------------
@pytest.mark.parametrize("fault", ["5xx", "garbled"])
async def test_wait_survives_a_streak_of_failed_reads(emu: Emulator, fault: str) -> None:
    async with client_for(emu, max_retries=1) as client:
        submission = await client.submit(MODEL, "a kite read through a storm")
        if fault == "5xx":
            emu.faults.fail_reads(8)  # far more than the read's own retries
        else:
            emu.faults.garble_reads(8, "truncated", route="status")
        with anyio.fail_after(10):
            generation = await client.wait(submission.generation_id)
    assert generation.status is asyncsdk.GenerationStatus.SUCCEEDED


# -- 9. a status that never ends -------------------------------------------------------------
async def test_a_status_outside_the_four_ends_the_wait_at_the_services_deadline(
    emu: Emulator,
) -> None:
    emu.faults.unknown_status(1, "canceled")
    async with client_for(emu) as client:
        started = time.monotonic()
        with pytest.raises(asyncsdk.GenerationTimeoutError) as caught, anyio.fail_after(10):
            await client.generate(MODEL, "a kite that is neither here nor there")
        assert time.monotonic() - started < client.limits.generation_timeout + 1.0
    assert caught.value.last_status == "canceled"


# -- 11. the journal after an unreadable answer ----------------------------------------------
async def test_an_unknown_outcome_stays_submitting_and_a_rerun_adopts_it(
    emu: Emulator, tmp_path: Any
) -> None:
    journal = tmp_path / "batch.sqlite"
    jobs = [asyncsdk.Job(MODEL, "a kite nobody heard about", id="kite-1")]
    emu.faults.garble_submissions(1, "html")
    outage_ends = time.monotonic() + 1.5
    emu.faults.outage(1.5, route="list")
    async with client_for(emu, limits=limits(emu, generation_timeout=0.3)) as client:
        with anyio.fail_after(10):
            first = [r async for r in asyncsdk.BatchRunner([client], journal=journal).run(jobs)]
    assert isinstance(first[0].error, asyncsdk.SubmissionUnknownError)
    entry = await asyncsdk.Journal(journal).get("kite-1")
    assert entry is not None and entry.state == "submitting"
    await anyio.sleep(max(outage_ends - time.monotonic(), 0.0))  # the list comes back
    async with client_for(emu, gate=asyncsdk.LocalGate()) as client:  # a rerun: a new process
        with anyio.fail_after(10):
            second = [r async for r in asyncsdk.BatchRunner([client], journal=journal).run(jobs)]
    assert second[0].ok
    assert [g["generationId"] for g in created(emu)] == [second[0].generation.generation_id]


# -- 12. a caller-supplied name is not the tag -----------------------------------------------
async def test_two_callers_with_the_same_name_and_prompt_never_adopt_each_other(
    emu: Emulator,
) -> None:
    emu.faults.drop_after_create(2)
    a = client_for(emu, gate=asyncsdk.LocalGate())
    b = client_for(emu, gate=asyncsdk.LocalGate())
    results: list[asyncsdk.Submission] = []

    async def submit(client: AsyncClient) -> None:
        results.append(await client.submit(MODEL, "the same kite", name="kite"))

    async with a, b:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(submit, a)
                tg.start_soon(submit, b)
    records = created(emu)
    assert sorted(g["generationId"] for g in records) == sorted(r.generation_id for r in results)
    assert len({r.tag for r in results}) == 2
