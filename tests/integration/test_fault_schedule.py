"""The submission protocol's invariants over randomized fault schedules, in-process gate.

See :mod:`tests.fault_schedule` for the schedule and the invariants (checked from the
emulator's own records). One process: every client of an account shares its gate (the
Redis variant in ``tests/redis`` runs several processes on the same accounts).
"""

from __future__ import annotations

import pytest

import asyncsdk
from asyncsdk.emulator import Emulator

from ..fault_schedule import limits_for, run_schedule
from .conftest import FAST

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("seed", range(6))
async def test_every_call_pays_once_and_ends_in_time(seed: int) -> None:
    async with Emulator(accounts=2, **FAST) as emu:
        gate = asyncsdk.LocalGate()

        def make_client(token: str, process: int) -> asyncsdk.AsyncClient:
            return asyncsdk.AsyncClient(
                token,
                base_url=emu.base_url,
                limits=limits_for(emu),
                gate=gate,
                poll_interval=0.02,
                backoff_base=0.01,
                backoff_max=0.1,
                timeout=0.5,
            )

        calls = await run_schedule(emu, seed, make_client, calls_per_account=8)
    assert len(calls) == 2 * 8
