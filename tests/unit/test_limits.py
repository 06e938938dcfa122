"""The gate, socket-free on a fake clock: the window property, FIFO order, slot release."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsdk import Limits, RateLimitError, RateLimitInfo
from asyncsdk._limits import Flag, Holder, LocalAccountGate, Priority, SubmissionWindow

from .fakeclock import FakeClock

pytestmark = pytest.mark.anyio


# -- the window property ------------------------------------------------------------------------
requests = st.lists(
    st.tuples(
        st.floats(0, 3),  # think time before the caller wants to submit
        st.floats(0, 2),  # round-trip latency
        st.floats(0, 1),  # where in the round trip the request reaches the server
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    reqs=requests,
    limit=st.integers(1, 10),
    window=st.floats(0.5, 10),
    concurrency=st.integers(1, 8),
)
def test_no_server_window_ever_holds_more_than_the_limit(
    reqs: list[tuple[float, float, float]], limit: int, window: float, concurrency: int
) -> None:
    """For any arrival pattern and latencies, as the *server* counts arrivals."""
    win = SubmissionWindow(limit, window, margin=0.0)
    in_flight: list[tuple[float, int]] = []  # (answer time, id) heap
    entries = {}
    arrivals = []
    t = 0.0
    for i, (think, latency, where) in enumerate(reqs):
        t += think
        while True:
            while in_flight and in_flight[0][0] <= t:
                answered, j = heapq.heappop(in_flight)
                win.settle(entries.pop(j), answered)
            if len(in_flight) >= concurrency:  # the caller's own concurrency
                t = in_flight[0][0]
                continue
            admit = win.admit_at(t)
            if admit <= t:
                break
            t = min(admit, in_flight[0][0] if in_flight else math.inf)
        entries[i] = win.reserve()
        heapq.heappush(in_flight, (t + latency, i))
        arrivals.append(t + where * latency)
    arrivals.sort()
    for k, arrived in enumerate(arrivals):
        # (t - W, t]: arrivals exactly one window apart may share it only by float rounding.
        in_window = [a for a in arrivals[: k + 1] if a > arrived - window + 1e-9]
        assert len(in_window) <= limit, (arrived, in_window)


def test_a_full_window_admits_again_exactly_one_window_after_the_first_answer() -> None:
    win = SubmissionWindow(3, 10.0, margin=0.5)
    for answered in (1.0, 2.0, 3.0):
        win.settle(win.reserve(), answered)
    assert win.count(3.0) == 3
    assert win.admit_at(3.0) == 11.5  # first answer + window + margin
    assert win.admit_at(11.5) == 11.5


def test_in_flight_submissions_count_until_answered() -> None:
    win = SubmissionWindow(2, 1.0)
    win.reserve()
    win.reserve()
    assert win.admit_at(100.0) == math.inf


def test_resync_never_believes_more_room_than_the_server_reports() -> None:
    win = SubmissionWindow(10, 60.0, margin=0.0)
    win.settle(win.reserve(), 0.0)
    win.resync(now=0.0, remaining=0, resets_in=5.0)  # another process used the rest
    assert win.count(0.0) == 10
    assert win.admit_at(0.0) == 5.0
    win.resync(now=0.0, remaining=9, resets_in=5.0)  # the server knows less than we do
    assert win.count(0.0) == 10


# -- the gate ----------------------------------------------------------------------------------
GateFactory = Callable[..., tuple[LocalAccountGate, FakeClock]]


@pytest.fixture
def make_gate(fake_clock: FakeClock) -> GateFactory:
    """``make_gate(**limits)``: a gate on the test's fake clock, and the clock."""

    def make(**limits: float) -> tuple[LocalAccountGate, FakeClock]:
        settings = {"submissions": 2, "window": 10.0, "concurrent": 1, "generation_timeout": 50.0}
        settings.update(limits)
        gate = LocalAccountGate(Limits(**settings, margin=0.0), clock=fake_clock)  # type: ignore[arg-type]
        return gate, fake_clock

    return make


async def test_waiters_are_served_in_arrival_order(make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=1, window=1.0, concurrent=8)
    order: list[int] = []

    async def submitter(i: int) -> None:
        permit = await gate.acquire()
        order.append(i)
        await permit.answered(None, None)

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(submitter, i)
            await anyio.wait_all_tasks_blocked()  # fix the arrival order
        assert gate.statistics().waiting == 5
        await clock.run_until(lambda: len(order) == 6)
    assert order == list(range(6))
    assert clock.time == pytest.approx(1000.0 + 5.0, abs=0.05)  # one a second


async def test_slot_is_held_by_the_generation_until_released(make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=10)
    permit = await gate.acquire()
    await permit.answered("gen-1", None)
    assert gate.statistics().holders == ("gen-1",)
    second: list[object] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(second, gate.acquire()))
        await clock.advance(20.0)
        assert second == []  # still running: the slot is not free
        await gate.release("gen-1")
        await clock.advance(0.0)
    assert len(second) == 1
    assert gate.statistics().in_progress == 1


async def _append(into: list[object], awaitable: object) -> None:
    into.append(await awaitable)  # type: ignore[misc]


@pytest.mark.parametrize("path", ["failed-submission", "timeout", "cancelled-waiter", "lost"])
async def test_slot_is_freed_on_every_path(path: str, make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=10, generation_timeout=5.0)
    permit = await gate.acquire()
    if path == "failed-submission":  # e.g. a 400: nothing was created
        await permit.answered(None, None)
    elif path == "timeout":  # nobody saw it end; the service cancels it at the timeout
        await permit.answered("gen-1", None)
        await clock.advance(4.9)
        assert gate.statistics().in_progress == 1
        await clock.advance(0.2)
    elif path == "cancelled-waiter":
        await permit.answered("gen-1", None)
        with anyio.move_on_after(0):  # a second submitter gives up while queued
            await gate.acquire()
        assert gate.statistics().waiting == 0
        assert gate.statistics().in_progress == 1  # not freed early by the cancellation
        await gate.release("gen-1")
    else:  # the answer was lost and reconciliation found nothing
        await permit.unanswered("sdk-0123456789ab", 1000.0)
        assert gate.statistics().holders == (None,)
        await permit.abandon()
    assert gate.statistics().in_progress == 0


async def test_cancelling_a_watcher_does_not_free_the_slot(make_gate: GateFactory) -> None:
    gate, _ = make_gate(submissions=10)
    permit = await gate.acquire()
    await permit.answered("gen-1", None)
    with anyio.move_on_after(0), gate.watching("gen-1"):
        await anyio.sleep(1)
    assert gate.statistics().holders == ("gen-1",)


async def test_probe_frees_an_unwatched_slot_once_its_generation_ended(
    make_gate: GateFactory,
) -> None:
    gate, clock = make_gate(submissions=10)
    permit = await gate.acquire()
    await permit.answered("gen-1", None)
    probed: list[list[Holder]] = []

    async def probe(holders: Sequence[Holder]) -> None:
        probed.append(list(holders))
        if len(probed) == 3:  # the third look sees it ended
            await gate.release("gen-1")

    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire(probe=probe)))
        await clock.run_until(lambda: bool(got), step=0.25)
    assert [[h.generation_id for h in holders] for holders in probed] == [["gen-1"]] * 3
    assert clock.time - 1000.0 == pytest.approx(3 * gate.probe_interval, abs=0.3)


async def test_watched_holders_are_not_probed(make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=10, generation_timeout=3.0)
    permit = await gate.acquire()
    await permit.answered("gen-1", None)
    probed: list[object] = []

    async def probe(holders: object) -> None:
        probed.append(holders)

    with gate.watching("gen-1"):
        got: list[object] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _append(got, gate.acquire(probe=probe)))
            await clock.run_until(lambda: bool(got), step=0.25)
    assert probed == []  # it expired at the timeout instead


async def test_server_headers_resync_the_window(make_gate: GateFactory) -> None:
    gate, _ = make_gate(submissions=5, window=60.0)
    info = RateLimitInfo(limit=5, remaining=0, reset_at=None, retry_after=2.0)
    gate.note_rate_limit(info, submission=True)
    assert gate.statistics().submissions_in_window == 5


async def test_reads_pause_when_the_server_says_none_remain(make_gate: GateFactory) -> None:
    gate, clock = make_gate()
    gate.note_rate_limit(RateLimitInfo(60, 0, None, 3.0), submission=False)
    done: list[bool] = []

    async def read() -> None:
        await gate.read_turn()
        done.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await clock.advance(2.0)
        assert done == []
        await clock.advance(1.5)
    assert done == [True]


async def test_a_full_window_fails_fast_past_the_callers_deadline() -> None:
    gate = LocalAccountGate(Limits(submissions=1, window=30.0, margin=0.0))
    permit = await gate.acquire()
    await permit.answered(None, None)
    with anyio.fail_after(5):  # the window frees in 30 s: don't wait to be cancelled
        with pytest.raises(RateLimitError) as caught:
            await gate.acquire()
    assert caught.value.reset_at is not None
    assert caught.value.status is None


def test_limits_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="window"):
        Limits(window=0)
    with pytest.raises(TypeError, match="submissions"):
        Limits(submissions=2.5)  # type: ignore[arg-type]
    assert Limits().margin == 0.5
    assert Limits(window=1.0).margin == 0.02


async def test_an_orphaned_slot_is_resolved_by_the_probe(make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=10, concurrent=2)
    first, second = await gate.acquire(), await gate.acquire()
    await first.orphan("sdk-aaaaaaaaaaaa", 1000.0)  # its submitter was cancelled mid-request
    await second.orphan(None, 1000.0)  # the service said something runs
    assert gate.statistics().holders == (None, None)
    assert gate.statistics().orphans == 2
    probed: list[list[Holder]] = []

    async def probe(holders: Sequence[Holder]) -> None:
        probed.append(list(holders))
        tagged, untagged = holders
        await gate.resolve(tagged.key, "gen-tagged")  # its tag was found running
        await gate.resolve(untagged.key, None)  # nothing runs: free

    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire(probe=probe)))
        await clock.run_until(lambda: bool(got), step=0.25)
    assert [(h.tag, h.orphan) for h in probed[0]] == [("sdk-aaaaaaaaaaaa", True), (None, True)]
    assert sorted(map(str, gate.statistics().holders)) == ["None", "gen-tagged"]
    assert gate.statistics().orphans == 0


# -- every mutation wakes waiters; every hint is capped (issue "Pay once, never hang", 10) ------
async def test_settling_an_in_flight_entry_wakes_the_waiter(make_gate: GateFactory) -> None:
    # With one submission a window and two slots, the second waits for the first's answer:
    # the settle turns its entry from "in flight" to finite, and must wake the waiter.
    gate, clock = make_gate(submissions=1, window=1.0, concurrent=2)
    first = await gate.acquire()
    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire()))
        await clock.advance(5.0)
        assert got == []  # in flight: it may arrive any time
        await first.answered("gen-1", None)
        await clock.run_until(lambda: bool(got), step=0.1, limit=2.0)
    assert clock.time - 1000.0 == pytest.approx(5.0 + 1.0, abs=0.15)  # a window after it


async def test_a_hold_taking_its_generation_wakes_the_waiter(make_gate: GateFactory) -> None:
    gate, clock = make_gate(submissions=10, concurrent=1, generation_timeout=50.0)
    permit = await gate.acquire()
    await permit.unanswered("sdk-0123456789ab", clock.time)
    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire()))
        await clock.advance(0.5)
        await permit.adopt("gen-1")
        await gate.release("gen-1")  # it had ended already
        await clock.advance(0.0)
    assert len(got) == 1


async def test_a_read_hint_an_hour_away_pauses_reads_for_one_window_at_most(
    make_gate: GateFactory,
) -> None:
    gate, clock = make_gate(window=10.0)
    hour = time.time() + 3600
    gate.note_rate_limit(RateLimitInfo(60, 0, hour, None), submission=False)
    done: list[bool] = []

    async def read() -> None:
        await gate.read_turn()
        done.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await clock.run_until(lambda: bool(done), step=0.5, limit=20.0)
    assert clock.time - 1000.0 <= 10.5


async def test_a_submission_hint_an_hour_away_fills_the_window_for_one_window(
    make_gate: GateFactory,
) -> None:
    gate, clock = make_gate(submissions=1, window=10.0)
    gate.note_rate_limit(RateLimitInfo(1, 0, time.time() + 3600, None), submission=True)
    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire()))
        await clock.run_until(lambda: bool(got), step=0.5, limit=30.0)
    assert clock.time - 1000.0 <= 10.5


async def test_every_hold_expires_even_if_its_submission_never_settles(
    make_gate: GateFactory,
) -> None:
    gate, clock = make_gate(submissions=10, generation_timeout=5.0)
    await gate.acquire()  # admitted, then its task vanished without settling anything
    got: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _append(got, gate.acquire()))
        await clock.run_until(lambda: bool(got), step=0.25, limit=10.0)
    assert clock.time - 1000.0 == pytest.approx(5.0, abs=0.3)


async def test_interactive_waiters_go_first_but_batch_is_never_starved(
    make_gate: GateFactory,
) -> None:
    gate, clock = make_gate(submissions=100, window=1.0, concurrent=1)
    holder = await gate.acquire()
    await holder.answered("gen-0", None)
    order: list[str] = []

    async def submitter(name: str, priority: Priority) -> None:
        permit = await gate.acquire(priority=priority)
        order.append(name)
        await permit.answered(f"gen-{name}", None)
        await gate.release(f"gen-{name}")

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(submitter, f"b{i}", Priority.BATCH)
            await anyio.wait_all_tasks_blocked()
        for i in range(6):
            tg.start_soon(submitter, f"i{i}", Priority.INTERACTIVE)
            await anyio.wait_all_tasks_blocked()
        await gate.release("gen-0")
        await clock.run_until(lambda: len(order) == 9)
    # The head was already batch's b0; then interactive first, a batch one after every four.
    assert order == ["b0", "i0", "i1", "i2", "i3", "b1", "i4", "i5", "b2"]


async def test_a_flag_wakes_every_waiter_and_times_out_without_a_cancellation() -> None:
    flag = Flag()
    woken: list[str] = []
    short_done = anyio.Event()

    async def waiter(name: str, seconds: float | None) -> None:
        await flag.wait(seconds)
        woken.append(name)
        if name == "short":
            short_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "short", 0.01)
        tg.start_soon(waiter, "forever", None)
        tg.start_soon(waiter, "long", 30.0)
        with anyio.fail_after(5):
            await short_done.wait()
        assert woken == ["short"]
        assert not flag.is_set() and flag._waiters is not None and len(flag._waiters) == 2
        flag.set()
        flag.set()  # once
    assert sorted(woken) == ["forever", "long", "short"]
    assert flag._waiters is None
    with anyio.fail_after(1):
        await flag.wait()  # set already: returns at once


async def test_a_cancelled_flag_waiter_leaves_no_trace() -> None:
    flag = Flag()
    with anyio.move_on_after(0.01):
        await flag.wait()
    assert flag._waiters == [] and not flag.is_set()
    flag.set()
