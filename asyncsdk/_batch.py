"""Batch jobs across many accounts: ``Job``, ``JobResult`` and ``BatchRunner``.

Scheduling is pull-based, so that a job goes to whichever account can start it soonest::

    account A worker: gate.acquire() ──► next job ──► submit ─► wait ─► download ─► result
    account B worker: gate.acquire() ──► next job ──► ...            (one worker per slot)
                            ▲
          jobs (list, iterable or async iterable; read lazily, one at a time)
          + jobs handed back by an account that was taken out

A worker first waits for its account's gate to admit a submission (free slot, room in the
window) and only then takes the next job, so no job waits behind a busy account while another
is free, and every account stays busy while work remains. An account that fails for account
reasons (authentication, credits, account gone) is taken out: the job it held goes back to
the queue for the others. A job's own failure (content policy, validation, a failed
generation) is reported in its :class:`JobResult` and the batch goes on.

With a journal (:mod:`asyncsdk._journal`), a rerun of the same jobs never pays twice: finished
jobs are reported from the journal, submitted ones are watched to their end, submissions cut
off before their answer was recorded are found by their tag, and only the rest is submitted.

``run()`` yields results as they complete. The workers live in a task group inside a separate
task, never around the generator's ``yield``; leaving the loop early (``break``, an exception,
``aclose()``) cancels them, and every journal row stays in a state a rerun can resume from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
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
from typing import Any

import anyio
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._client import AsyncClient
from ._errors import (
    APIError,
    AsyncSDKError,
    AuthenticationError,
    GenerationFailedError,
    InsufficientCreditsError,
    NotFoundError,
)
from ._journal import Journal, JournalEntry
from ._limits import Permit
from ._models import Generation
from ._wire import converter

__all__ = ["AccountProgress", "BatchProgress", "BatchRunner", "Job", "JobResult"]

_Route = Callable[["Job"], Awaitable[bool]]
_Send = MemoryObjectSendStream["JobResult"]


def _stable(value: object) -> object:
    """JSON-able stand-in for a job parameter, for the content hash."""
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
    """

    model: str
    prompt: str
    id: str
    params: Mapping[str, Any] = attrs.field(eq=False)

    def __init__(self, model: str, prompt: str, *, id: str | None = None, **params: Any) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"Job.model must be a non-empty string, got {model!r}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"Job.prompt must be a non-empty string, got {prompt!r}")
        if id is None:
            content = json.dumps([model, prompt, params], sort_keys=True, default=_stable)
            id = "job-" + hashlib.sha256(content.encode()).hexdigest()[:20]
        elif not isinstance(id, str) or not id:
            raise ValueError(f"Job.id must be a non-empty string, got {id!r}")
        self.__attrs_init__(model, prompt, id, MappingProxyType(dict(params)))

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


@attrs.frozen
class JobResult:
    """What became of one job.

    :ivar generation: the succeeded generation, or ``None``.
    :ivar error: why not, or ``None`` (a :class:`GenerationFailedError` carries the record).
    :ivar account: the label of the account that ran it.
    :ivar paths: the downloaded images, when the runner downloads.
    :ivar submitted_at: Unix time of the submission (``None`` if never submitted).
    :ivar elapsed: seconds from the submission (or the start of the attempt) to the end.
    :ivar from_journal: reported or resumed from an earlier run's journal.
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

    @property
    def ok(self) -> bool:
        return self.generation is not None and self.error is None

    @property
    def credits(self) -> int:
        """Credits the job cost (failed generations are refunded)."""
        return (self.generation.credit_cost or 0) if self.ok and self.generation else 0


@attrs.frozen
class AccountProgress:
    """One account's line of the progress display."""

    label: str
    state: str
    done: int
    failed: int
    credits: int
    out: str | None


@attrs.frozen
class BatchProgress:
    """A snapshot of a running batch (see :meth:`BatchRunner.progress`)."""

    seen: int
    done: int
    failed: int
    running: int
    accounts: tuple[AccountProgress, ...]
    elapsed: float


def _is_account_failure(exc: BaseException) -> bool:
    """Errors that say the account, not the job, is unusable."""
    if isinstance(exc, (AuthenticationError, InsufficientCreditsError)):
        return True
    return isinstance(exc, NotFoundError) and exc.code == "ACCOUNT_NOT_FOUND"


def _is_final(exc: BaseException) -> bool:
    """Errors that are final for the job: running it again would fail the same way."""
    if _is_account_failure(exc):
        return False
    if isinstance(exc, (GenerationFailedError, ValueError, TypeError, OSError)):
        return True
    if isinstance(exc, APIError):
        if exc.status is None:  # refused before sending (e.g. an image over the limit)
            return exc.code != "RATE_LIMIT_ERROR"
        return 400 <= exc.status < 500 and exc.status != 429
    return False


@attrs.define(eq=False)
class _Account:
    client: AsyncClient
    label: str
    state: str = "idle"
    done: int = 0
    failed: int = 0
    credits: int = 0
    out: BaseException | None = None

    @property
    def key(self) -> str:
        return self.client._account_key


class _Feed:
    """The shared queue: jobs handed back first, then the source, read lazily."""

    def __init__(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> None:
        self._source = _aiter(jobs)
        self._handed_back: collections.deque[Job] = collections.deque()
        self._exhausted = False
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
        if self._exhausted:
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
        before a worker waits for its account's window only to find nothing left."""
        self._ready()
        assert self._lock is not None
        async with self._lock:
            if self._lookahead is None and not self._handed_back:
                self._lookahead = await self._next_source_job()

    async def take(self, route: _Route) -> Job | anyio.Event | None:
        """The next job to submit; ``route(job)`` may deal with a job itself (returns False).

        ``None`` once no job can come any more; an event to wait for when none is there now
        but a running job may still be handed back (the caller should not hold its
        account's slot meanwhile).
        """
        self._ready()
        assert self._lock is not None
        async with self._lock:
            while True:
                if self._handed_back:
                    self._in_flight += 1
                    return self._handed_back.popleft()
                job = await self._next_source_job()
                if job is None:
                    break
                if await route(job):
                    self._in_flight += 1
                    return job
        if self._in_flight:
            return self._change
        self._check_drained()
        return None

    def _ready(self) -> None:
        if self._lock is None:
            self._lock, self._change, self._drained = anyio.Lock(), anyio.Event(), anyio.Event()

    @property
    def drained(self) -> anyio.Event:
        """Set once no job will ever be handed out again."""
        self._ready()
        assert self._drained is not None
        return self._drained

    def _check_drained(self) -> None:
        if (
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

    def leftovers(self) -> list[Job]:
        """Jobs taken from the source that no account ran."""
        jobs = list(self._handed_back)
        if self._lookahead is not None:
            jobs.append(self._lookahead)
        self._handed_back.clear()
        self._lookahead = None
        return jobs


async def _acquire_unless(client: AsyncClient, done: anyio.Event) -> Permit | None:
    """A permit from the client's gate, or ``None`` if ``done`` is set first."""
    permit: Permit | None = None
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def stop_when_done() -> None:
            await done.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_when_done)
        try:
            permit = await client.gate.acquire(probe=client._probe)
        except Exception as exc:  # raised below as itself, not inside an ExceptionGroup
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return permit


async def _aiter(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    if isinstance(jobs, AsyncIterable):
        async for job in jobs:
            yield job
    else:
        for job in jobs:
            yield job


class BatchRunner:
    """Run many jobs across several accounts' clients, as fast as their limits allow.

    >>> async def main(client_a: AsyncClient, client_b: AsyncClient) -> None:  # doctest: +SKIP
    ...     runner = BatchRunner([client_a, client_b], journal="batch.sqlite", download_to="out")
    ...     async with contextlib.aclosing(runner.run(jobs)) as results:
    ...         async for result in results:
    ...             print(result.job.id, result.ok, result.error)

    :param clients: one :class:`AsyncClient` per account (open or not; the runner does not
        close them).
    :param journal: path of the SQLite journal (or a :class:`Journal`) that makes the batch
        resumable; ``None`` runs without one.
    :param download_to: directory to save each succeeded job's images into, named
        ``<job id>-<n>.png``; ``None`` downloads nothing.
    :param names: labels for the accounts in results and progress (default ``account 1``...).
    :param wait_timeout: give up watching a generation after this many seconds.
    """

    def __init__(
        self,
        clients: Iterable[AsyncClient],
        *,
        journal: str | os.PathLike[str] | Journal | None = None,
        download_to: str | os.PathLike[str] | None = None,
        names: Iterable[str] | None = None,
        wait_timeout: float | None = None,
    ) -> None:
        clients = list(clients)
        if not clients:
            raise ValueError("BatchRunner needs at least one client")
        labels = (
            list(names) if names is not None else [f"account {i + 1}" for i in range(len(clients))]
        )
        if len(labels) != len(clients):
            raise ValueError("names must give one label per client")
        self._accounts = [_Account(c, label) for c, label in zip(clients, labels, strict=True)]
        by_key: dict[str, _Account] = {}
        for account in self._accounts:
            if by_key.setdefault(account.key, account) is not account:
                raise ValueError(
                    f"{account.label} uses the same account as {by_key[account.key].label}"
                )
        self._by_key = by_key
        self._journal = (
            journal if isinstance(journal, Journal) or journal is None else Journal(journal)
        )
        self._download_to = Path(download_to) if download_to is not None else None
        self._wait_timeout = wait_timeout
        self._feed: _Feed | None = None
        self._started = time.monotonic()
        self._running = 0

    def progress(self) -> BatchProgress:
        """Where the batch stands, for progress displays."""
        accounts = tuple(
            AccountProgress(
                a.label,
                a.state,
                a.done,
                a.failed,
                a.credits,
                None if a.out is None else str(getattr(a.out, "code", None) or a.out),
            )
            for a in self._accounts
        )
        return BatchProgress(
            seen=self._feed.seen if self._feed else 0,
            done=sum(a.done for a in self._accounts),
            failed=sum(a.failed for a in self._accounts),
            running=self._running,
            accounts=accounts,
            elapsed=time.monotonic() - self._started,
        )

    async def run(
        self, jobs: Iterable[Job] | AsyncIterable[Job]
    ) -> AsyncGenerator[JobResult, None]:
        """Yield a :class:`JobResult` for every job, in the order they finish."""
        self._started = time.monotonic()
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

    # -- the driver (a separate task: its task group never spans a yield) ----------------------
    async def _drive(self, jobs: Iterable[Job] | AsyncIterable[Job], send: _Send) -> None:
        self._feed = feed = _Feed(jobs)
        async with send:
            try:
                async with anyio.create_task_group() as tg:
                    resumable = await self._recover()

                    async def route(job: Job) -> bool:
                        """Deal with a job the journal knows; True: it is to be submitted."""
                        entry = resumable.pop(job.id, None)
                        if entry is not None:
                            self._running += 1
                            tg.start_soon(self._resume, job, entry, send)
                            return False
                        entry = await self._journal.get(job.id) if self._journal else None
                        if entry is None or entry.state == "pending":
                            return True
                        await send.send(self._from_journal(job, entry))
                        return False

                    for account in self._accounts:
                        for _ in range(account.client.limits.concurrent):
                            tg.start_soon(self._worker, account, feed, route, send)
            finally:
                if self._journal is not None:
                    with anyio.CancelScope(shield=True):
                        await self._journal.aclose()
            if feed.drained.is_set():
                return
            causes = [a.out for a in self._accounts if a.out is not None]
            for job in feed.leftovers():
                await send.send(JobResult(job, error=causes[-1] if causes else None))
            raise AsyncSDKError(
                "every account was taken out of the batch ("
                + "; ".join(f"{a.label}: {a.out}" for a in self._accounts)
                + "); the jobs not run are still pending in the journal"
            ) from (causes[-1] if causes else None)

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
                found = await account.client.find_submission(
                    entry.tag or "", entry.prompt or "", since=entry.sent_at or 0.0
                )
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

    async def _worker(self, account: _Account, feed: _Feed, route: _Route, send: _Send) -> None:
        """One slot of one account: take a job whenever the account can start one."""
        client = account.client
        while account.out is None:
            account.state = "waiting"
            await feed.look_ahead()
            permit = await _acquire_unless(client, feed.drained)
            if permit is None:  # every job is done: don't wait for a window to learn it
                break
            try:
                job = await feed.take(route)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await permit.discard()
                raise
            if not isinstance(job, Job):
                await permit.discard()  # don't keep the account's slot while idle
                if job is None:
                    break
                await job.wait()  # a job may yet be handed back by another account
                continue
            self._running += 1
            try:
                result = await self._run_job(account, job, permit)
            finally:
                self._running -= 1
            if result is None:  # the account was taken out; another one will run the job
                feed.hand_back(job)
                break
            feed.finished()
            await send.send(result)
        account.state = "out" if account.out is not None else "done"

    async def _run_job(self, account: _Account, job: Job, permit: Permit) -> JobResult | None:
        """Submit, wait and download one job; ``None`` when the account was taken out."""
        client, journal = account.client, self._journal
        started = time.time()
        account.state = "submitting"
        try:
            try:
                body = await client._prepare(
                    job.model, job.prompt, **{**job.params, "name": job.tag}
                )
            except BaseException:
                await permit.discard()
                raise
            if journal is not None:
                await journal.submitting(
                    job.id, account=account.key, tag=job.tag, prompt=job.prompt
                )
            submission = await client._submit(job.model, body, permit=permit)
        except Exception as exc:
            if _is_account_failure(exc):  # raised before anything was created
                account.out = exc
                if journal is not None:
                    await journal.pending(job.id, str(exc))
                return None
            return await self._failed(account, job, exc, started, created=False)
        if journal is not None:
            await journal.submitted(job.id, submission.generation_id)
        return await self._finish(account, job, submission.generation_id, started)

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
            paths: list[Path] = []
            if self._download_to is not None:
                account.state = "downloading"
                paths = await client.download(generation, self._download_to, prefix=job.id)
            if self._journal is not None:
                record = converter.unstructure(generation)
                await self._journal.succeeded(job.id, record, [str(p) for p in paths])
        except Exception as exc:
            if _is_account_failure(exc):
                account.out = exc  # e.g. the key was revoked while the generation ran
            return await self._failed(account, job, exc, submitted_at, created=True)
        account.done += 1
        account.credits += generation.credit_cost or 0
        account.state = "idle"
        return JobResult(
            job,
            generation,
            account=account.label,
            paths=tuple(paths),
            submitted_at=submitted_at,
            elapsed=time.time() - submitted_at,
        )

    async def _failed(
        self, account: _Account, job: Job, exc: Exception, started: float, *, created: bool
    ) -> JobResult:
        account.failed += 1
        account.state = "idle"
        if self._journal is not None:
            if _is_final(exc):
                record = (
                    converter.unstructure(exc.generation)
                    if isinstance(exc, GenerationFailedError)
                    else None
                )
                await self._journal.failed(job.id, str(exc), getattr(exc, "code", None), record)
            elif not created:
                await self._journal.pending(job.id, str(exc))
            # else the generation exists: the row stays "submitted" and a rerun watches it.
        return JobResult(
            job,
            error=exc,
            account=account.label,
            submitted_at=started if created else None,
            elapsed=time.time() - started,
        )

    async def _resume(self, job: Job, entry: JournalEntry, send: _Send) -> None:
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
        await send.send(attrs.evolve(result, from_journal=True))

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
        error: BaseException = (
            GenerationFailedError(generation)
            if generation is not None
            else AsyncSDKError(f"failed in an earlier run: {entry.error}")
        )
        return JobResult(
            job, error=error, account=label, submitted_at=entry.sent_at, from_journal=True
        )
