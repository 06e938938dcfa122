"""A randomized fault schedule and the invariants of the submission protocol.

:func:`run_schedule` drives many concurrent ``generate()`` calls on a few accounts against an
emulator whose faults are drawn from a seed (lost answers on both sides of the create,
unreadable 2xx answers, 5xx on submissions and reads, unreadable reads, unknown statuses, list
outages and list lag), with random deadlines and random cancellations; then it checks the
invariants from the emulator's own records:

- every generation the server created belongs to exactly one call (each call has its own
  prompt), and no call has more than one: never paid twice;
- a call that returned a generation owns exactly that one; a call that raised
  ``SubmissionUnknownError`` owns at most one, carrying the tag it named; a call whose
  generation failed or timed out owns exactly one;
- every call ended within its deadline (and every call ended: the whole run is bounded);
- no 429 was served (neither kind);
- afterwards each account's gate is idle: no holder, no waiter.

The gate backend is the caller's: ``make_client(token, process)`` builds a client of one of
several "processes" (separate gates on the same accounts).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import attrs

import asyncsdk
from asyncsdk import AsyncClient, Limits
from asyncsdk.emulator import Emulator

MODEL = "google/nano-banana"
#: Lateness allowed past a call's deadline (scheduling on a loaded machine).
SLACK = 0.3
#: List lag a schedule may script; the clients' settle time is above it.
MAX_LAG = 0.2


def limits_for(emu: Emulator) -> Limits:
    s = emu.settings
    return Limits(
        submissions=s.submissions,
        window=s.scaled(s.window),
        concurrent=s.concurrent,
        generation_timeout=s.scaled(s.generation_timeout),
        settle_time=MAX_LAG + 0.15,
    )


@attrs.define
class Call:
    prompt: str
    deadline: float | None
    cancel_after: float | None
    outcome: object = None
    elapsed: float = 0.0


async def run_schedule(
    emu: Emulator,
    seed: int,
    make_client: Callable[[str, int], AsyncClient],
    *,
    processes: int = 1,
    calls_per_account: int = 5,
) -> list[Call]:
    """One randomized run; raises AssertionError if an invariant breaks."""
    rng = random.Random(seed)
    emu.faults.chaos(
        seed,
        drop_before=0.07,
        drop_after=0.08,
        garble_submission=0.08,
        submit_5xx=0.07,
        read_5xx=0.12,
        garble_read=0.04,
        unknown_status=0.03,
    )
    if rng.random() < 0.6:
        emu.faults.list_lag(rng.uniform(0.05, MAX_LAG))
    clients = {(token, p): make_client(token, p) for token in emu.tokens for p in range(processes)}
    calls: list[tuple[AsyncClient, Call]] = []
    for (token, p), client in clients.items():
        for i in range(calls_per_account):
            deadline = None if rng.random() < 0.4 else rng.uniform(0.3, 4.0)
            cancel = rng.uniform(0.05, 1.5) if rng.random() < 0.15 else None
            calls.append((client, Call(f"kite {seed}-{token[-6:]}-{p}-{i}", deadline, cancel)))

    async def outages() -> None:
        for _ in range(rng.randint(0, 2)):
            await anyio.sleep(rng.uniform(0.0, 1.5))
            kind = rng.choice(["500", "html503", "timeout"])
            emu.faults.outage(rng.uniform(0.2, 0.8), route="list", kind=kind)  # type: ignore[arg-type]

    async def one(client: AsyncClient, call: Call) -> None:
        started = time.monotonic()
        try:
            with anyio.fail_after(call.deadline):
                call.outcome = await client.generate(MODEL, call.prompt)
        except Exception as exc:
            call.outcome = exc
        finally:
            call.elapsed = time.monotonic() - started

    async def cancellable(client: AsyncClient, call: Call) -> None:
        if call.cancel_after is None:
            await one(client, call)
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, client, call)
            await anyio.sleep(call.cancel_after)
            tg.cancel_scope.cancel()
        if call.outcome is None:
            call.outcome = "cancelled"

    for client in clients.values():
        await client.__aenter__()
    try:
        with anyio.fail_after(60):  # never hang: every call ends, with or without a deadline
            async with anyio.create_task_group() as tg:
                tg.start_soon(outages)
                for client, call in calls:
                    tg.start_soon(cancellable, client, call)
        faults = dict(emu.stats.faults)
        emu.faults.clear()
        assert sum(faults.values()) > 0, "the schedule struck nothing"
        check_invariants(emu, [call for _, call in calls])
        await wait_until_idle(emu, list(clients.values()))
    finally:
        for client in clients.values():
            await client.aclose()
    return [call for _, call in calls]


def check_invariants(emu: Emulator, calls: list[Call]) -> None:
    records = [g for token in emu.tokens for g in emu.generations(token)]
    per_prompt = Counter(g["prompt"] for g in records)
    prompts = {call.prompt for call in calls}
    assert set(per_prompt) <= prompts, "a generation nobody asked for"
    for call in calls:
        mine = [g for g in records if g["prompt"] == call.prompt]
        outcome = call.outcome
        assert len(mine) <= 1, f"paid twice for one call: {call} -> {mine}"
        if isinstance(outcome, asyncsdk.Generation):
            assert [g["generationId"] for g in mine] == [outcome.generation_id], call
        elif isinstance(outcome, asyncsdk.SubmissionUnknownError):
            assert all(g["name"] == outcome.tag for g in mine), (call, mine)
        elif isinstance(outcome, asyncsdk.GenerationFailedError):
            assert [g["generationId"] for g in mine] == [outcome.generation.generation_id]
        elif isinstance(outcome, asyncsdk.GenerationTimeoutError):
            assert [g["generationId"] for g in mine] == [outcome.generation_id], call
        if call.deadline is not None:
            assert call.elapsed <= call.deadline + SLACK, f"ended late: {call}"
        assert outcome is not None, f"never ended: {call}"
    for token in emu.tokens:
        assert emu.stats.throttled[token]["RATE_LIMIT_ERROR"] == 0, emu.stats.throttled
        assert emu.stats.throttled[token]["CONCURRENT_GENERATION_ERROR"] == 0, emu.stats.throttled


async def wait_until_idle(emu: Emulator, clients: list[AsyncClient]) -> None:
    """Each gate frees every hold by the service's deadline at the latest (no waiter left)."""
    limits = clients[0].limits
    bound = limits.generation_timeout + limits.margin + limits.settle_time + 2.0
    stats: list[Any] = []
    with anyio.move_on_after(bound):
        while True:
            stats = [await _stats(c) for c in clients]
            if all(s.in_progress == 0 and s.waiting == 0 for s in stats):
                return
            await anyio.sleep(0.05)
    raise AssertionError(f"gates not idle after {bound:.1f}s: {stats}")


async def _stats(client: AsyncClient) -> Any:
    fetch = getattr(client.gate, "fetch_statistics", None)
    return await fetch() if fetch is not None else client.gate.statistics()
