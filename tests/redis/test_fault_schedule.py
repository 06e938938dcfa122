"""The submission protocol's invariants over randomized fault schedules, through RedisGate.

Three "processes" (a RedisGate each, with its own Redis connections) share two accounts on
one real redis-server; see :mod:`tests.fault_schedule` for the schedule and the invariants,
checked from the emulator's own records (generations per call, 429s served) and from Redis
(no holder, no waiter left).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import asyncsdk
from asyncsdk import RedisGate
from asyncsdk.emulator import Emulator

from ..fault_schedule import limits_for, run_schedule
from ..integration.conftest import FAST

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("seed", range(4))
async def test_every_call_pays_once_and_ends_in_time_across_processes(
    seed: int, gates: Callable[..., RedisGate]
) -> None:
    async with Emulator(accounts=2, **FAST) as emu:
        processes = [gates(probe_interval=0.05) for _ in range(3)]

        def make_client(token: str, process: int) -> asyncsdk.AsyncClient:
            return asyncsdk.AsyncClient(
                token,
                base_url=emu.base_url,
                limits=limits_for(emu),
                gate=processes[process],
                poll_interval=0.02,
                backoff_base=0.01,
                backoff_max=0.1,
                timeout=0.5,
            )

        calls = await run_schedule(emu, seed, make_client, processes=3, calls_per_account=3)
    assert len(calls) == 2 * 3 * 3
