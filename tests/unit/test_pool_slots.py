"""The shared pool's FIFO slots and its registry, without sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from asyncsdk._transport import LAG_LIMIT, LAG_PERIOD, Pool, Slots, origin_of

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
    assert Pool.statistics() == {
        "pools": 0,
        "users": 0,
        "requests": 0,
        "allowed": 0,
        "waiting": 0,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_round_trips_that_grow_shrink_the_limit_to_the_floor_and_back() -> None:
    clock = Clock()
    slots = Slots(100, floor=8, clock=clock)
    for _ in range(100):
        assert slots.try_acquire()
    assert not slots.try_acquire()
    for _ in range(50):  # answers in 1 ms: the base
        slots.release(0.001)
        assert slots.try_acquire()
    assert slots.allowed == 100
    for _ in range(400):  # answers queue at the service: 10 ms each, the loop on time
        slots.release(0.010)
        slots.try_acquire()
    assert slots.allowed == 100
    slots.observe_lag(LAG_LIMIT * 3)  # now the loop runs late: answers queue here
    for _ in range(400):
        slots.release(0.010)
        slots.try_acquire()
    assert slots.allowed == 8 and slots.in_use <= 100
    while slots.in_use > 8:  # the requests already in flight finish; no new one starts
        slots.release(0.010)
        assert not slots.try_acquire()
    grown = []
    for _ in range(6000):  # back to 1 ms, the limit binding: it grows again
        slots.release(0.001)
        while slots.try_acquire():
            pass
        grown.append(slots.allowed)
    assert grown == sorted(grown) and grown[-1] == 100


def test_the_base_is_forgotten_after_two_periods() -> None:
    clock = Clock()
    slots = Slots(50, floor=4, clock=clock)
    for _ in range(50):
        slots.try_acquire()
    slots.release(0.001)
    slots.try_acquire()
    clock.now += 25.0  # the service got slower for good: 5 ms is its new normal
    slots.observe_lag(LAG_LIMIT * 3)
    for _ in range(200):
        slots.release(0.005)
        slots.try_acquire()
    low = slots.allowed
    clock.now += 25.0
    for _ in range(3000):
        slots.release(0.005)
        while slots.try_acquire():
            pass
    assert low < 50 and slots.allowed == 50


async def test_the_slots_look_at_the_loop_while_requests_are_in_flight() -> None:
    """A callback that hogs the loop makes the looks late; once idle, the looks stop."""
    slots = Slots(100, floor=8)
    assert slots.try_acquire()
    asyncio.get_running_loop().call_soon(time.sleep, LAG_LIMIT * 3)
    await asyncio.sleep(LAG_PERIOD * 3)
    assert slots._late_until > time.monotonic()
    slots.release()
    await asyncio.sleep(LAG_PERIOD * 3)
    assert not slots._ticking


def test_a_lower_limit_queues_the_next_requests_without_losing_any() -> None:
    slots = Slots(10, floor=2, clock=Clock())
    for _ in range(10):
        slots.try_acquire()
    slots.allowed = 2.0
    for _ in range(9):
        slots.release()
    assert slots.in_use == 1 and slots.try_acquire() and not slots.try_acquire()
