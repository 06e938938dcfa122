"""Wake-ups: webhook deliveries wake the watchers of their generation (fake clock, no sockets)."""

from __future__ import annotations

import json

import anyio
import pytest

from asyncsdk import Generation, GenerationStatus, webhooks
from asyncsdk._wakeups import Wakeups

from .fakeclock import FakeClock

pytestmark = pytest.mark.anyio

SECRET = "whsec_wakeups"


def record(generation_id: str, status: GenerationStatus = GenerationStatus.SUCCEEDED) -> Generation:
    return Generation(generation_id, status, model_provider="m", total_time=3.0)


async def test_a_delivery_wakes_every_sleeper_on_its_generation_at_once() -> None:
    clock = FakeClock()
    wakeups = Wakeups(clock=clock)
    results: dict[str, Generation | None] = {}

    async def sleeper(name: str, generation_id: str) -> None:
        results[name] = await wakeups.sleep(generation_id, 60.0)

    with anyio.fail_after(5):  # real seconds: a lost wake-up fails instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "a", "g1")
            tg.start_soon(sleeper, "b", "g1")
            tg.start_soon(sleeper, "other", "g2")
            await anyio.wait_all_tasks_blocked()
            assert wakeups.statistics().sleeping == 3
            assert wakeups.notify(record("g1")) is True
            await anyio.wait_all_tasks_blocked()
            assert results == {"a": record("g1"), "b": record("g1")}  # no time passed
            await clock.advance(60.0)  # g2's sleeper: the time passes without a delivery
    assert results["other"] is None
    stats = wakeups.statistics()
    assert (stats.sleeping, stats.generations, stats.delivered, stats.woken) == (0, 0, 1, 2)


async def test_a_verified_webhook_event_wakes_its_watcher() -> None:
    body = json.dumps(
        {
            "id": "evt_1",
            "type": webhooks.GENERATION_FAILED,
            "data": {"generationId": "g1", "status": "failed", "failureReason": "nsfw"},
        }
    ).encode()
    event = webhooks.verify(body, webhooks.sign(body, SECRET), SECRET)
    wakeups = Wakeups(clock=FakeClock())
    woken: list[Generation | None] = []

    async def sleeper() -> None:
        woken.append(await wakeups.sleep("g1", 10.0))

    with anyio.fail_after(5):  # real seconds: a lost wake-up fails instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            wakeups.notify(event)
    assert woken == [event.generation]


async def test_a_delivery_just_before_the_sleep_is_not_missed() -> None:
    # The watcher read `processing`, the delivery came, then the watcher went to sleep.
    wakeups = Wakeups(clock=FakeClock())
    wakeups.notify(record("g1"))
    with anyio.fail_after(1):
        assert await wakeups.sleep("g1", 3600.0) == record("g1")
    assert wakeups.take("g2") is None
    assert wakeups.take("g1") == record("g1")  # instead of a read
    assert wakeups.take("g1") is None


async def test_a_record_still_running_wakes_nobody() -> None:
    clock = FakeClock()
    wakeups = Wakeups(clock=clock)
    results: list[Generation | None] = []

    async def sleeper() -> None:
        results.append(await wakeups.sleep("g1", 5.0))

    with anyio.fail_after(5):  # real seconds: a lost wake-up fails instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            assert wakeups.notify(record("g1", GenerationStatus.PROCESSING)) is False
            await anyio.wait_all_tasks_blocked()
            assert results == []
            await clock.advance(5.0)
    assert results == [None]
    assert not wakeups.flowing and wakeups.statistics().delivered == 0


async def test_a_cancelled_sleeper_leaves_nothing_behind() -> None:
    clock = FakeClock()
    wakeups = Wakeups(clock=clock)
    kept: list[Generation | None] = []

    async def stays() -> None:
        kept.append(await wakeups.sleep("g1", 60.0))

    with anyio.fail_after(5):  # real seconds: a lost wake-up fails instead of hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(stays)
            async with anyio.create_task_group() as inner:
                inner.start_soon(wakeups.sleep, "g1", 60.0)
                inner.start_soon(wakeups.sleep, "g9", 60.0)
                await anyio.wait_all_tasks_blocked()
                assert wakeups.statistics().sleeping == 3
                inner.cancel_scope.cancel()
            stats = wakeups.statistics()
            assert (stats.sleeping, stats.generations) == (1, 1)  # only the one still asleep
            wakeups.notify(record("g1"))
    assert kept == [record("g1")]
    assert wakeups.statistics().generations == 0


async def test_memory_is_bounded_whatever_is_delivered() -> None:
    wakeups = Wakeups(memory=16, clock=FakeClock())
    for i in range(10_000):
        wakeups.notify(record(f"g{i}"))
    stats = wakeups.statistics()
    assert (stats.remembered, stats.generations, stats.delivered) == (16, 0, 10_000)
    assert wakeups.take("g9999") is not None and wakeups.take("g0") is None
    assert len(wakeups) == 0


async def test_deliveries_flow_until_they_stop_coming() -> None:
    clock = FakeClock()
    wakeups = Wakeups(flowing_for=30.0, clock=clock)
    assert not wakeups.flowing  # no delivery seen: webhooks may not be set up at all
    wakeups.notify(record("g1"))
    assert wakeups.flowing
    await clock.advance(29.0)
    assert wakeups.flowing
    await clock.advance(2.0)
    assert not wakeups.flowing and not wakeups.statistics().flowing
    wakeups.notify(record("g2"))
    assert wakeups.flowing


async def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        Wakeups(memory=0)
    with pytest.raises(ValueError):
        Wakeups(flowing_for=-1.0)
    with pytest.raises(ValueError, match="not a webhook event"):
        Wakeups().notify({"generationId": "g1", "status": "succeeded"})  # the record alone
    with pytest.raises(TypeError):
        Wakeups().notify("g1")  # type: ignore[arg-type]


async def test_events_as_parsed_json_and_other_event_types() -> None:
    wakeups = Wakeups(clock=FakeClock())
    data = {"generationId": "g1", "status": "succeeded", "totalTime": 2.5}
    assert wakeups.notify({"type": "generation.started", "data": data}) is False
    assert wakeups.take("g1") is None and not wakeups.flowing
    assert wakeups.notify({"type": webhooks.GENERATION_COMPLETED, "data": data}) is True
    taken = wakeups.take("g1")
    assert taken is not None and taken.total_time == 2.5


async def test_the_real_clock_sleeps_and_wakes() -> None:
    wakeups = Wakeups()
    with anyio.fail_after(1):
        assert await wakeups.sleep("g1", 0.01) is None
        async with anyio.create_task_group() as tg:

            async def deliver() -> None:
                await anyio.sleep(0.01)
                wakeups.notify(record("g1"))

            tg.start_soon(deliver)
            assert await wakeups.sleep("g1", 30.0) == record("g1")
