"""The batch's job queue without sockets: order, lookahead, drained, deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator

import anyio
import pytest

from asyncsdk import Job
from asyncsdk._queue import JobQueue

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"


def jobs(n: int, prefix: str = "j", start_by: float | None = None) -> list[Job]:
    return [Job(MODEL, f"prompt {i}", id=f"{prefix}{i}", start_by=start_by) for i in range(n)]


class Decider:
    """A ``must_submit`` that records what it was asked and submits all but ``skip``."""

    def __init__(self, skip: Collection[str] = ()) -> None:
        self.asked: list[tuple[str, bool]] = []
        self.skip = skip

    async def __call__(self, job: Job, fresh: bool) -> bool:
        self.asked.append((job.id, fresh))
        return job.id not in self.skip


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def take_job(queue: JobQueue, decide: Decider) -> Job:
    taken = await queue.take(decide)
    assert isinstance(taken, Job), taken
    return taken


async def test_handed_back_jobs_go_first_the_last_one_at_the_head() -> None:
    queue, decide = JobQueue(jobs(4)), Decider()
    a, b = await take_job(queue, decide), await take_job(queue, decide)
    queue.hand_back(a)
    queue.hand_back(b)  # the latest hand-back is first in line
    order = [(await take_job(queue, decide)).id for _ in range(4)]
    assert order == ["j1", "j0", "j2", "j3"]
    # Asked about once as fresh (from the source), again as handed back.
    assert decide.asked == [
        ("j0", True), ("j1", True), ("j1", False), ("j0", False), ("j2", True), ("j3", True),
    ]  # fmt: skip


async def test_a_job_dealt_with_elsewhere_is_skipped_and_never_in_flight() -> None:
    queue, decide = JobQueue(jobs(3)), Decider(skip={"j0", "j2"})
    assert (await take_job(queue, decide)).id == "j1"
    assert queue.in_flight == 1
    # Nothing left to read, but j1 may still come back: wait for a change, not "done".
    waiting = await queue.take(decide)
    assert isinstance(waiting, anyio.Event) and not waiting.is_set()
    assert not queue.drained.is_set()
    queue.finished()
    assert waiting.is_set() and queue.drained.is_set()
    assert await queue.take(decide) is None
    assert queue.seen == 3


async def test_drained_only_when_the_source_is_read_and_nothing_is_in_flight() -> None:
    queue, decide = JobQueue(jobs(2)), Decider()
    first, second = await take_job(queue, decide), await take_job(queue, decide)
    await queue.look_ahead()  # learns the end of the source
    assert not queue.drained.is_set()
    queue.finished()
    queue.hand_back(second)
    assert not queue.drained.is_set()
    assert (await take_job(queue, decide)) is second
    queue.finished()
    assert queue.drained.is_set()
    assert first is not second


async def test_an_empty_source_is_drained_at_the_first_look() -> None:
    queue = JobQueue([])
    await queue.look_ahead()
    assert queue.drained.is_set() and queue.seen == 0


async def test_halt_hands_out_nothing_more_and_keeps_what_was_read() -> None:
    queue, decide = JobQueue(jobs(5)), Decider()
    taken = await take_job(queue, decide)
    await queue.look_ahead()
    queue.halt()
    assert queue.drained.is_set()
    assert await queue.take(decide) is None
    queue.hand_back(taken)
    assert [j.id for j in queue.leftovers()] == ["j0", "j1"]
    assert queue.seen == 2  # the rest of the source was never read


async def test_the_source_is_read_one_job_ahead_and_no_further() -> None:
    pulled = 0

    async def source() -> AsyncIterator[Job]:
        nonlocal pulled
        for job in jobs(1000):
            pulled += 1
            yield job

    queue, decide = JobQueue(source()), Decider()
    await queue.look_ahead()
    await queue.look_ahead()  # already one ahead: reads nothing more
    assert pulled == 1 and queue.seen == 1
    assert (await take_job(queue, decide)).id == "j0"  # the lookahead is taken first
    assert pulled == 1
    await take_job(queue, decide)
    assert pulled == 2


async def test_a_sync_iterable_is_read_in_a_worker_thread() -> None:
    threads: list[bool] = []

    def source() -> Iterator[Job]:
        for job in jobs(2):
            threads.append(threading.current_thread() is threading.main_thread())
            yield job

    queue, decide = JobQueue(source()), Decider()
    await take_job(queue, decide)
    await take_job(queue, decide)
    assert threads == [False, False]


async def test_something_that_is_not_a_job_is_refused_as_it_is_read() -> None:
    queue = JobQueue([jobs(1)[0], "a prompt"])  # type: ignore[list-item]
    decide = Decider()
    await take_job(queue, decide)
    with pytest.raises(TypeError, match=r"asyncsdk\.Job"):
        await queue.take(decide)


async def test_every_change_wakes_the_waiters_and_arms_a_new_event() -> None:
    queue, decide = JobQueue(jobs(3)), Decider()
    job = await take_job(queue, decide)
    handed_back = queue.change
    queue.hand_back(job)
    assert handed_back.is_set() and not queue.change.is_set()
    await take_job(queue, decide)
    finished = queue.change
    queue.finished()
    assert finished.is_set() and not queue.change.is_set()
    halted = queue.change
    queue.halt()
    assert halted.is_set()


# -- deadlines -------------------------------------------------------------------------------------
async def test_next_deadline_is_the_earliest_among_the_waiting_jobs() -> None:
    clock = Clock()
    queue = JobQueue(
        [Job(MODEL, "a", id="a", start_by=1010.0), Job(MODEL, "b", id="b", start_by=1005.0)],
        clock=clock,
    )
    decide = Decider()
    assert queue.next_deadline() is None  # nothing read yet
    await queue.look_ahead()
    assert queue.next_deadline() == 1010.0
    a = await take_job(queue, decide)
    b = await take_job(queue, decide)
    queue.hand_back(a)
    queue.hand_back(b)
    assert queue.next_deadline() == 1005.0


async def test_expire_due_passes_only_the_jobs_past_their_deadline() -> None:
    clock = Clock()
    source = [
        Job(MODEL, "late 1", id="late1", start_by=999.0),
        Job(MODEL, "late 2", id="late2", start_by=1000.0),
        Job(MODEL, "in time", id="ok", start_by=1001.0),
        Job(MODEL, "no deadline", id="free"),
    ]
    queue = JobQueue(source, clock=clock)
    expired: list[str] = []

    async def must_submit(job: Job, fresh: bool) -> bool:
        if job.start_by is not None and clock() >= job.start_by:
            expired.append(job.id)
            return False
        return True

    await queue.expire_due(must_submit)
    assert expired == ["late1", "late2"]  # read on through the source while they were due
    assert queue.next_deadline() == 1001.0  # "ok" waits at the head, not taken
    clock.now = 1001.0
    await queue.expire_due(must_submit)
    assert expired == ["late1", "late2", "ok"]
    taken = await queue.take(must_submit)
    assert isinstance(taken, Job) and taken.id == "free"


async def test_a_handed_back_job_that_is_not_due_after_all_stays_first_in_line() -> None:
    clock = Clock()
    queue = JobQueue(jobs(2, start_by=1000.0), clock=clock)
    decide = Decider()
    first = await take_job(queue, decide)
    queue.hand_back(first)
    await queue.expire_due(decide)  # due by the queue's clock; the decider submits it
    assert (await take_job(queue, decide)) is first


async def test_watch_deadlines_reports_a_job_at_its_deadline_while_all_are_busy() -> None:
    # Real time, a short deadline: the watcher wakes at the deadline, not at a change.
    start_by = time.time() + 0.05
    queue = JobQueue([Job(MODEL, "a", id="a"), Job(MODEL, "b", id="b", start_by=start_by)])
    expired = anyio.Event()
    decide_calls: list[str] = []

    async def must_submit(job: Job, fresh: bool) -> bool:
        decide_calls.append(job.id)
        if job.start_by is not None and time.time() >= job.start_by:
            expired.set()
            return False
        return True

    busy = await queue.take(must_submit)  # "a" runs: every (one) account is busy
    assert isinstance(busy, Job)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.watch_deadlines, must_submit)
            await expired.wait()
            assert time.time() >= start_by
            queue.finished()  # "a" ends: nothing left, the watcher returns
    assert decide_calls == ["a", "b"] and queue.drained.is_set()
