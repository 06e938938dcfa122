"""``BatchRunner``: many jobs across many accounts, as fast as their limits allow.

Where the pieces live: the jobs, results and error policy in :mod:`asyncsdk._jobs`, the job
queue in :mod:`asyncsdk._queue`, the prices and the credit cap in :mod:`asyncsdk._budget`, the
journal in :mod:`asyncsdk._journal`. This module runs the accounts' workers and resumes from
the journal.

Scheduling is pull-based, so that a job goes to whichever account can start it soonest::

    account A worker: gate.reserve() ──► queue.take() ──► submit ─► wait ─► download ─► result
    account B worker: gate.reserve() ──► queue.take() ──► ...        (one worker per slot)
                                              ▲
          jobs (list, iterable or async iterable; read lazily, one at a time)
          + jobs handed back (an account taken out, a 429, a budget wait)

A worker first waits for its account's gate to admit a submission (free slot, room in the
window) and only then takes the next job, so no job waits behind a busy account while another
is free, and every account stays busy while work remains. A job that was not sent goes back to
the queue for whichever account can start it first: after a 429 (another process filled the
account's window), or when its account is taken out. An account is taken out for account
reasons (:func:`~asyncsdk._jobs.is_account_failure`, or a service it cannot even connect to,
three times running); a job's own failure (content policy, validation, a failed generation) is
reported in its :class:`JobResult` and the batch goes on. When every account is out, the run
stops with one :class:`~asyncsdk.AsyncSDKError` saying why. An account's state moves through
:class:`AccountState` (and, while it watches a generation, that generation's status).

Before anything is paid, ``run()`` refuses a batch that cannot go well: a download directory
that cannot be written, two jobs of a list with the same id, a job changed under an id the
journal already knows. (A lazy source is checked as it is read: such a job is reported as a
failed result carrying a ``ValueError``, and never submitted.) With ``max_credits``, every
job passes the budget first (:mod:`asyncsdk._budget`); a job with ``start_by`` that no account
could start in time ends as ``expired`` (:class:`~asyncsdk.JobExpiredError`), never sent late.

With a journal, a rerun of the same jobs never pays twice. Before any new submission the rows
an earlier run left in flight are settled (``submitting`` rows are looked up by their tag:
adopted, or back to ``pending``); then, as each job is read, the journal decides
(``must_submit``): finished jobs are reported from it, submitted ones are watched to their
end, images paid for but not saved are downloaded again, and only the rest is submitted.

``run()`` yields results as they complete. The workers live in a task group inside a separate
task, never around the generator's ``yield``; leaving the loop early (``break``, an exception,
``aclose()``, a cancellation) cancels them and waits for them to wind down, and every journal
row stays in a state a rerun can resume from. A cancellation of the consumer is never
swallowed: it is raised once the workers are down. The runner closes a journal it opened from
a path, never one it was handed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import errno
import logging
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from pathlib import Path
from typing import Final

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._budget import Budget, Prices, Verdict
from ._client import AsyncClient
from ._errors import (
    APIConnectionError,
    AsyncSDKError,
    GenerationFailedError,
    InsufficientCreditsError,
    JobExpiredError,
    RateLimitError,
    SubmissionUnknownError,
)
from ._jobs import (
    AccountCheck,
    AccountProgress,
    BatchProgress,
    EarlierFailure,
    Job,
    JobResult,
    JobStatus,
    created_nothing,
    is_account_failure,
    is_final,
    is_retryable,
    submit_options,
)
from ._journal import Journal, JournalEntry, JournalState, difference
from ._limits import Priority
from ._models import Generation, GenerationStatus
from ._queue import JobQueue, MustSubmit
from ._submission import NotSentInTime, Reservation
from ._watch import Submitted
from ._wire import converter

__all__ = ["AccountState", "BatchRunner", "check_directory"]

logger = logging.getLogger("asyncsdk")

_Send = MemoryObjectSendStream[JobResult]

#: Connection attempts that could not even open, in a row, after which an account is out.
_UNREACHABLE_AFTER: Final = 3
#: How many times one job may be handed back after 429s before it fails with the 429.
_BOUNCES_PER_ACCOUNT: Final = 3
#: Accounts whose balance and history are read at once by ``check_accounts()``.
_CHECK_CONCURRENCY: Final = 8


class AccountState(str, enum.Enum):
    """What one account of the batch is doing (shown as :attr:`AccountProgress.state`).

    ::

        idle ──► waiting ──► submitting ──► <the generation's status> ──► idle ──► ...
                    │  └──► waiting (budget) ──► waiting
                    └──► done (no job left)           out (taken out, from any state)
    """

    IDLE = "idle"
    WAITING = "waiting"
    WAITING_FOR_BUDGET = "waiting (budget)"
    SUBMITTING = "submitting"
    OUT = "out"
    DONE = "done"

    def __str__(self) -> str:
        return self.value


@attrs.define(eq=False)
class _Account:
    client: AsyncClient
    label: str
    state: AccountState | GenerationStatus = AccountState.IDLE
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

    def progress(self) -> AccountProgress:
        return AccountProgress(
            self.label,
            self.state.value,
            self.done,
            self.failed,
            self.credits,
            self.out_reason,
            self.balance,
        )


#: Workers started between two turns of the event loop (the first burst across accounts).
_START_SLICE: Final = 64


class _UntilDrained:
    """Cancels the workers' waits in the gate once the queue is drained: one task for the
    whole run (:meth:`run`), not one per job."""

    def __init__(self, drained: anyio.Event) -> None:
        self.drained = drained
        self.scopes: set[anyio.CancelScope] = set()

    async def run(self) -> None:
        await self.drained.wait()
        for scope in list(self.scopes):
            scope.cancel()

    async def reserve(self, client: AsyncClient) -> Reservation | None:
        """An open reservation of the client's gate (batch lane), or ``None`` once the queue
        is drained. The caller closes it on every path (``close()`` settles what is open)."""
        if self.drained.is_set():
            return None
        candidate = client.reserve(priority=Priority.BATCH)
        with anyio.CancelScope() as scope:
            self.scopes.add(scope)
            try:
                return await candidate.__aenter__()
            finally:
                self.scopes.discard(scope)
        await candidate.close()  # drained while it waited: nothing was admitted
        return None


async def _wait_until_done(task: asyncio.Task[None]) -> None:
    """Wait for ``task`` (already cancelled) to end, even when this task is cancelled
    meanwhile: a cancellation of this task is raised afterwards, never swallowed; an error
    the task ended with is raised too."""
    cancelled: BaseException | None = None
    # Shielded from anyio's cancel scopes, which would re-deliver their cancellation at every
    # await; a cancellation that does reach here is kept and raised once the task is done.
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError as exc:
                cancelled = exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation wins
        raise cancelled
    if not task.cancelled():
        task.result()


def _buffered(receive: MemoryObjectReceiveStream[JobResult]) -> Iterator[JobResult]:
    """The results already in ``receive``'s buffer, taken without a checkpoint."""
    while True:
        try:
            yield receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return


def check_directory(directory: Path) -> None:
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
    :param journal: path of the SQLite journal that makes the batch resumable (opened by the
        runner and closed at the end of each run), or a :class:`Journal` (used as it is, never
        closed: the caller closes it); ``None`` runs without one.
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
        #: A journal opened here from a path is closed here; one handed in never is.
        self._owns_journal = journal is not None and not isinstance(journal, Journal)
        self._journal = (
            journal if isinstance(journal, Journal) or journal is None else Journal(journal)
        )
        self._download_to = Path(download_to) if download_to is not None else None
        self._wait_timeout = wait_timeout
        self._retry_failed = retry_failed
        self._prices = Prices()
        self._prices_loaded = False
        self._checked: tuple[AccountCheck, ...] | None = None
        self._budget = Budget(max_credits, self._prices) if max_credits is not None else None
        self._queue: JobQueue | None = None
        self._send: _Send | None = None
        self._started = time.monotonic()
        self._running = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._bounces: collections.Counter[str] = collections.Counter()
        #: Why the run stopped before its last job (``max_credits``), or ``None``.
        self.stopped: str | None = None

    @property
    def clients(self) -> tuple[AsyncClient, ...]:
        """The accounts' clients, in the order given."""
        return tuple(account.client for account in self._accounts)

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
                elif error is not None and is_account_failure(error):
                    account.take_out(error)
            if account.out is not None and check.can_afford is not True:
                logger.info("%s is out of the batch: %s", account.label, account.out_reason)
            checks.append(check)
        self._checked = tuple(checks)
        return self._checked

    # -- progress ------------------------------------------------------------------------------
    def progress(self) -> BatchProgress:
        """Where the batch stands, for progress displays."""
        accounts = tuple(a.progress() for a in self._accounts)
        counts = self._counts
        return BatchProgress(
            seen=self._queue.seen if self._queue else 0,
            done=counts[JobStatus.SUCCEEDED],
            failed=counts[JobStatus.FAILED] + counts[JobStatus.DOWNLOAD_FAILED],
            running=self._running,
            accounts=accounts,
            elapsed=time.monotonic() - self._started,
            expired=counts[JobStatus.EXPIRED],
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
                    # What else is buffered goes out now, not one result per loop iteration
                    # (each receive() is a checkpoint): with thousands of workers a busy
                    # loop would otherwise hold thousands of finished results.
                    for result in _buffered(receive):
                        yield result
            await driver  # raises what stopped the batch, if anything did
        finally:
            if not driver.done():  # the caller left early: stop the workers
                driver.cancel()
                await _wait_until_done(driver)

    async def _preflight(self, jobs: Iterable[Job] | AsyncIterable[Job]) -> None:
        """Everything that can refuse the batch before anything is paid."""
        if self._download_to is not None:
            await anyio.to_thread.run_sync(check_directory, self._download_to)
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
        self._queue = queue = JobQueue(jobs)
        self._send = send
        async with send:
            try:
                await self._load_prices()
                async with anyio.create_task_group() as outer:
                    resumable = await self._recover()
                    seen: set[str] = set()
                    async with anyio.create_task_group() as tg:

                        async def must_submit(job: Job, fresh: bool) -> bool:
                            """Whether the job is to be submitted now; if not, it was dealt
                            with: from the journal, as a duplicate, or as expired."""
                            if fresh:
                                handled = await self._settled_by_journal(job, seen, resumable, tg)
                                if handled:
                                    return False
                            if job.start_by is not None and time.time() >= job.start_by:
                                await self._expire(job)
                                return False
                            return True

                        outer.start_soon(queue.watch_deadlines, must_submit)
                        until_drained = _UntilDrained(queue.drained)
                        outer.start_soon(until_drained.run)
                        started = 0
                        for account in self._accounts:
                            for _ in range(account.client.limits.concurrent):
                                tg.start_soon(
                                    self._worker, account, queue, must_submit, until_drained
                                )
                                started += 1
                                if started % _START_SLICE == 0:
                                    # Thousands of accounts: their first submissions go out a
                                    # slice at a time, so the event loop keeps answering.
                                    await anyio.lowlevel.checkpoint()
                    outer.cancel_scope.cancel()
            finally:
                if self._journal is not None and self._owns_journal:
                    with anyio.CancelScope(shield=True):
                        await self._journal.aclose()
            if queue.drained.is_set():
                return
            causes = [a.out for a in self._accounts if a.out is not None]
            for job in queue.leftovers():
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

    async def _settled_by_journal(
        self,
        job: Job,
        seen: set[str],
        resumable: dict[str, JournalEntry],
        tg: TaskGroup,
    ) -> bool:
        """Whether the journal (or an id used twice) settles the job without a new
        submission: reported from the journal, resumed, downloaded again or refused."""
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
        if entry.state in (JournalState.SUBMITTING, JournalState.SUBMITTED):
            self._running += 1
            tg.start_soon(self._resume, job, entry)
            return True
        if entry.state in (JournalState.DOWNLOADING, JournalState.DOWNLOAD_FAILED):
            self._running += 1
            tg.start_soon(self._download_again, job, entry)
            return True
        if entry.state is JournalState.PENDING:
            return False
        if entry.state is JournalState.FAILED and self._retry_failed and entry.retryable:
            return False
        await self._emit(self._from_journal(job, entry))
        return True

    async def _expire(self, job: Job) -> None:
        assert job.start_by is not None
        error = JobExpiredError(job.id, job.start_by)
        if self._journal is not None:
            await self._journal.pending(job.id, str(error), request=job.request)
        await self._emit(JobResult(job, error=error))

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
            if entry.state is JournalState.SUBMITTING:
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
                entry = attrs.evolve(
                    entry, state=JournalState.SUBMITTED, generation_id=found.generation_id
                )
            if entry.generation_id:
                await account.client.gate.hold_foreign(entry.generation_id)
                resumable[entry.id] = entry
        return resumable

    async def _worker(
        self,
        account: _Account,
        queue: JobQueue,
        must_submit: MustSubmit,
        until_drained: _UntilDrained,
    ) -> None:
        """One slot of one account: take a job whenever the account can start one."""
        client = account.client
        while account.out is None:
            account.state = AccountState.WAITING
            await queue.look_ahead()
            reservation = await until_drained.reserve(client)
            if reservation is None:  # every job is done: don't wait for a window to learn it
                break
            try:
                job = await queue.take(must_submit)
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
                if verdict is not Verdict.GO:
                    wake = self._budget.next_change()
                    queue.hand_back(job)
                    await reservation.close()
                    if verdict is Verdict.STOP:
                        self._halt(self._budget.last_refusal)
                        break
                    account.state = AccountState.WAITING_FOR_BUDGET
                    await wake.wait()  # a generation in flight ends or is priced
                    continue
            self._running += 1
            try:
                result = await self._run_job(account, job, reservation)
            finally:
                self._running -= 1
                await reservation.close()
            if result is None:  # not sent: back to the queue for whichever account is free
                queue.hand_back(job)
                continue
            queue.finished()
            await self._emit(result)
            # The worker may wait long for its next job: it keeps nothing of this one (with
            # thousands of accounts, each last record kept adds up to megabytes).
            del result, job, reservation
        account.state = AccountState.OUT if account.out is not None else AccountState.DONE

    def _halt(self, reason: str) -> None:
        assert self._queue is not None
        if self.stopped is None:
            self.stopped = f"stopped before the budget ran out: {reason}"
            logger.info("batch %s", self.stopped)
        self._queue.halt()
        if self._budget is not None:
            self._budget.stop()

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
        account.state = AccountState.SUBMITTING
        try:
            request = await client._request(job.model, job.prompt, **submit_options(job))
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
            account.state = AccountState.IDLE
            return JobResult(
                job, error=exc, account=account.label, submitted_at=exc.sent_at,
                elapsed=time.time() - started,
            )  # fmt: skip
        except Exception as exc:
            if self._budget is not None:
                self._budget.ended(job.id, None if created_nothing(exc) else 0)
            if self._not_sent(account, job, exc):
                if journal is not None:
                    await journal.pending(job.id, str(exc), request=job.request)
                return None
            return await self._failed(account, job, exc, started, created=False)
        account.unreachable = 0
        self._prices.learn(job.model, job.output_number, submission.credit_cost)
        if self._budget is not None:
            self._budget.created(job.id, submission.credit_cost)
        submitted = Submitted(job.model, time.time())
        if journal is not None:
            await journal.submitted(job.id, submission.generation_id)
        return await self._finish(account, job, submission.generation_id, started, submitted)

    async def _expired(self, account: _Account, job: Job) -> JobResult:
        """The job could not be sent by its ``start_by``: nothing was paid."""
        assert job.start_by is not None
        if self._budget is not None:
            self._budget.ended(job.id, None)
        account.state = AccountState.IDLE
        error = JobExpiredError(job.id, job.start_by)
        if self._journal is not None:
            await self._journal.pending(job.id, str(error), request=job.request)
        return JobResult(job, error=error, account=account.label)

    def _not_sent(self, account: _Account, job: Job, exc: Exception) -> bool:
        """Whether ``exc`` (from a submission that created nothing) sends the job back to the
        queue rather than failing it; takes the account out when the account is the cause."""
        if is_account_failure(exc):
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
        self,
        account: _Account,
        job: Job,
        generation_id: str,
        submitted_at: float,
        submitted: Submitted | None = None,
    ) -> JobResult:
        """Watch a created generation to its end, download, record."""
        client = account.client

        def show(generation: Generation) -> None:
            account.state = generation.status

        try:
            generation = await client._wait(
                generation_id, timeout=self._wait_timeout, on_update=show, submitted=submitted
            )
        except Exception as exc:
            if self._budget is not None:  # a failed generation is refunded; else assume paid
                self._budget.ended(job.id, None if isinstance(exc, GenerationFailedError) else 0)
            if is_account_failure(exc):
                account.take_out(exc)  # e.g. the key was revoked while the generation ran
            return await self._failed(account, job, exc, submitted_at, created=True)
        self._prices.learn_generation(generation)
        if self._budget is not None:
            self._budget.ended(job.id, generation.credit_cost or 0)
        account.credits += generation.credit_cost or 0
        result = await self._save(account.client, job, generation, account.label, submitted_at)
        account.state = AccountState.IDLE
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
        account.state = AccountState.IDLE
        retryable = is_retryable(exc)
        if self._journal is not None:
            if is_final(exc):
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
        if entry.state is JournalState.SUCCEEDED and generation is not None:
            paths = tuple(Path(p) for p in entry.paths)
            return JobResult(
                job, generation, account=label, paths=paths, submitted_at=entry.sent_at,
                from_journal=True,
            )  # fmt: skip
        retryable = bool(entry.retryable)
        error: BaseException = (
            GenerationFailedError(generation)
            if generation is not None
            else EarlierFailure(
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
