"""The gate and the retries against the emulator: no avoidable 429, no double charge."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncsdk
from asyncsdk import AsyncClient, GenerationStatus, LocalGate
from asyncsdk.emulator import Emulator

from .test_client import MODEL, client_for

pytestmark = pytest.mark.anyio


def served_429s(emu: Emulator, token: str) -> int:
    return sum(emu.stats.throttled[token].values())


async def test_25_concurrent_generates_on_one_account_finish_without_a_429() -> None:
    async with Emulator(
        window=1.0, starting_time=0.01, processing_time=0.02, generation_timeout=3.0
    ) as emu:
        token = emu.tokens[0]
        results: list[asyncsdk.Generation] = []
        async with client_for(emu) as client:

            async def one(i: int) -> None:
                results.append(await client.generate(MODEL, f"picture {i}"))

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(25):
                    tg.start_soon(one, i)
            elapsed = time.monotonic() - started
        assert len(results) == 25
        assert all(g.status is GenerationStatus.SUCCEEDED for g in results)
        assert served_429s(emu, token) == 0
        assert emu.stats.created[token] == 25
        assert emu.stats.max_in_progress[token] == 1
        # 25 submissions at 10 per 1 s window need at least two full windows.
        assert elapsed >= 2.0


async def test_two_clients_on_one_key_queue_behind_one_gate() -> None:
    async with Emulator(
        window=0.5, starting_time=0.01, processing_time=0.01, generation_timeout=3.0
    ) as emu:
        async with client_for(emu) as a, client_for(emu) as b, anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(a.generate if i % 2 else b.generate, MODEL, f"p{i}")
        assert served_429s(emu, emu.tokens[0]) == 0
        assert emu.stats.created[emu.tokens[0]] == 12


async def test_transient_server_errors_are_absorbed() -> None:
    async with Emulator(starting_time=0.01, processing_time=0.05, window=2.0) as emu:
        emu.faults.fail_reads(3)
        emu.faults.fail_submissions(2, code="GENERATION_START_FAILED")
        async with client_for(emu) as client:
            generation = await client.generate(MODEL, "through the storm")
        assert generation.status is GenerationStatus.SUCCEEDED
        assert emu.stats.created[emu.tokens[0]] == 1
        assert emu.stats.errors["GENERATION_START_FAILED"] == 2
        assert emu.stats.errors["INTERNAL_SERVER_ERROR"] == 3


async def test_retries_are_bounded() -> None:
    async with Emulator(starting_time=0.01, processing_time=0.05, window=2.0) as emu:
        emu.faults.fail_reads(10)
        async with client_for(emu, max_retries=2) as client:
            with pytest.raises(asyncsdk.ServerError):
                await client.status()
        assert emu.stats.errors["INTERNAL_SERVER_ERROR"] == 3  # one try and two retries


async def test_dropped_answers_never_pay_twice() -> None:
    async with Emulator(starting_time=0.01, processing_time=0.05, window=2.0) as emu:
        token = emu.tokens[0]
        emu.faults.drop_after_create(4)
        async with client_for(emu) as client:
            results = []
            for i in range(3):
                results.append(await client.generate(MODEL, f"lossy {i}"))
            named = await client.generate(MODEL, "user named", name="my own name")
        ids = {g.generation_id for g in [*results, named]}
        assert len(ids) == 4
        assert emu.stats.created[token] == 4  # exactly one generation per call
        charged = sum(g["creditCost"] for g in emu.generations(token))
        assert (await _credits(emu, token)) == 1000 - charged


async def _credits(emu: Emulator, token: str) -> int:
    async with client_for(emu, token) as c:
        return (await c.account()).credits.total


async def test_a_submission_that_times_out_is_adopted_not_resent() -> None:
    async with Emulator(starting_time=0.01, processing_time=0.05, window=2.0) as emu:
        emu.faults.delay(0.4, count=1, method="POST")
        async with client_for(emu, timeout=0.2) as client:
            generation = await client.generate(MODEL, "slow answer")
        assert generation.status is GenerationStatus.SUCCEEDED
        assert emu.stats.created[emu.tokens[0]] == 1


async def test_a_connection_that_never_opened_is_retried() -> None:
    # Nothing listens: the request was never sent, so retrying it cannot double-charge.
    async with AsyncClient(
        "bye_" + "1" * 32, base_url="http://127.0.0.1:9/api/v1", max_retries=1, backoff_base=0.01
    ) as client:
        with pytest.raises(asyncsdk.APIConnectionError) as caught:
            await client.submit(MODEL, "nobody home")
    assert caught.value.request_sent is False


async def test_a_stuck_generation_ends_at_the_deadline_and_the_next_proceeds() -> None:
    async with Emulator(
        starting_time=0.01, processing_time=0.05, window=2.0, generation_timeout=0.6
    ) as emu:
        emu.faults.stick(1)
        async with client_for(emu) as client:
            with pytest.raises(asyncsdk.GenerationFailedError) as caught:
                await client.generate(MODEL, "stuck forever")
            assert caught.value.generation.failure_reason
            after = await client.generate(MODEL, "next one")
        assert after.status is GenerationStatus.SUCCEEDED
        assert served_429s(emu, emu.tokens[0]) == 0


async def test_a_generation_started_elsewhere_is_waited_for() -> None:
    # Another process (here: a client with its own gate) holds the account's slot.
    async with Emulator(starting_time=0.05, processing_time=0.4, window=2.0) as emu:
        async with client_for(emu, gate=LocalGate()) as other, client_for(emu) as client:
            foreign = await other.submit(MODEL, "someone else's")
            generation = await client.generate(MODEL, "mine")
            before = await other.get_generation(foreign.generation_id)
        assert before.status is GenerationStatus.SUCCEEDED
        assert generation.status is GenerationStatus.SUCCEEDED
        assert emu.stats.throttled[emu.tokens[0]]["CONCURRENT_GENERATION_ERROR"] == 1
        assert emu.stats.max_in_progress[emu.tokens[0]] == 1


async def test_a_window_used_elsewhere_is_waited_out_or_fails_fast() -> None:
    async with Emulator(submissions=2, window=1.0, starting_time=0.0, processing_time=0.0) as emu:
        async with client_for(emu, gate=LocalGate()) as other:
            for i in range(2):
                await other.generate(MODEL, f"elsewhere {i}")
        async with client_for(emu) as client:
            # The caller's deadline ends before the window frees: RateLimitError at once.
            with anyio.fail_after(0.5):
                with pytest.raises(asyncsdk.RateLimitError) as caught:
                    await client.submit(MODEL, "in a hurry")
            assert caught.value.reset_at is not None and caught.value.reset_at > time.time()
            # Without a deadline it waits for the reset and goes through.
            generation = await client.generate(MODEL, "patient")
        assert generation.status is GenerationStatus.SUCCEEDED
        assert emu.stats.created[emu.tokens[0]] == 3


async def test_gate_statistics_while_queued() -> None:
    async with Emulator(submissions=2, window=1.0, starting_time=0.01, processing_time=0.01) as emu:
        async with client_for(emu) as client, anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(client.generate, MODEL, f"queued {i}")
            await anyio.sleep(0.1)
            stats = client.gate.statistics()
            assert stats.submission_limit == 2
            assert stats.submissions_in_window == 2
            assert stats.waiting == 3
        assert client.gate.statistics().in_progress == 0
