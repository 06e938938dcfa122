"""Batch jobs across many accounts: ``Job``, ``JobResult`` and ``BatchRunner``.

Scheduling is pull-based, so that a job goes to whichever account can start it soonest::

    account A worker: gate.acquire() ──► next job ──► submit ─► wait ─► download ─► result
    account B worker: gate.acquire() ──► next job ──► ...            (one worker per slot)
                            ▲
          jobs (list, iterable or async iterable; read lazily, one at a time)
          + jobs handed back (an account taken out, a 429, a budget wait)

A worker first waits for its account's gate to admit a submission (free slot, room in the
window) and only then takes the next job, so no job waits behind a busy account while another
is free, and every account stays busy while work remains. A job that was not sent goes back to
the queue for whichever account can start it first: after a 429 (another process filled the
account's window), or when its account is taken out. An account is taken out for account
reasons (authentication, credits, account gone, or a service it cannot even connect to, three
times running); a job's own failure (content policy, validation, a failed generation) is
reported in its :class:`JobResult` and the batch goes on. When every account is out, the run
stops with one :class:`~asyncsdk.AsyncSDKError` saying why.

Before anything is paid, ``run()`` refuses a batch that cannot go well: a download directory
that cannot be written, two jobs of a list with the same id, a job changed under an id the
journal already knows. (A lazy source is checked as it is read: such a job is reported as a
failed result carrying a ``ValueError``, and never submitted.)

Money: with ``max_credits`` no job is submitted whose estimated cost, added to the credits
spent in this run and those reserved by generations in flight, would exceed the cap. A model's
price is learnt from the accounts' history, the journal and every submission's answer
(``creditCost``); a job of a model whose price is still unknown runs alone, with all that is
left of the budget reserved for it, until its answer states the price. When the next job does
not fit, the run stops cleanly: generations in flight finish, the rest stay ``pending``, and
``BatchRunner.stopped`` says why. Deadlines: a job with ``start_by`` that no account could start
in time ends as ``expired`` (:class:`~asyncsdk.JobExpiredError`) and is never sent late.

With a journal (:mod:`asyncsdk._journal`), a rerun of the same jobs never pays twice: finished
jobs are reported from the journal, submitted ones are watched to their end, submissions cut
off before their answer was recorded are found by their tag, images paid for but not saved are
downloaded again, and only the rest is submitted.

``run()`` yields results as they complete. The workers live in a task group inside a separate
task, never around the generator's ``yield``; leaving the loop early (``break``, an exception,
``aclose()``) cancels them, and every journal row stays in a state a rerun can resume from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import errno
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._client import AsyncClient
from ._errors import (
    NOTHING_CREATED_CODES,
    APIConnectionError,
    APIError,
    AsyncSDKError,
    AuthenticationError,
    GenerationFailedError,
    GenerationTimeoutError,
    InsufficientCreditsError,
    JobExpiredError,
    NotFoundError,
    RateLimitError,
    SubmissionUnknownError,
)
from ._journal import Journal, JournalEntry, difference
from ._limits import Priority
from ._models import Generation
from ._submission import NotSentInTime, Reservation
from ._wire import converter

__all__ = [
    "AccountCheck",
    "AccountProgress",
    "BatchProgress",
    "BatchRunner",
    "Job",
    "JobResult",
]

logger = logging.getLogger("asyncsdk")

_Route = Callable[["Job", bool], Awaitable[bool]]
_Send = MemoryObjectSendStream["JobResult"]

#: Connection attempts that could not even open, in a row, after which an account is out.
_UNREACHABLE_AFTER: Final = 3
#: How many times one job may be handed back after 429s before it fails with the 429.
_BOUNCES_PER_ACCOUNT: Final = 3
#: Accounts whose balance and history are read at once by ``check_accounts()``.
_CHECK_CONCURRENCY: Final = 8


def _stable(value: object) -> object:
    """JSON-able stand-in for a job parameter, for the content hash and the journal."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(value)).hexdigest()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


@attrs.frozen(init=False)
class Job:
    """One generation to run: the arguments of :meth:`AsyncClient.submit`, and an id.

    >>> Job("google/nano-banana", "a red kite", aspect_ratio="16:9").id
    'job-289fb88ec70fd209b8d9'

    ``id`` defaults to a stable hash of the content, so the same job read again (from the same
    file, on a rerun) has the same id; give explicit ids when two jobs are meant to repeat.
    ``start_by`` (Unix time) is the latest moment the job may be sent: a job no account could
    start by then ends ``expired`` and is never paid for late.
    """

    model: str
    prompt: str
    id: str
    params: Mapping[str, Any] = attrs.field(eq=False)
    start_by: float | None = attrs.field(default=None, eq=False)

    def __init__(
        self,
        model: str,
        prompt: str,
        *,
        id: str | None = None,
        start_by: float | None = None,
        **params: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"Job.model must be a non-empty string, got {model!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Job.prompt must be a non-empty string, got {prompt!r}")
        if id is None:
            content = json.dumps([model, prompt, params], sort_keys=True, default=_stable)
            id = "job-" + hashlib.sha256(content.encode()).hexdigest()[:20]
        elif not isinstance(id, str) or not id:
            raise ValueError(f"Job.id must be a non-empty string, got {id!r}")
        if start_by is not None and not isinstance(start_by, (int, float)):
            raise TypeError(f"Job.start_by must be a Unix time in seconds, got {start_by!r}")
        self.__attrs_init__(
            model,
            prompt,
            id,
            MappingProxyType(dict(params)),
            None if start_by is None else float(start_by),
        )

    @property
    def tag(self) -> str:
        """The ``name`` the job's generation carries, by which a lost submission is found.

        The job's own ``name`` if it has one, else its id when that fits the service's 3-30
        characters, else a hash of the id.
        """
        given = self.params.get("name")
        if given:
            return str(given)
        if 3 <= len(self.id) <= 30:
            return self.id
        return "job-" + hashlib.sha256(self.id.encode()).hexdigest()[:20]

    @property
    def request(self) -> str:
        """What the job asks for, as canonical JSON (the journal keeps it to refuse a job
        changed under a known id). The id and ``start_by`` are not part of it."""
        return json.dumps(
            {"model": self.model, "prompt": self.prompt, "params": dict(self.params)},
            sort_keys=True,
            default=_stable,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @property
    def output_number(self) -> int:
        """How many images the job asks for (1 unless ``output_number`` says otherwise)."""
        number = self.params.get("output_number")
        return number if isinstance(number, int) and number > 0 else 1


class _Status(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    DOWNLOAD_FAILED = "download_failed"


def _is_account_failure(exc: BaseException) -> bool:
    """Errors that say the account, not the job, is unusable."""
    if isinstance(exc, (AuthenticationError, InsufficientCreditsError)):
        return True
    return isinstance(exc, NotFoundError) and exc.code == "ACCOUNT_NOT_FOUND"


def _is_final(exc: BaseException) -> bool:
    """Errors that are final for the job in this run: it is recorded ``failed`` (not sent
    back to ``pending``); see :func:`_is_retryable` for whether a later run may help."""
    if _is_account_failure(exc):
        return False
    if isinstance(exc, (GenerationFailedError, ValueError, TypeError, OSError)):
        return True
    if isinstance(exc, APIError):
        if exc.status is None:  # refused before sending (e.g. an image over the limit)
            return exc.code != "RATE_LIMIT_ERROR"
        return 400 <= exc.status < 500 and exc.status != 429
    return False


def _created_nothing(exc: BaseException) -> bool:
    """Errors of a submission after which nothing can have been created (or charged)."""
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    if isinstance(exc, APIError):
        if exc.status is None or 400 <= exc.status < 500:
            return True
        return exc.code in NOTHING_CREATED_CODES
    return isinstance(exc, (ValueError, TypeError, OSError))


def _is_retryable(exc: BaseException | None) -> bool:
    """Whether running the job again could succeed: the service failed (a failed generation
    is refunded), the network, the limits, a deadline; not a refused prompt or bad input."""
    if exc is None:
        return False
    code = getattr(exc, "code", None)
    if isinstance(exc, _EarlierFailure):
        return exc.retryable
    if isinstance(exc, (GenerationFailedError, GenerationTimeoutError, JobExpiredError)):
        return True
    if isinstance(exc, (APIConnectionError, RateLimitError)) or _is_account_failure(exc):
        return True
    if isinstance(exc, APIError):
        return exc.status is not None and exc.status >= 500
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return False
    return isinstance(exc, AsyncSDKError) and code is None


class _EarlierFailure(AsyncSDKError):
    """A job that failed in an earlier run, as the journal recorded it."""

    def __init__(self, message: str, code: str | None, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@attrs.frozen
class JobResult:
    """What became of one job.

    :ivar generation: the succeeded generation, or ``None`` (it is also set, with ``error``,
        when the generation succeeded and was paid for but its images could not be saved).
    :ivar error: why not, or ``None`` (a :class:`GenerationFailedError` carries the record).
    :ivar account: the label of the account that ran it.
    :ivar paths: the downloaded images, when the runner downloads.
    :ivar submitted_at: Unix time of the submission (``None`` if never submitted).
    :ivar elapsed: seconds from the submission (or the start of the attempt) to the end.
    :ivar from_journal: reported or resumed from an earlier run's journal.
    :ivar retryable: whether running the job again could succeed (a failed generation, the
        network, a deadline, images not saved), as opposed to a refused prompt or bad input.
    """

    job: Job
    generation: Generation | None = None
    error: BaseException | None = None
    account: str | None = None
    paths: tuple[Path, ...] = ()
    submitted_at: float | None = None
    finished_at: float = attrs.Factory(time.time)
    elapsed: float = 0.0
    from_journal: bool = False
    retryable: bool = attrs.Factory(lambda self: _is_retryable(self.error), takes_self=True)

    @property
    def ok(self) -> bool:
        return self.generation is not None and self.error is None

    @property
    def status(self) -> str:
        """``succeeded``, ``failed``, ``expired`` (never started: nothing paid) or
        ``download_failed`` (paid for; a rerun with the journal saves the images)."""
        if self.ok:
            return _Status.SUCCEEDED.value
        if isinstance(self.error, JobExpiredError):
            return _Status.EXPIRED.value
        if self.generation is not None:
            return _Status.DOWNLOAD_FAILED.value
        return _Status.FAILED.value

    @property
    def credits(self) -> int:
        """Credits the job's generation cost (a failed generation is refunded: 0)."""
        return (self.generation.credit_cost or 0) if self.generation is not None else 0


@attrs.frozen
class AccountProgress:
    """One account's line of the progress display."""

    label: str
    state: str
    done: int
    failed: int
    credits: int
    out: str | None
    balance: int | None = None


@attrs.frozen
class BatchProgress:
    """A snapshot of a running batch (see :meth:`BatchRunner.progress`).

    ``done``/``failed``/``expired`` count every result so far, including those served from
    the journal (``from_journal`` of them). ``spent``/``reserved`` are this run's credits:
    paid for, and held by generations in flight under ``max_credits``. ``stopped`` says why
    the run stopped before its last job, if it did.
    """

    seen: int
    done: int
    failed: int
    running: int
    accounts: tuple[AccountProgress, ...]
    elapsed: float
    expired: int = 0
    from_journal: int = 0
    spent: int = 0
    reserved: int = 0
    max_credits: int | None = None
    stopped: str | None = None


@attrs.frozen
class AccountCheck:
    """One account as :meth:`BatchRunner.check_accounts` found it.

    :ivar balance: credits the account can spend, or ``None`` if it could not be read.
    :ivar cheapest: the cheapest job of the batch as far as prices are known (credits).
    :ivar error: why the balance could not be read, if it could not.
    """

    label: str
    balance: int | None
    cheapest: int | None = None
    error: BaseException | None = None

    @property
    def can_afford(self) -> bool | None:
        """``False`` when the balance is below the cheapest job; ``None`` when unknown."""
        if self.balance is None:
            return None
        return self.balance >= (self.cheapest or 1)


@attrs.define(eq=False)
class _Account:
    client: AsyncClient
    label: str
    state: str = "idle"
    done: int = 0
    failed: int = 0
    credits: int = 0
    out: BaseException | None = None
    out_reason: str | None = None
    balance: int | None = None
    unreachable: int = 0

    @property
    def key(self) -> str:
        return self.client._account_key

    def take_out(self, exc: BaseException, reason: str | None = None) -> None:
        self.out = exc
        self.out_reason = reason or str(getattr(exc, "code", None) or exc)


class _Prices:
    """What each model costs, as far as seen: the highest credit cost per (model, images)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, int]] = {}

    def learn(self, model: str | None, images: int | None, cost: int | None) -> None:
        if not model or not isinstance(cost, int) or cost < 0:
            return
        per = self._seen.setdefault(model, {})
        number = images if isinstance(images, int) and images > 0 else 1
        per[number] = max(cost, per.get(number, 0))

    def learn_generation(self, generation: Generation) -> None:
        self.learn(generation.model_provider, generation.output_number, generation.credit_cost)

    def estimate(self, model: str, images: int = 1) -> int | None:
        """A cost that is not below the real one whether the price is per generation or per
        image; ``None`` when the model was never seen."""
        per = self._seen.get(model)
        if not per:
            return None
        return max(math.ceil(cost * max(1.0, images / seen)) for seen, cost in per.items())

    def cheapest(self) -> int | None:
        costs = [cost for per in self._seen.values() for cost in per.values()]
        return min(costs) if costs else None


class _Verdict(enum.Enum):
    GO = "go"
    WAIT = "wait"
    STOP = "stop"


class _Budget:
    """Credits spent and reserved in this run, against ``max_credits``."""

    def __init__(self, cap: int, prices: _Prices) -> None:
        self.cap = cap
        self.spent = 0
        self._prices = prices
        self._held: dict[str, int] = {}
        self._change: anyio.Event | None = None
        self.last_refusal = ""

    @property
    def reserved(self) -> int:
        return sum(self._held.values())

    def _changed(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = None

    def waiter(self) -> anyio.Event:
        """Set at the next change (a generation in flight ends or is priced)."""
        if self._change is None:
            self._change = anyio.Event()
        return self._change

    def reserve(self, job: Job) -> _Verdict:
        estimate = self._prices.estimate(job.model, job.output_number)
        reserved = self.reserved
        left = self.cap - self.spent - reserved
        if estimate is None:  # unknown price: run alone, with all that is left reserved
            if reserved:
                return _Verdict.WAIT
            if left <= 0:
                self.last_refusal = f"no credits left of max_credits={self.cap}"
                return _Verdict.STOP
            self._held[job.id] = left
            return _Verdict.GO
        if estimate <= left:
            self._held[job.id] = estimate
            return _Verdict.GO
        if reserved:
            return _Verdict.WAIT
        self.last_refusal = (
            f"the next job ({job.id}, {job.model}) costs about {estimate} credits and only "
            f"{max(left, 0)} of max_credits={self.cap} are left ({self.spent} spent)"
        )
        return _Verdict.STOP

    def created(self, job_id: str, cost: int | None) -> None:
        """The submission's answer states the price: hold exactly that."""
        if cost is not None and job_id in self._held:
            self._held[job_id] = cost
            self._changed()

    def ended(self, job_id: str, paid: int | None) -> None:
        """The job is over: it cost ``paid`` credits (``None``: nothing was created, or it
        was refunded; ``0``: unknown, so what was held for it counts as spent)."""
        held = self._held.pop(job_id, 0)
        if paid is not None:
            self.spent += paid or held
        self._changed()


class _Feed:
    """The shared queue: jobs handed back first, then the source, read lazily."""

    def __init__(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> None:
        self._source = _aiter(jobs)
        self._handed_back: collections.deque[Job] = collections.deque()
        self._exhausted = False
        self._halted = False
        self._in_flight = 0
        # anyio primitives bind to the running loop: made on first use.
        self._lock: anyio.Lock | None = None
        self._change: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._lookahead: Job | None = None
        self.seen = 0

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
        self._ready()
        assert self._lock is not None
        async with self._lock:
            if self._lookahead is None and not self._handed_back:
                self._lookahead = await self._next_source_job()
                if self._lookahead is not None:
                    self._changed()

    async def take(self, route: _Route) -> Job | anyio.Event | None:
        """The next job to submit; ``route(job, fresh)`` may deal with a job itself (returns
        False), ``fresh`` when it was not handed back.

        ``None`` once no job can come any more; an event to wait for when none is there now
        but a running job may still be handed back (the caller should not hold its
        account's slot meanwhile).
        """
        self._ready()
        assert self._lock is not None
        async with self._lock:
            while not self._halted:
                if self._handed_back:
                    again = self._handed_back.popleft()
                    if await route(again, False):
                        self._in_flight += 1
                        return again
                    continue
                job = await self._next_source_job()
                if job is None:
                    break
                if await route(job, True):
                    self._in_flight += 1
                    return job
        if self._in_flight and not self._halted:
            return self.change
        self._check_drained()
        return None

    def next_deadline(self) -> float | None:
        """The earliest start deadline among the jobs waiting at the head of the queue."""
        waiting = [*self._handed_back, *([self._lookahead] if self._lookahead else [])]
        deadlines = [job.start_by for job in waiting if job.start_by is not None]
        return min(deadlines) if deadlines else None

    async def expire_due(self, route: _Route) -> None:
        """Route the waiting jobs whose start deadline has passed (``route`` reports them),
        reading on through the source while the next one is past its deadline too."""
        self._ready()
        assert self._lock is not None
        async with self._lock:
            while not self._halted:
                now = time.time()
                due = [j for j in self._handed_back if j.start_by is not None and j.start_by <= now]
                for job in due:
                    self._handed_back.remove(job)
                    if await route(job, False):  # not due after all: keep it first in line
                        self._handed_back.appendleft(job)
                if self._lookahead is None and not self._handed_back:
                    self._lookahead = await self._next_source_job()
                head = self._lookahead
                if head is None or head.start_by is None or head.start_by > now:
                    break
                self._lookahead = None
                if await route(head, True):
                    self._handed_back.appendleft(head)
                    break
            self._changed()

    def _ready(self) -> None:
        if self._lock is None:
            self._lock, self._change, self._drained = anyio.Lock(), anyio.Event(), anyio.Event()

    @property
    def change(self) -> anyio.Event:
        """Set at the next change of the queue."""
        self._ready()
        assert self._change is not None
        return self._change

    @property
    def drained(self) -> anyio.Event:
        """Set once no job will ever be handed out again."""
        self._ready()
        assert self._drained is not None
        return self._drained

    def _check_drained(self) -> None:
        if self._halted or (
            self._exhausted
            and self._lookahead is None
            and not self._handed_back
            and not self._in_flight
        ):
            self.drained.set()

    def _changed(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = anyio.Event()
        self._check_drained()

    def finished(self) -> None:
        self._in_flight -= 1
        self._changed()

    def hand_back(self, job: Job) -> None:
        self._in_flight -= 1
        self._handed_back.appendleft(job)
        self._changed()

    def halt(self) -> None:
        """Hand out nothing more (the jobs not taken stay where they are: pending)."""
        self._halted = True
        self._changed()

    def leftovers(self) -> list[Job]:
        """Jobs taken from the source that no account ran."""
        jobs = list(self._handed_back)
        if self._lookahead is not None:
            jobs.append(self._lookahead)
        self._handed_back.clear()
        self._lookahead = None
        return jobs


async def _acquire_unless(client: AsyncClient, done: anyio.Event) -> Reservation | None:
    """An open reservation of the client's gate (batch lane), or ``None`` if ``done`` is
    set first. The caller closes it on every path (``close()`` settles what is open)."""
    reservation: Reservation | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def stop_when_done() -> None:
            await done.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_when_done)
        candidate = client.reserve(priority=Priority.BATCH)
        try:
            reservation = await candidate.__aenter__()
        except Exception as exc:  # raised below as itself, not inside an ExceptionGroup
            failure = exc
        finally:
            if reservation is None:
                await candidate.close()
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return reservation


def _job_options(job: Job) -> dict[str, Any]:
    """The job's arguments for :meth:`AsyncClient.submit`; the job id names the generation
    (as the prefix of its tag) unless the job names it."""
    options = dict(job.params)
    if not options.get("name") and len(job.id) >= 3:
        options["name"] = job.id[:30]
    return options


async def _aiter(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
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


def _check_directory(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written there (blocking)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(
            errno.ENOTDIR, "not a directory (images cannot be saved there)", str(directory)
        ) from None
    if not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory))
    fd, probe = tempfile.mkstemp(prefix=".asyncsdk-probe-", dir=directory)
    os.close(fd)
    os.unlink(probe)


def _duplicate_ids(jobs: Iterable[Job]) -> str | None:
    first: dict[str, int] = {}
    for number, job in enumerate(jobs, start=1):
        earlier = first.setdefault(job.id, number)
        if earlier != number:
            return (
                f"job id {job.id!r} is used by two jobs (numbers {earlier} and {number} of the"
                " list): give each job its own id"
            )
    return None


class BatchRunner:
    """Run many jobs across several accounts' clients, as fast as their limits allow.

    >>> async def main(client_a: AsyncClient, client_b: AsyncClient) -> None:  # doctest: +SKIP
    ...     runner = BatchRunner([client_a, client_b], journal="batch.sqlite", download_to="out")
    ...     async with contextlib.aclosing(runner.run(jobs)) as results:
    ...         async for result in results:
    ...             print(result.job.id, result.status, result.error)

    :param clients: one :class:`AsyncClient` per account (open or not; the runner does not
        close them).
    :param journal: path of the SQLite journal (or a :class:`Journal`) that makes the batch
        resumable; ``None`` runs without one.
    :param download_to: directory to save each succeeded job's images into, named
        ``<job id>-<n>.png`` (created, and checked writable, before anything is submitted);
        ``None`` downloads nothing.
    :param names: labels for the accounts in results and progress (default ``account 1``...).
    :param wait_timeout: give up watching a generation after this many seconds.
    :param max_credits: never submit a job that could take this run's spending past this
        many credits (see the module docstring); the run then stops cleanly and
        :attr:`stopped` says so.
    :param retry_failed: also run again the jobs the journal records as failed with an error
        that retrying could help (a failed generation, the network...); others are reported
        from the journal as before.
    """

    def __init__(
        self,
        clients: Iterable[AsyncClient],
        *,
        journal: str | os.PathLike[str] | Journal | None = None,
        download_to: str | os.PathLike[str] | None = None,
        names: Iterable[str] | None = None,
        wait_timeout: float | None = None,
        max_credits: int | None = None,
        retry_failed: bool = False,
    ) -> None:
        clients = list(clients)
        if not clients:
            raise ValueError("BatchRunner needs at least one client")
        labels = (
            list(names) if names is not None else [f"account {i + 1}" for i in range(len(clients))]
        )
        if len(labels) != len(clients):
            raise ValueError("names must give one label per client")
        if max_credits is not None and (
            not isinstance(max_credits, int) or isinstance(max_credits, bool) or max_credits < 0
        ):
            raise ValueError(f"max_credits must be an integer >= 0, got {max_credits!r}")
        if retry_failed and journal is None:
            raise ValueError("retry_failed needs a journal (it re-runs what the journal failed)")
        self._accounts = [_Account(c, label) for c, label in zip(clients, labels, strict=True)]
        by_key: dict[str, _Account] = {}
        for account in self._accounts:
            if by_key.setdefault(account.key, account) is not account:
                raise ValueError(
                    f"{account.label} uses the same account as {by_key[account.key].label}"
                )
        self._by_key = by_key
        self._owns_journal = journal is not None and not isinstance(journal, Journal)
        self._journal = (
            journal if isinstance(journal, Journal) or journal is None else Journal(journal)
        )
        self._download_to = Path(download_to) if download_to is not None else None
        self._wait_timeout = wait_timeout
        self._retry_failed = retry_failed
        self._prices = _Prices()
        self._prices_loaded = False
        self._checked: tuple[AccountCheck, ...] | None = None
        self._budget = _Budget(max_credits, self._prices) if max_credits is not None else None
        self._feed: _Feed | None = None
        self._send: _Send | None = None
        self._started = time.monotonic()
        self._running = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._bounces: collections.Counter[str] = collections.Counter()
        #: Why the run stopped before its last job (``max_credits``), or ``None``.
        self.stopped: str | None = None

    # -- what the batch will cost --------------------------------------------------------------
    async def _load_prices(self) -> None:
        if self._prices_loaded:
            return
        self._prices_loaded = True
        if self._journal is not None:
            for model, images, cost in await self._journal.costs():
                self._prices.learn(model, images, cost)

    def estimate(self, model: str, output_number: int = 1) -> int | None:
        """The credits a job of ``model`` is expected to cost at most, from the prices seen
        (the accounts' history after :meth:`check_accounts`, the journal, this run's
        submissions); ``None`` when the model's price was never seen."""
        return self._prices.estimate(model, output_number)

    async def check_accounts(
        self, jobs: Iterable[tuple[str, int]] | None = None
    ) -> tuple[AccountCheck, ...]:
        """Read every account's balance and recent history (no submission): learn the
        models' prices, and take out of the batch each account that cannot afford the
        cheapest job, or cannot be reached at all.

        :param jobs: the ``(model, output_number)`` pairs the batch will run, to know the
            cheapest job; by default the cheapest price seen.
        :returns: one :class:`AccountCheck` per account, in order. ``run()`` calls this
            itself when ``max_credits`` is set.
        """
        await self._load_prices()
        limiter = anyio.CapacityLimiter(_CHECK_CONCURRENCY)
        found: dict[int, tuple[int | None, BaseException | None]] = {}

        async def read_one(index: int, account: _Account) -> None:
            async with limiter:
                try:
                    info = await account.client.account()
                    page = await account.client.list_generations(limit=100)
                except AsyncSDKError as exc:
                    found[index] = (None, exc)
                    return
            for generation in page.generations:
                self._prices.learn_generation(generation)
            found[index] = (info.credits.total, None)

        async with anyio.create_task_group() as tg:
            for index, account in enumerate(self._accounts):
                tg.start_soon(read_one, index, account)
        pairs = list(jobs) if jobs is not None else []
        known = [e for e in (self._prices.estimate(m, n) for m, n in pairs) if e is not None]
        cheapest = min(known) if known else self._prices.cheapest()
        checks = []
        for index, account in enumerate(self._accounts):
            balance, error = found[index]
            account.balance = balance
            check = AccountCheck(account.label, balance, cheapest, error)
            if account.out is None:
                if check.can_afford is False:
                    account.take_out(
                        InsufficientCreditsError(
                            f"{balance} credits left, less than a job costs ({cheapest or 1})",
                            code="INSUFFICIENT_CREDITS",
                        ),
                        f"can't afford a job ({balance} credits)",
                    )
                elif isinstance(error, APIConnectionError) and not error.request_sent:
                    account.take_out(error, f"unreachable ({error})")
                elif error is not None and _is_account_failure(error):
                    account.take_out(error)
            if account.out is not None and check.can_afford is not True:
                logger.info("%s is out of the batch: %s", account.label, account.out_reason)
            checks.append(check)
        self._checked = tuple(checks)
        return self._checked

    # -- progress ------------------------------------------------------------------------------
    def progress(self) -> BatchProgress:
        """Where the batch stands, for progress displays."""
        accounts = tuple(
            AccountProgress(a.label, a.state, a.done, a.failed, a.credits, a.out_reason, a.balance)
            for a in self._accounts
        )
        counts = self._counts
        return BatchProgress(
            seen=self._feed.seen if self._feed else 0,
            done=counts[_Status.SUCCEEDED.value],
            failed=counts[_Status.FAILED.value] + counts[_Status.DOWNLOAD_FAILED.value],
            running=self._running,
            accounts=accounts,
            elapsed=time.monotonic() - self._started,
            expired=counts[_Status.EXPIRED.value],
            from_journal=counts["from_journal"],
            spent=self._budget.spent if self._budget else sum(a.credits for a in self._accounts),
            reserved=self._budget.reserved if self._budget else 0,
            max_credits=self._budget.cap if self._budget else None,
            stopped=self.stopped,
        )

    # -- the run -------------------------------------------------------------------------------
    async def run(
        self, jobs: Iterable[Job] | AsyncIterable[Job]
    ) -> AsyncGenerator[JobResult, None]:
        """Yield a :class:`JobResult` for every job, in the order they finish.

        :raises OSError: ``download_to`` cannot be created or written (before anything is
            submitted).
        :raises ValueError: a list of jobs uses an id twice, or has a job that the journal
            knows under its id with other content (before anything is submitted).
        :raises AsyncSDKError: every account was taken out (after the results of the jobs
            that ran).
        """
        self._started = time.monotonic()
        try:
            await self._preflight(jobs)
        except BaseException:
            if self._journal is not None and self._owns_journal:
                with anyio.CancelScope(shield=True):
                    await self._journal.aclose()
            raise
        send, receive = anyio.create_memory_object_stream[JobResult](max(16, len(self._accounts)))
        driver = asyncio.ensure_future(self._drive(jobs, send))
        try:
            async with receive:
                async for result in receive:
                    yield result
            await driver  # raises what stopped the batch, if anything did
        finally:
            if not driver.done():  # the caller left early: stop the workers
                driver.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await driver

    async def _preflight(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> None:
        """Everything that can refuse the batch before anything is paid."""
        if self._download_to is not None:
            await anyio.to_thread.run_sync(_check_directory, self._download_to)
        if isinstance(jobs, (list, tuple)):
            for job in jobs:
                if not isinstance(job, Job):
                    raise TypeError(f"jobs must be asyncsdk.Job objects, got {job!r}")
            duplicate = _duplicate_ids(jobs)
            if duplicate is not None:
                raise ValueError(duplicate)
            if self._journal is not None:
                checked = await self._journal.check([(j.id, j.request, None) for j in jobs])
                if checked.changed is not None:
                    raise ValueError(self._changed_message(*checked.changed))
        if self._budget is not None and self._checked is None:
            pairs = (
                [(j.model, j.output_number) for j in jobs]
                if isinstance(jobs, (list, tuple))
                else None
            )
            await self.check_accounts(pairs)

    def _changed_message(self, job_id: str, what: str) -> str:
        where = f" {self._journal.path}" if self._journal is not None else ""
        return (
            f"job {job_id!r} differs from the job recorded under that id in the journal{where}"
            f" ({what}): give the changed job a new id, or use another journal; it was not"
            " run, so that it is not served the old result"
        )

    async def _emit(self, result: JobResult) -> None:
        self._counts[result.status] += 1
        if result.from_journal:
            self._counts["from_journal"] += 1
        assert self._send is not None
        await self._send.send(result)

    # -- the driver (a separate task: its task group never spans a yield) ----------------------
    async def _drive(self, jobs: Iterable[Job] | AsyncIterable[Job], send: _Send) -> None:
        self._feed = feed = _Feed(jobs)
        self._send = send
        async with send:
            try:
                await self._load_prices()
                async with anyio.create_task_group() as outer:
                    resumable = await self._recover()
                    seen: set[str] = set()
                    async with anyio.create_task_group() as tg:

                        async def route(job: Job, fresh: bool) -> bool:
                            """Deal with a job the journal knows, a duplicate, a job past
                            its start deadline; True: it is to be submitted now."""
                            if fresh:
                                handled = await self._route_known(job, seen, resumable, tg)
                                if handled:
                                    return False
                            if job.start_by is not None and time.time() >= job.start_by:
                                await self._expire(job)
                                return False
                            return True

                        outer.start_soon(self._sweep, feed, route)
                        for account in self._accounts:
                            for _ in range(account.client.limits.concurrent):
                                tg.start_soon(self._worker, account, feed, route)
                    outer.cancel_scope.cancel()
            finally:
                if self._journal is not None and self._owns_journal:
                    with anyio.CancelScope(shield=True):
                        await self._journal.aclose()
            if feed.drained.is_set():
                return
            causes = [a.out for a in self._accounts if a.out is not None]
            for job in feed.leftovers():
                await self._emit(JobResult(job, error=causes[-1] if causes else None))
            raise AsyncSDKError(self._all_out_message()) from (causes[-1] if causes else None)

    def _all_out_message(self) -> str:
        reasons = [a.out_reason or "?" for a in self._accounts]
        if len(set(reasons)) == 1 and len(reasons) > 1:
            why = f"all {len(reasons)}: {reasons[0]}"
        else:
            why = "; ".join(f"{a.label}: {r}" for a, r in zip(self._accounts, reasons, strict=True))
        message = f"every account was taken out of the batch ({why})"
        if self._journal is not None:
            message += "; the jobs not run are still pending in the journal"
        return message

    async def _route_known(
        self,
        job: Job,
        seen: set[str],
        resumable: dict[str, JournalEntry],
        tg: TaskGroup,
    ) -> bool:
        """Report or resume a job that needs no new submission; True when dealt with."""
        if job.id in seen:
            error = ValueError(
                f"job id {job.id!r} was already used by an earlier job of this batch;"
                " not run (give each job its own id)"
            )
            await self._emit(JobResult(job, error=error))
            return True
        seen.add(job.id)
        entry = resumable.pop(job.id, None)
        if entry is None and self._journal is not None:
            entry = await self._journal.get(job.id)
        if entry is None:
            return False
        what = difference(job.request, entry)
        if what is not None:
            await self._emit(JobResult(job, error=ValueError(self._changed_message(job.id, what))))
            return True
        if entry.state in ("submitting", "submitted"):
            self._running += 1
            tg.start_soon(self._resume, job, entry)
            return True
        if entry.state in ("downloading", "download_failed"):
            self._running += 1
            tg.start_soon(self._download_again, job, entry)
            return True
        if entry.state == "pending":
            return False
        if entry.state == "failed" and self._retry_failed and entry.retryable:
            return False
        await self._emit(self._from_journal(job, entry))
        return True

    async def _expire(self, job: Job) -> None:
        assert job.start_by is not None
        error = JobExpiredError(job.id, job.start_by)
        if self._journal is not None:
            await self._journal.pending(job.id, str(error), request=job.request)
        await self._emit(JobResult(job, error=error))

    async def _sweep(self, feed: _Feed, route: _Route) -> None:
        """Report jobs whose start deadline passed while every account was busy."""
        while not feed.drained.is_set():
            await feed.look_ahead()  # the next job's deadline is known while all are busy
            change = feed.change
            due = feed.next_deadline()
            if due is not None and time.time() >= due:
                await feed.expire_due(route)
                continue
            with anyio.move_on_after(None if due is None else due - time.time()):
                await change.wait()

    async def _recover(self) -> dict[str, JournalEntry]:
        """Before any new submission: settle what an earlier run left in flight.

        A row in ``submitting`` is looked up by its tag: adopted when the service has it,
        back to ``pending`` when not. A running generation holds its account's slot again.
        """
        resumable: dict[str, JournalEntry] = {}
        for entry in await self._journal.in_flight() if self._journal else []:
            account = self._by_key.get(entry.account or "")
            if account is None:  # the account is not in this run: leave the row alone
                resumable[entry.id] = entry
                continue
            if entry.state == "submitting":
                try:
                    found = await account.client.reconcile(
                        entry.tag or "", sent_at=entry.sent_at or 0.0
                    )
                except SubmissionUnknownError:  # the row stays: a later run looks again
                    resumable[entry.id] = entry
                    continue
                assert self._journal is not None
                if found is None:
                    await self._journal.pending(entry.id, "not created before the interruption")
                    continue
                await self._journal.submitted(entry.id, found.generation_id)
                entry = attrs.evolve(entry, state="submitted", generation_id=found.generation_id)
            if entry.generation_id:
                await account.client.gate.hold_foreign(entry.generation_id)
                resumable[entry.id] = entry
        return resumable

    async def _worker(self, account: _Account, feed: _Feed, route: _Route) -> None:
        """One slot of one account: take a job whenever the account can start one."""
        client = account.client
        while account.out is None:
            account.state = "waiting"
            await feed.look_ahead()
            reservation = await _acquire_unless(client, feed.drained)
            if reservation is None:  # every job is done: don't wait for a window to learn it
                break
            try:
                job = await feed.take(route)
            except BaseException:
                await reservation.close()
                raise
            if not isinstance(job, Job):
                await reservation.close()  # don't keep the account's slot while idle
                if job is None:
                    break
                await job.wait()  # a job may yet be handed back by another account
                continue
            if self._budget is not None:
                verdict = self._budget.reserve(job)
                if verdict is not _Verdict.GO:
                    wake = self._budget.waiter()
                    feed.hand_back(job)
                    await reservation.close()
                    if verdict is _Verdict.STOP:
                        self._halt(self._budget.last_refusal)
                        break
                    account.state = "waiting (budget)"
                    await wake.wait()  # a generation in flight ends or is priced
                    continue
            self._running += 1
            try:
                result = await self._run_job(account, job, reservation)
            finally:
                self._running -= 1
                await reservation.close()
            if result is None:  # not sent: back to the queue for whichever account is free
                feed.hand_back(job)
                continue
            feed.finished()
            await self._emit(result)
        account.state = "out" if account.out is not None else "done"

    def _halt(self, reason: str) -> None:
        assert self._feed is not None
        if self.stopped is None:
            self.stopped = f"stopped before the budget ran out: {reason}"
            logger.info("batch %s", self.stopped)
        self._feed.halt()
        if self._budget is not None:
            self._budget.waiter().set()

    async def _run_job(
        self, account: _Account, job: Job, reservation: Reservation
    ) -> JobResult | None:
        """Submit, wait and download one job; ``None`` when it was not sent and goes back to
        the queue (its account was taken out, or answered 429).

        The request carries a fresh tag, written to the journal before it is sent; an
        outcome the protocol could not settle leaves the row ``submitting`` for a rerun.
        """
        client, journal = account.client, self._journal
        started = time.time()
        account.state = "submitting"
        try:
            request = await client._request(job.model, job.prompt, **_job_options(job))
            if job.start_by is not None and time.time() >= job.start_by:
                await reservation.close()  # never sent late: nothing is paid
                return await self._expired(account, job)
            if journal is not None:
                await journal.submitting(
                    job.id, account=account.key, tag=request.tag, prompt=job.prompt,
                    request=job.request,
                )  # fmt: skip
            submission = await client._submissions.submit(
                request, reservation=reservation, raise_rate_limited=True,
                not_after=job.start_by,
            )  # fmt: skip
        except NotSentInTime:  # no try of it went out after the deadline
            return await self._expired(account, job)
        except SubmissionUnknownError as exc:
            # The row stays "submitting": a rerun looks for the tag again, never resends.
            if self._budget is not None:
                self._budget.ended(job.id, 0)
            account.failed += 1
            account.state = "idle"
            return JobResult(
                job, error=exc, account=account.label, submitted_at=exc.sent_at,
                elapsed=time.time() - started,
            )  # fmt: skip
        except Exception as exc:
            if self._budget is not None:
                self._budget.ended(job.id, None if _created_nothing(exc) else 0)
            if self._not_sent(account, job, exc):
                if journal is not None:
                    await journal.pending(job.id, str(exc), request=job.request)
                return None
            return await self._failed(account, job, exc, started, created=False)
        account.unreachable = 0
        self._prices.learn(job.model, job.output_number, submission.credit_cost)
        if self._budget is not None:
            self._budget.created(job.id, submission.credit_cost)
        if journal is not None:
            await journal.submitted(job.id, submission.generation_id)
        return await self._finish(account, job, submission.generation_id, started)

    async def _expired(self, account: _Account, job: Job) -> JobResult:
        """The job could not be sent by its ``start_by``: nothing was paid."""
        assert job.start_by is not None
        if self._budget is not None:
            self._budget.ended(job.id, None)
        account.state = "idle"
        error = JobExpiredError(job.id, job.start_by)
        if self._journal is not None:
            await self._journal.pending(job.id, str(error), request=job.request)
        return JobResult(job, error=error, account=account.label)

    def _not_sent(self, account: _Account, job: Job, exc: Exception) -> bool:
        """Whether ``exc`` (from a submission that created nothing) sends the job back to the
        queue rather than failing it; takes the account out when the account is the cause."""
        if _is_account_failure(exc):
            account.take_out(exc)
            return True
        if isinstance(exc, APIConnectionError) and not exc.request_sent:
            # The connection could not even open (refused, DNS): each raised error stands
            # for the client's retries too.
            account.unreachable += account.client.max_retries + 1
            if account.unreachable >= _UNREACHABLE_AFTER:
                account.take_out(exc, f"unreachable ({exc})")
            return True
        if isinstance(exc, RateLimitError) and (exc.status == 429 or exc.status is None):
            # The window was filled elsewhere (or the slot taken): another account may start
            # the job now, this one once its gate has room again.
            self._bounces[job.id] += 1
            return self._bounces[job.id] <= _BOUNCES_PER_ACCOUNT * len(self._accounts)
        return False

    async def _finish(
        self, account: _Account, job: Job, generation_id: str, submitted_at: float
    ) -> JobResult:
        """Watch a created generation to its end, download, record."""
        client = account.client

        def show(generation: Generation) -> None:
            account.state = generation.status.value

        try:
            generation = await client.wait(
                generation_id, timeout=self._wait_timeout, on_update=show
            )
        except Exception as exc:
            if self._budget is not None:  # a failed generation is refunded; else assume paid
                self._budget.ended(job.id, None if isinstance(exc, GenerationFailedError) else 0)
            if _is_account_failure(exc):
                account.take_out(exc)  # e.g. the key was revoked while the generation ran
            return await self._failed(account, job, exc, submitted_at, created=True)
        self._prices.learn_generation(generation)
        if self._budget is not None:
            self._budget.ended(job.id, generation.credit_cost or 0)
        account.credits += generation.credit_cost or 0
        result = await self._save(account.client, job, generation, account.label, submitted_at)
        account.state = "idle"
        if result.ok:
            account.done += 1
        else:
            account.failed += 1
        return result

    async def _save(
        self,
        client: AsyncClient,
        job: Job,
        generation: Generation,
        label: str | None,
        submitted_at: float | None,
        *,
        from_journal: bool = False,
    ) -> JobResult:
        """Download a succeeded generation's images (if asked to) and record the job."""
        journal = self._journal
        record = converter.unstructure(generation)
        paths: list[Path] = []
        try:
            if self._download_to is not None:
                if journal is not None:
                    await journal.downloading(job.id, record)
                paths = await client.download(generation, self._download_to, prefix=job.id)
        except Exception as exc:  # paid for: recorded so that a rerun saves the images
            if journal is not None:
                await journal.download_failed(job.id, str(exc), getattr(exc, "code", None))
            return JobResult(
                job,
                generation,
                error=exc,
                account=label,
                submitted_at=submitted_at,
                elapsed=time.time() - (submitted_at or time.time()),
                from_journal=from_journal,
                retryable=True,
            )
        if journal is not None:
            await journal.succeeded(job.id, record, [str(p) for p in paths])
        return JobResult(
            job,
            generation,
            account=label,
            paths=tuple(paths),
            submitted_at=submitted_at,
            elapsed=time.time() - (submitted_at or time.time()),
            from_journal=from_journal,
        )

    async def _failed(
        self, account: _Account, job: Job, exc: Exception, started: float, *, created: bool
    ) -> JobResult:
        account.failed += 1
        account.state = "idle"
        retryable = _is_retryable(exc)
        if self._journal is not None:
            if _is_final(exc):
                record = (
                    converter.unstructure(exc.generation)
                    if isinstance(exc, GenerationFailedError)
                    else None
                )
                await self._journal.failed(
                    job.id, str(exc), getattr(exc, "code", None), record,
                    retryable=retryable, request=job.request,
                )  # fmt: skip
            elif not created:
                await self._journal.pending(job.id, str(exc), request=job.request)
            # else the generation exists: the row stays "submitted" and a rerun watches it.
        return JobResult(
            job,
            error=exc,
            account=account.label,
            submitted_at=started if created else None,
            elapsed=time.time() - started,
            retryable=retryable,
        )

    async def _resume(self, job: Job, entry: JournalEntry) -> None:
        """Report a job an earlier run submitted: watch its generation to the end."""
        account = self._by_key.get(entry.account or "")
        try:
            if account is None or entry.generation_id is None:
                error = AsyncSDKError(
                    f"job {job.id} was submitted in an earlier run on an account that is not"
                    " in this one; run with that account to collect it (it is never resubmitted)"
                )
                result = JobResult(job, error=error, submitted_at=entry.sent_at)
            else:
                result = await self._finish(
                    account, job, entry.generation_id, entry.sent_at or time.time()
                )
        finally:
            self._running -= 1
        await self._emit(attrs.evolve(result, from_journal=True))

    async def _download_again(self, job: Job, entry: JournalEntry) -> None:
        """A job an earlier run paid for but whose images were not saved: save them now."""
        owner = self._by_key.get(entry.account or "")
        label = owner.label if owner else None
        try:
            assert entry.record is not None
            generation = converter.structure(entry.record, Generation)
            if self._download_to is None:  # nothing to save now: reported as it stands
                result = JobResult(
                    job, generation, account=label, submitted_at=entry.sent_at, from_journal=True
                )
            else:
                client = (owner or self._accounts[0]).client
                if owner is not None:  # fresh image URLs, if the record's have expired
                    with contextlib.suppress(AsyncSDKError):
                        generation = await client.get_generation(generation.generation_id)
                result = await self._save(
                    client, job, generation, label, entry.sent_at, from_journal=True
                )
        finally:
            self._running -= 1
        await self._emit(result)

    def _from_journal(self, job: Job, entry: JournalEntry) -> JobResult:
        """A job an earlier run finished."""
        account = self._by_key.get(entry.account or "")
        label = account.label if account else None
        generation = (
            converter.structure(entry.record, Generation) if entry.record is not None else None
        )
        if entry.state == "succeeded" and generation is not None:
            paths = tuple(Path(p) for p in entry.paths)
            return JobResult(
                job, generation, account=label, paths=paths, submitted_at=entry.sent_at,
                from_journal=True,
            )  # fmt: skip
        retryable = bool(entry.retryable)
        error: BaseException = (
            GenerationFailedError(generation)
            if generation is not None
            else _EarlierFailure(
                f"failed in an earlier run: {entry.error}", entry.error_code, retryable
            )
        )
        return JobResult(
            job,
            error=error,
            account=label,
            submitted_at=entry.sent_at,
            from_journal=True,
            retryable=retryable,
        )
