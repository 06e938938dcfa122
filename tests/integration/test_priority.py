"""Priority lanes: interactive calls overtake a saturating batch on one account.

A ``BatchRunner`` keeps one account busy (its workers wait in the batch lane); interactive
``generate()`` calls arriving meanwhile wait in the gate for about one generation at most,
and the batch still finishes every job. The Redis variant (two processes) is in tests/redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

import asyncsdk
from asyncsdk.emulator import Emulator

from .conftest import FAST

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"
#: Time one generation holds the slot here: starting + processing, plus a poll or two.
GENERATION = FAST["starting_time"] + FAST["processing_time"]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(**{**FAST, "window": 5.0, "submissions": 40}) as emulator:
        yield emulator


def client_for(emu: Emulator, gate: asyncsdk.Gate | None = None) -> asyncsdk.AsyncClient:
    s = emu.settings
    limits = asyncsdk.Limits(
        submissions=s.submissions,
        window=s.scaled(s.window),
        concurrent=s.concurrent,
        generation_timeout=s.scaled(s.generation_timeout),
        settle_time=0.3,
    )
    return asyncsdk.AsyncClient(
        emu.tokens[0], base_url=emu.base_url, limits=limits, poll_interval=0.02, gate=gate
    )


async def interactive_waits(
    batch_client: asyncsdk.AsyncClient, web_client: asyncsdk.AsyncClient, jobs: int
) -> tuple[list[float], list[asyncsdk.JobResult]]:
    waits: list[float] = []
    results: list[asyncsdk.JobResult] = []

    async def batch() -> None:
        runner = asyncsdk.BatchRunner([batch_client])
        work = [asyncsdk.Job(MODEL, f"batch kite {i}", id=f"b{i}") for i in range(jobs)]
        results.extend([r async for r in runner.run(work)])

    async def more_batch(i: int) -> None:  # other batch work queued on the same account
        for j in range(2):
            await batch_client.generate(MODEL, f"bulk kite {i}-{j}", priority="batch")

    async def interactive(i: int) -> None:
        started = time.monotonic()
        async with web_client.reserve() as reservation:
            waits.append(time.monotonic() - started)
            submission = await web_client.submit(
                MODEL, f"a visitor's kite {i}", reservation=reservation
            )
        await web_client.wait(submission.generation_id)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(batch)
            for i in range(6):
                tg.start_soon(more_batch, i)
            await anyio.sleep(3 * GENERATION)  # the batch has the account and a queue
            for i in range(4):
                tg.start_soon(interactive, i)
                await anyio.sleep(2 * GENERATION)
    return waits, results


async def test_interactive_calls_overtake_a_saturating_batch(emu: Emulator) -> None:
    async with client_for(emu) as batch_client, client_for(emu) as web_client:
        assert web_client.priority is asyncsdk.Priority.INTERACTIVE
        waits, results = await interactive_waits(batch_client, web_client, jobs=16)
    assert len(waits) == 4
    assert max(waits) <= GENERATION + 0.25, waits  # about one generation at most
    assert len(results) == 16 and all(r.ok for r in results)
    assert len(emu.generations(emu.tokens[0])) == 16 + 12 + 4
    assert sum(emu.stats.throttled[emu.tokens[0]].values()) == 0
