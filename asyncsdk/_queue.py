"""The job queue of a batch: jobs handed back first, then the source, read lazily.

::

    source (list, iterable, async iterable) ──► lookahead (one job) ──┐
                                                                      ├──► take() ──► a worker
    handed back (a 429, an account taken out, a budget wait) ─────────┘   (handed back first)

Workers pull: a worker first waits for its account's gate and only then calls :meth:`JobQueue.take`.
Before a job is handed out it goes through the runner's ``must_submit(job, fresh)``, which
may deal with it without a submission (a job the journal already finished or has in flight,
an id used twice, a job past its start deadline) and then answers ``False``; ``fresh`` is
``False`` for a job handed back, which the journal was already asked about.

The source is read one job at a time and one job ahead (:meth:`JobQueue.look_ahead`), so that
the end of the source is known before a worker waits for a window only to find nothing left,
and the next job's start deadline is watched while every account is busy
(:meth:`JobQueue.watch_deadlines`). A sync iterable that is not a list or a tuple (a generator,
a file being read) is advanced in a worker thread, never on the event loop.

A job taken out is "in flight" until the worker reports it :meth:`~JobQueue.finished` or
hands it back. :attr:`JobQueue.drained` is set once no job can ever be handed out again: the
source is exhausted and nothing is waiting or in flight, or the queue was halted (a budget
stop). Every change of the queue sets :attr:`JobQueue.change` (and a new one replaces it), so
that a worker waiting for a job that may yet be handed back wakes up.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable

import anyio

from ._jobs import Job

__all__ = ["JobQueue", "MustSubmit", "read_lazily"]

#: ``must_submit(job, fresh)``: ``True`` when the job is to be submitted now; ``False`` when it
#: was dealt with otherwise (from the journal, refused, expired). See the module docstring.
MustSubmit = Callable[[Job, bool], Awaitable[bool]]


async def read_lazily(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    """The jobs one at a time. A sync iterable that is not a list or a tuple (a generator, a
    file being read) is advanced in a worker thread, so its reads never block the loop."""
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    elif isinstance(jobs, (list, tuple)):
        for job in jobs:
            yield job
    else:
        iterator = iter(jobs)

        def pull() -> Job | None:
            return next(iterator, None)

        while (pulled := await anyio.to_thread.run_sync(pull)) is not None:
            yield pulled


class JobQueue:
    """The shared queue of one run (see the module docstring).

    :param jobs: the source, read lazily.
    :param clock: the Unix time, for start deadlines (``time.time``).
    """

    def __init__(
        self,
        jobs: Iterable[Job] | AsyncIterable[Job],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = read_lazily(jobs)
        self._clock = clock
        self._handed_back: collections.deque[Job] = collections.deque()
        self._lookahead: Job | None = None
        self._exhausted = False
        self._halted = False
        self._in_flight = 0
        # anyio primitives bind to the running loop: made on first use.
        self._lock: anyio.Lock | None = None
        self._change: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        #: How many jobs were read from the source.
        self.seen = 0

    # -- state -----------------------------------------------------------------------------------
    def _primitives(self) -> anyio.Lock:
        if self._lock is None:
            self._lock, self._change, self._drained = anyio.Lock(), anyio.Event(), anyio.Event()
        return self._lock

    @property
    def change(self) -> anyio.Event:
        """Set at the next change of the queue."""
        self._primitives()
        assert self._change is not None
        return self._change

    @property
    def drained(self) -> anyio.Event:
        """Set once no job will ever be handed out again."""
        self._primitives()
        assert self._drained is not None
        return self._drained

    @property
    def in_flight(self) -> int:
        """Jobs handed out and neither finished nor handed back."""
        return self._in_flight

    def _check_drained(self) -> None:
        if self._halted or (
            self._exhausted
            and self._lookahead is None
            and not self._handed_back
            and not self._in_flight
        ):
            self.drained.set()

    def _changed(self) -> None:
        """Every mutation ends here: wake whoever waits for a change."""
        if self._change is not None:
            self._change.set()
            self._change = anyio.Event()
        self._check_drained()

    # -- reading -----------------------------------------------------------------------------------
    async def _next_source_job(self) -> Job | None:
        if self._lookahead is not None:
            job, self._lookahead = self._lookahead, None
            return job
        if self._exhausted or self._halted:
            return None
        try:
            job = await self._source.__anext__()
        except StopAsyncIteration:
            self._exhausted = True
            self._check_drained()
            return None
        if not isinstance(job, Job):
            raise TypeError(f"jobs must be asyncsdk.Job objects, got {job!r}")
        self.seen += 1
        return job

    async def look_ahead(self) -> None:
        """Read one job ahead (if none is waiting), so that the end of the source is known
        before a worker waits for its account's window only to find nothing left, and so
        that the job's start deadline is watched while every account is busy."""
        async with self._primitives():
            if self._lookahead is None and not self._handed_back:
                self._lookahead = await self._next_source_job()
                if self._lookahead is not None:
                    self._changed()

    async def take(self, must_submit: MustSubmit) -> Job | anyio.Event | None:
        """The next job to submit: handed-back jobs first, then the source.

        ``None`` once no job can come any more; an event to wait for when none is there now
        but a job in flight may still be handed back (the caller should not hold its
        account's slot meanwhile).
        """
        async with self._primitives():
            while not self._halted:
                if self._handed_back:
                    again = self._handed_back.popleft()
                    if await must_submit(again, False):
                        self._in_flight += 1
                        return again
                    continue
                job = await self._next_source_job()
                if job is None:
                    break
                if await must_submit(job, True):
                    self._in_flight += 1
                    return job
        if self._in_flight and not self._halted:
            return self.change
        self._check_drained()
        return None

    # -- deadlines ---------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest start deadline among the jobs waiting at the head of the queue."""
        waiting = [*self._handed_back, *([self._lookahead] if self._lookahead else [])]
        deadlines = [job.start_by for job in waiting if job.start_by is not None]
        return min(deadlines) if deadlines else None

    async def expire_due(self, must_submit: MustSubmit) -> None:
        """Pass the waiting jobs whose start deadline has passed to ``must_submit`` (which
        reports them expired), reading on through the source while the next one is past its
        deadline too."""
        async with self._primitives():
            while not self._halted:
                now = self._clock()
                due = [j for j in self._handed_back if j.start_by is not None and j.start_by <= now]
                for job in due:
                    self._handed_back.remove(job)
                    if await must_submit(job, False):  # not due after all: first in line
                        self._handed_back.appendleft(job)
                if self._lookahead is None and not self._handed_back:
                    self._lookahead = await self._next_source_job()
                head = self._lookahead
                if head is None or head.start_by is None or head.start_by > now:
                    break
                self._lookahead = None
                if await must_submit(head, True):
                    self._handed_back.appendleft(head)
                    break
            self._changed()

    async def watch_deadlines(self, must_submit: MustSubmit) -> None:
        """Until the queue is drained: report the jobs whose start deadline passes while
        every account is busy (run it in a task of its own)."""
        while True:
            await self.look_ahead()  # the next job's deadline is known while all are busy
            change = self.change  # taken before the checks: a later mutation sets it
            if self.drained.is_set():
                return
            due = self.next_deadline()
            if due is not None and self._clock() >= due:
                await self.expire_due(must_submit)
                continue
            with anyio.move_on_after(None if due is None else due - self._clock()):
                await change.wait()

    # -- the workers' reports ----------------------------------------------------------------------
    def finished(self) -> None:
        """A job handed out is over."""
        self._in_flight -= 1
        self._changed()

    def hand_back(self, job: Job) -> None:
        """A job handed out was not sent: first in line for whichever account is free."""
        self._in_flight -= 1
        self._handed_back.appendleft(job)
        self._changed()

    def halt(self) -> None:
        """Hand out nothing more (the jobs not taken stay where they are: pending)."""
        self._halted = True
        self._changed()

    def leftovers(self) -> list[Job]:
        """Jobs read from the source (or handed back) that no account ran."""
        jobs = list(self._handed_back)
        if self._lookahead is not None:
            jobs.append(self._lookahead)
        self._handed_back.clear()
        self._lookahead = None
        return jobs
