"""The shared pool's FIFO slots and its registry, without sockets."""

from __future__ import annotations

import asyncio

import pytest

from asyncsdk._transport import Pool, Slots, origin_of

pytestmark = pytest.mark.anyio


async def test_slots_are_handed_over_in_arrival_order() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await slots.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert slots.waiting == 5 and slots.in_use == 2
    for _ in range(5):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert slots.in_use == 2 and slots.waiting == 0


async def test_a_waiter_cancelled_while_queued_or_just_after_its_turn_loses_no_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    queued = asyncio.create_task(slots.acquire())
    handed = asyncio.create_task(slots.acquire())
    last = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    queued.cancel()  # cancelled while waiting: leaves the line
    await asyncio.sleep(0)
    slots.release()  # hands the slot to `handed`...
    handed.cancel()  # ...which is cancelled before it runs: it passes the slot on
    await asyncio.sleep(0)
    await asyncio.wait_for(last, 1)
    assert queued.cancelled() and handed.cancelled()
    assert slots.in_use == 1 and slots.waiting == 0
    slots.release()
    assert slots.in_use == 0


async def test_pools_by_origin_and_limit_closed_with_the_last_user() -> None:
    assert origin_of("HTTP://Example.test:8080/api/v1") == "http://example.test:8080"
    a = Pool.acquire("http://example.test", 10)
    b = Pool.acquire("http://example.test", 10)
    other = Pool.acquire("http://example.test", 20)
    assert a is b and other is not a
    assert Pool.statistics()["pools"] == 2 and Pool.statistics()["users"] == 3
    await a.release()
    assert not b.closed
    await b.release()
    await other.release()
    assert a.closed and other.closed
    assert Pool.statistics() == {"pools": 0, "users": 0, "requests": 0, "waiting": 0}
