"""The activities of the batch workflow, and the one that runs a job: paid once, whatever dies.

``run_job`` runs one job on whichever of the worker's accounts can start it first::

    attempt 1:  reserve_any(accounts) ─► beat(account) ─► submit(idempotency_key) ─► beat(id)
                                                                                       │
                wait(id), beating on every status change ─► download ─► outcome ◄──────┘

    attempt n (the worker died, the network failed, the service did not answer):
        the last heartbeat names the generation ─► wait for it, nothing is sent
        it names the account only ──────────────► submit(recover_since=first scheduled
                                                    time) on that account: what the earlier
                                                    attempt created is adopted, never paid twice
        it names nothing ───────────────────────► look for the job's tag on every account
                                                    (read and settled); adopt it where found,
                                                    else submit on the first account free

The tag of the submission is derived from ``"<workflow id>/<job id>"`` (the idempotency key),
so every attempt, on any worker, looks for the same tag; the workflow id survives
continue-as-new. Heartbeats carry ``{"account", "generation_id", "status"}``: the account as
soon as it is reserved (before anything is sent) and the generation as soon as it is known.

**Cancellation.** When the workflow is cancelled, an attempt that has not started to submit
stops (``cancelled``: nothing paid); one that has is paid for, so it ignores the request,
finishes, and reports its outcome. Any other cancellation (the attempt timed out, the worker
shuts down) stops it at once: the next attempt carries on from the heartbeat.

**Errors.** A job's own failure (a failed generation, a refused prompt, images that cannot
be saved) is an outcome, not an exception. Transient trouble (the network, 5xx, the gate, an
outcome the list could not settle yet) is raised, and Temporal retries the attempt. An
account that fails for account reasons (key, credits) is taken out of this worker's choice;
when none is left the job fails for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
from temporalio import activity
from temporalio.exceptions import ApplicationError

from .._client import AsyncClient
from .._errors import GenerationFailedError, JobExpiredError
from .._jobfile import read_jobs, scan_file
from .._jobs import Job, is_account_failure, is_final, is_retryable
from .._limits import Priority
from .._models import Generation
from .._submission import make_label, tag_digits
from ._reserve import reserve_any
from ._types import (
    AccountsInfo,
    ChunkRequest,
    FileInfo,
    FileRequest,
    JobOutcome,
    JobRequest,
    JobSpec,
    ResultsWrite,
)
from ._workflow import ACCOUNTS, READ_CHUNK, RUN_JOB, SCAN_FILE, WRITE_RESULTS

__all__ = ["BatchActivities", "file_fingerprint", "job_spec"]


def job_spec(job: Job) -> JobSpec:
    """A :class:`asyncsdk.Job` in the form the workflow carries (its params must be JSON
    values: images as URLs, or paths the workers can read)."""
    params = dict(job.params)
    for key, value in params.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(
                f"job {job.id}: {key} holds bytes; a Temporal batch carries images as URLs"
                " or paths the workers can read"
            )
        if isinstance(value, os.PathLike):
            params[key] = os.fspath(value)
    if isinstance(params.get("images"), (list, tuple)):
        params["images"] = [
            os.fspath(i) if isinstance(i, os.PathLike) else i for i in params["images"]
        ]
    return JobSpec(job.id, job.model, job.prompt, params, job.start_by)


@attrs.define(eq=False)
class _Account:
    client: AsyncClient
    label: str
    out: BaseException | None = None

    @property
    def key(self) -> str:
        return self.client._account_key


class _Beat:
    """This attempt's progress, sent as heartbeat details (and read back by the next one)."""

    def __init__(self, previous: Sequence[Any]) -> None:
        last = previous[-1] if previous and isinstance(previous[-1], Mapping) else {}
        self.account: str | None = last.get("account")
        self.generation_id: str | None = last.get("generation_id")
        self.status: str | None = last.get("status")
        #: This attempt has started to submit: from here on it may have paid.
        self.committed = False

    def details(self) -> dict[str, str | None]:
        return {
            "account": self.account,
            "generation_id": self.generation_id,
            "status": self.status,
        }

    def update(self, **changes: str | None) -> None:
        for name, value in changes.items():
            setattr(self, name, value)
        activity.heartbeat(self.details())

    async def keep_beating(self, interval: float) -> None:
        """Heartbeat every ``interval`` (Temporal throttles and sends the latest)."""
        while True:
            activity.heartbeat(self.details())
            await anyio.sleep(interval)


class BatchActivities:
    """The activities a batch worker runs, over one client per account.

    >>> activities = BatchActivities([client_a, client_b])          # doctest: +SKIP
    >>> Worker(temporal, task_queue="asyncsdk", workflows=[BatchWorkflow],
    ...        activities=activities.all())

    :param clients: one :class:`asyncsdk.AsyncClient` per account (the same accounts, with
        the same ``RedisGate``, in every worker; the activities do not close them).
    :param names: labels for the accounts in outcomes and progress (default ``account 1``,
        ...; give every worker the same keys in the same order, or the same names).
    """

    def __init__(self, clients: Sequence[AsyncClient], *, names: Sequence[str] | None = None):
        clients = list(clients)
        if not clients:
            raise ValueError("BatchActivities needs at least one client")
        labels = (
            list(names) if names is not None else [f"account {i + 1}" for i in range(len(clients))]
        )
        if len(labels) != len(clients):
            raise ValueError("names must give one label per client")
        self._accounts = [_Account(c, label) for c, label in zip(clients, labels, strict=True)]
        self._by_key: dict[str, _Account] = {}
        for account in self._accounts:
            if self._by_key.setdefault(account.key, account) is not account:
                raise ValueError(f"{account.label} uses the same account as another client")
        self._by_client = {id(a.client): a for a in self._accounts}

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, to register with a worker."""
        return [self.run_job, self.accounts, self.scan_file, self.read_chunk, self.write_results]

    # -- bookkeeping ---------------------------------------------------------------------------
    @activity.defn(name=ACCOUNTS)
    async def accounts(self) -> AccountsInfo:
        """The accounts' labels and their generation slots in all."""
        return AccountsInfo(
            [a.label for a in self._accounts],
            sum(a.client.limits.concurrent for a in self._accounts),
        )

    @activity.defn(name=SCAN_FILE)
    async def scan_file(self, request: FileRequest) -> FileInfo:
        """Check every line of a jobs file (a bad file fails the workflow at once)."""

        def scan() -> FileInfo:
            try:
                summary = scan_file(request.path, default_model=request.default_model)
            except ValueError as exc:  # JobFileError: the line and the field
                raise ApplicationError(str(exc), type="JobFileError", non_retryable=True) from None
            return FileInfo(summary.jobs, file_fingerprint(request.path))

        return await anyio.to_thread.run_sync(scan)

    @activity.defn(name=READ_CHUNK)
    async def read_chunk(self, request: ChunkRequest) -> list[JobSpec]:
        """``count`` jobs from the ``start``-th, if the file is still the one scanned."""

        def read() -> list[JobSpec]:
            if file_fingerprint(request.path) != request.fingerprint:
                raise ApplicationError(
                    f"{request.path} changed after the batch started",
                    type="JobFileChanged",
                    non_retryable=True,
                )
            jobs: list[JobSpec] = []
            for index, job in enumerate(
                read_jobs(request.path, default_model=request.default_model)
            ):
                if index >= request.start + request.count:
                    break
                if index >= request.start:
                    jobs.append(job_spec(job))
            return jobs

        return await anyio.to_thread.run_sync(read)

    @activity.defn(name=WRITE_RESULTS)
    async def write_results(self, request: ResultsWrite) -> int:
        """Append result lines at the size the workflow knows; the new size."""

        def write() -> int:
            path = Path(request.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a+b") as file:
                file.seek(0, os.SEEK_END)
                if file.tell() < request.size:
                    raise ApplicationError(
                        f"{path} is shorter than the results written to it so far",
                        type="ResultsFileChanged",
                        non_retryable=True,
                    )
                file.truncate(request.size)  # what an earlier try of this write left
                data = "".join(line + "\n" for line in request.lines).encode()
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                return request.size + len(data)

        return await anyio.to_thread.run_sync(write)

    # -- one job -------------------------------------------------------------------------------
    @activity.defn(name=RUN_JOB)
    async def run_job(self, request: JobRequest) -> JobOutcome:
        """Submit the job on the first account free, wait for it, save its images."""
        info = activity.info()
        beat = _Beat(info.heartbeat_details)
        interval = info.heartbeat_timeout.total_seconds() / 4 if info.heartbeat_timeout else 10.0
        work = asyncio.ensure_future(self._run(request, info, beat))
        beating = asyncio.ensure_future(beat.keep_beating(interval))
        try:
            while True:
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    if work.done() and not work.cancelled():
                        return work.result()  # it ended meanwhile: report how
                    if not _finish_anyway(beat):
                        raise
                    # The workflow was cancelled, but this job may be paid for: finish it.
                    activity.logger.info("job %s is paid for: finishing it", request.job.id)
                    task = asyncio.current_task()
                    if sys.version_info >= (3, 11) and task is not None:
                        task.uncancel()
        finally:
            beating.cancel()
            if not work.done():
                work.cancel()
            # Let both end; what the job returned or raised went out above.
            await asyncio.gather(work, beating, return_exceptions=True)

    async def _run(self, request: JobRequest, info: activity.Info, beat: _Beat) -> JobOutcome:
        job = request.job
        key = f"{info.workflow_id}/{job.id}"
        since = None if info.attempt == 1 else info.scheduled_time.timestamp()
        try:
            account, generation_id = await self._submitted(job, key, since, beat)
        except JobExpiredError as exc:  # never sent: nothing paid
            return _outcome(job, info, error=exc, status="expired")
        except Exception as exc:
            if is_final(exc):  # refused: nothing was created, and trying again cannot help
                return _outcome(job, info, error=exc)
            raise
        client = account.client

        def show(generation: Generation) -> None:
            beat.update(status=generation.status.value)

        try:
            generation = await client.wait(generation_id, on_update=show)
        except GenerationFailedError as exc:
            return _outcome(job, info, account, exc.generation, error=exc)
        except Exception as exc:
            if is_account_failure(exc):  # e.g. the key was revoked while it ran
                account.out = exc
                raise ApplicationError(
                    f"{account.label} is out: {exc}", type="AccountsOut", non_retryable=True
                ) from exc
            raise  # e.g. still running at the deadline: the next attempt waits again
        paths: list[Path] = []
        if request.download_to is not None:
            try:
                paths = await client.download(generation, request.download_to, prefix=job.id)
            except Exception as exc:
                if not is_final(exc):
                    raise  # the network: the next attempt waits (at once) and downloads
                return _outcome(job, info, account, generation, error=exc, status="download_failed")
        return _outcome(job, info, account, generation, paths=paths)

    async def _submitted(
        self, job: JobSpec, key: str, since: float | None, beat: _Beat
    ) -> tuple[_Account, str]:
        """The job's generation: one an earlier attempt created, or a new one."""
        if beat.generation_id is not None:
            earlier = self._known(beat.account)
            # The slot belongs to it again (the dead worker's lease has expired or will).
            await earlier.client.gate.hold_foreign(beat.generation_id)
            return earlier, beat.generation_id
        known = self._known(beat.account) if beat.account is not None else None
        if known is None and since is not None:
            known = await self._locate(job, key, since)
            if known is None:
                since = None  # looked everywhere, settled: nothing was created
        account: _Account | None = None
        while True:
            candidates = (
                [known] if known is not None else [a for a in self._accounts if a.out is None]
            )
            if not candidates:
                reasons = "; ".join(f"{a.label}: {a.out}" for a in self._accounts)
                raise ApplicationError(
                    f"every account of this worker is out ({reasons})",
                    type="AccountsOut",
                    non_retryable=True,
                )
            try:
                async with reserve_any([a.client for a in candidates], priority=Priority.BATCH) as (
                    client,
                    reservation,
                ):
                    account = self._by_client[id(client)]
                    if since is None and job.start_by is not None and time.time() >= job.start_by:
                        raise JobExpiredError(job.id, job.start_by)  # never sent late
                    beat.committed = True
                    beat.update(account=account.key)
                    submission = await client.submit(
                        job.model,
                        job.prompt,
                        **job.params,
                        idempotency_key=key,
                        recover_since=since,
                        reservation=reservation,
                        priority=Priority.BATCH,
                    )
            except Exception as exc:
                if account is None or not is_account_failure(exc):
                    raise
                account.out = exc  # nothing was created: the others may take the job
                activity.logger.warning("%s is out of this worker: %s", account.label, exc)
                if known is not None:
                    raise ApplicationError(
                        f"{account.label}, where an earlier attempt may have sent this job,"
                        f" is out: {exc}",
                        type="AccountsOut",
                        non_retryable=True,
                    ) from exc
                beat.committed = False
                continue
            beat.update(generation_id=submission.generation_id)
            return account, submission.generation_id

    def _known(self, account_key: str | None) -> _Account:
        account = self._by_key.get(account_key or "")
        if account is None:
            # Another worker may have the account: let Temporal try again (elsewhere).
            raise ApplicationError(
                "an earlier attempt of this job used an account this worker does not have",
                type="UnknownAccount",
            )
        return account

    async def _locate(self, job: JobSpec, key: str, since: float) -> _Account | None:
        """The account where an earlier attempt created the job's generation, if any.

        The earlier attempt died before its heartbeat named the account: look for the tag
        on every account at once, back to ``since``, until each list has been read and has
        settled (the same rule as :meth:`asyncsdk.AsyncClient.reconcile`, counted from now).
        """
        tag = make_label(job.params.get("name"), tag_digits(key))
        now = time.time()
        found: list[_Account] = []

        async def look(account: _Account) -> None:
            client = account.client
            hit: object = await client.find_submission(tag, job.prompt, since=since)
            if hit is None:
                hit = await client.reconcile(tag, sent_at=now)
            if hit is not None:
                found.append(account)

        async with anyio.create_task_group() as tg:
            for account in self._accounts:
                if account.out is None:
                    tg.start_soon(look, account)
        return found[0] if found else None


def _finish_anyway(beat: _Beat) -> bool:
    """Whether a cancelled attempt should go on: the workflow asked (not a timeout or a
    shutdown), and the job may already be paid for."""
    details = activity.cancellation_details()
    return (
        beat.committed
        and details is not None
        and details.cancel_requested
        and not (details.timed_out or details.worker_shutdown or details.reset)
    )


def _outcome(
    job: JobSpec,
    info: activity.Info,
    account: _Account | None = None,
    generation: Generation | None = None,
    *,
    error: BaseException | None = None,
    paths: Sequence[Path] = (),
    status: str | None = None,
) -> JobOutcome:
    if status is None:
        status = "succeeded" if error is None else "failed"
    succeeded = generation is not None and status != "failed"
    return JobOutcome(
        id=job.id,
        status=status,
        account=account.label if account is not None else None,
        generation_id=generation.generation_id if generation is not None else None,
        images=list(generation.output_images) if succeeded and generation else [],
        paths=[str(p) for p in paths],
        credits=(generation.credit_cost or 0) if succeeded and generation else 0,
        error=None if error is None else str(error),
        error_code=getattr(error, "code", None),
        retryable=is_retryable(error) if error is not None else False,
        attempts=info.attempt,
        finished_at=time.time(),
    )


def file_fingerprint(path: str) -> str:
    """The SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
