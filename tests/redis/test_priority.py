"""Priority lanes across processes: a BatchRunner (with more batch work queued behind it) in
one process saturates an account; interactive calls from another process wait about one
generation at most, and the batch finishes every job. Both processes share the account
through RedisGate on a real redis-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from asyncsdk import RedisGate
from asyncsdk.emulator import Emulator

from ..integration.conftest import FAST
from ..integration.test_priority import GENERATION, client_for, interactive_waits

pytestmark = pytest.mark.anyio


async def test_interactive_calls_from_another_process_overtake_a_batch(
    gates: Callable[..., RedisGate],
) -> None:
    async with Emulator(**{**FAST, "window": 5.0, "submissions": 40}) as emu:
        batch_process, web_process = gates(probe_interval=0.05), gates(probe_interval=0.05)
        async with (
            client_for(emu, gate=batch_process) as batch_client,
            client_for(emu, gate=web_process) as web_client,
        ):
            waits, results = await interactive_waits(batch_client, web_client, jobs=16)
        created = len(emu.generations(emu.tokens[0]))
        throttled = sum(emu.stats.throttled[emu.tokens[0]].values())
    assert len(waits) == 4
    assert max(waits) <= GENERATION + 0.35, waits  # about one generation at most
    assert len(results) == 16 and all(r.ok for r in results)
    assert created == 16 + 12 + 4 and throttled == 0
