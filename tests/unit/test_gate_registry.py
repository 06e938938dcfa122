"""The in-process gate registry (``LocalGate``): one live gate per account and loop, idle
ones forgotten, busy ones kept after their clients closed. Socket-free, on a fake clock."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from asyncsdk import AsyncClient, Limits, LocalGate

from .fakeclock import FakeClock

pytestmark = pytest.mark.anyio
LIMITS = Limits(submissions=2, window=10.0, generation_timeout=30.0)
URL = "http://127.0.0.1:9/api/v1"


def key(i: int) -> str:
    return f"bye_{i:032x}"


async def churn(registry: LocalGate, tenants: range) -> None:
    """A client per tenant, opened and closed (a multi-tenant app, one request each)."""
    for i in tenants:
        async with AsyncClient(key(i), base_url=URL, limits=LIMITS, gate=registry) as client:
            client.gate  # noqa: B018  (open: join the gate)


async def test_ten_thousand_tenants_one_client_each_stay_bounded(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    await churn(registry, range(200))  # warm up (imports, caches)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await churn(registry, range(200, 10_200))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(registry) == 0  # an idle gate nobody uses is forgotten at once
    assert grown < 256 * 1024, f"{grown} bytes kept after 10,000 tenants"


async def test_a_gate_in_use_is_never_replaced(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    first = registry.account("acct", LIMITS)
    await churn(registry, range(100))  # sweeps run on every call
    second = registry.account("acct", LIMITS)
    assert second is first
    registry.release_account("acct", first)
    await churn(registry, range(100, 200))
    assert registry.account("acct", LIMITS) is first  # one user is left
    registry.release_account("acct", first)
    registry.release_account("acct", first)
    assert registry.account("acct", LIMITS) is not first  # it was idle and unused: forgotten


async def test_a_busy_gate_outlives_its_clients_until_idle(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    gate = registry.account("acct", LIMITS)
    permit = await gate.acquire()
    await permit.answered("g1", None)  # the generation holds the slot; the window counts it
    registry.release_account("acct", gate)
    await churn(registry, range(50))
    again = registry.account("acct", LIMITS)
    assert again is gate and again.statistics().in_progress == 1
    registry.release_account("acct", again)

    await gate.release("g1")  # seen ending; the window entry still counts for a window
    await churn(registry, range(50, 100))
    assert registry.account("acct", LIMITS) is gate
    registry.release_account("acct", gate)

    await fake_clock.advance(LIMITS.window + LIMITS.margin + 0.1)
    await churn(registry, range(100, 150))  # the sweep comes round to it: idle now
    assert len(registry) == 0
    assert registry.account("acct", LIMITS) is not gate


async def test_an_orphaned_hold_keeps_its_gate_until_it_expires(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    gate = registry.account("acct", LIMITS)
    permit = await gate.acquire()
    await permit.orphan("sdk-0123456789ab", 0.0)  # nobody settles it any more
    registry.release_account("acct", gate)
    await fake_clock.advance(LIMITS.generation_timeout / 2)
    await churn(registry, range(20))
    assert registry.account("acct", LIMITS) is gate
    registry.release_account("acct", gate)
    await fake_clock.advance(LIMITS.generation_timeout)  # every hold expires
    await churn(registry, range(20, 40))
    assert registry.account("acct", LIMITS) is not gate


async def test_a_client_closed_while_its_generation_runs_keeps_the_slot_taken(
    fake_clock: FakeClock,
) -> None:
    registry = LocalGate(clock=fake_clock)
    limits = Limits(submissions=10, window=10.0, concurrent=1, generation_timeout=30.0)
    async with AsyncClient(key(1), base_url=URL, limits=limits, gate=registry) as first:
        permit = await first.gate.acquire()
        await permit.answered("g1", None)
    await churn(registry, range(10, 60))
    async with AsyncClient(key(1), base_url=URL, limits=limits, gate=registry) as second:
        assert second.gate.statistics().holders == ("g1",)  # the next one must wait for it


async def test_different_limits_on_a_kept_gate_are_refused(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    gate = registry.account("acct", LIMITS)
    with pytest.raises(ValueError, match="different limits"):
        registry.account("acct", Limits(submissions=3, window=10.0))
    registry.release_account("acct", gate)
    assert len(registry) == 0  # the refused call did not count as a user


async def test_a_client_collected_unclosed_leaves_its_gate(fake_clock: FakeClock) -> None:
    registry = LocalGate(clock=fake_clock)
    client = AsyncClient(key(1), base_url=URL, limits=LIMITS, gate=registry)
    await client.__aenter__()
    client.gate  # noqa: B018
    assert len(registry) == 1
    del client
    gc.collect()  # no session was opened: nothing to warn about
    assert len(registry) == 0
