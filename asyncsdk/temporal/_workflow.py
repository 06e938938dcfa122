"""``BatchWorkflow``: a batch of jobs as one durable Temporal workflow.

One run of the workflow::

    accounts? ──► (file: count the jobs once) ──► for each job of this run:
                                                    wait until fewer than max_in_flight run
                                                    start activity run_job(job)  ──► outcome
    after jobs_per_run jobs (or when the server suggests it): let the running ones end,
    write their results, continue as new with the offset and the totals

Each job is one activity (:mod:`asyncsdk.temporal._activities`) that any worker may run; the
activity waits for whichever account can start it first, so the fan-out bound only keeps a
job waiting at every gate, and the accounts, not this workflow, set the pace. Outcomes are
kept by job id: in the workflow's result for a list of jobs, appended to ``results_file``
otherwise (a 100,000-job result would not fit in a Temporal payload).

**Cancellation** (``handle.cancel()``, ``temporal workflow cancel``): no new job starts; every
running activity is asked to stop, and decides for itself: one that has not sent its
submission stops (the job is ``cancelled``: nothing paid), one that has sent it finishes
(it is paid for) and its outcome is recorded. Then the results are written and the
workflow ends cancelled.

The workflow code runs in Temporal's sandbox and must be deterministic: it imports only the
dataclasses of :mod:`._types` (passed through) and names the activities by string.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from ._types import (
        AccountsInfo,
        AccountTally,
        BatchInput,
        BatchProgress,
        BatchResult,
        ChunkRequest,
        FileInfo,
        FileRequest,
        JobOutcome,
        JobRequest,
        JobSpec,
        ResultsWrite,
    )

__all__ = ["ACTIVITY_NAMES", "WORKFLOW_NAME", "BatchWorkflow"]

WORKFLOW_NAME = "asyncsdk.batch"
RUN_JOB, ACCOUNTS, SCAN_FILE, READ_CHUNK, WRITE_RESULTS = ACTIVITY_NAMES = (
    "asyncsdk.run_job",
    "asyncsdk.accounts",
    "asyncsdk.scan_file",
    "asyncsdk.read_chunk",
    "asyncsdk.write_results",
)
#: Timeout of the small bookkeeping activities (file reads, result writes, accounts).
_SHORT = timedelta(minutes=2)
_SHORT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


@workflow.defn(name=WORKFLOW_NAME)
class BatchWorkflow:
    """Run a batch of jobs on the workers' accounts; see the module docstring."""

    def __init__(self) -> None:
        self._progress = BatchProgress()
        self._running: dict[str, ActivityHandle[JobOutcome]] = {}
        self._collectors: set[asyncio.Task[None]] = set()
        self._results: dict[str, JobOutcome] | None = None
        self._results_file: str | None = None
        self._unwritten: list[str] = []
        self._results_size = 0

    @workflow.query(name="progress")
    def progress(self) -> BatchProgress:
        """Where the batch stands: totals over every run, and the jobs running now."""
        self._progress.running = len(self._running)
        return self._progress

    @workflow.query(name="results")
    def results(self) -> dict[str, JobOutcome] | None:
        """The outcomes so far, by job id (a list of jobs without ``results_file``)."""
        return self._results

    @workflow.run
    async def run(self, batch: BatchInput) -> BatchResult:
        options = batch.options
        now = workflow.now().timestamp()
        if batch.progress is not None:  # a later run: carry on
            self._progress = batch.progress
            self._progress.runs += 1
        else:
            self._progress.started_at = now
        self._progress.updated_at = now
        self._results_file = options.results_file
        if batch.jobs is not None and options.results_file is None:
            self._results = dict(batch.results or {})
        self._results_size = batch.results_size
        limit = batch.max_in_flight or options.max_in_flight or await self._default_limit()
        fingerprint = batch.fingerprint
        if batch.jobs is not None:
            self._progress.total = len(batch.jobs)
        elif fingerprint is None:
            assert batch.jobs_file is not None
            scanned: FileInfo = await workflow.execute_activity(
                SCAN_FILE,
                FileRequest(batch.jobs_file, batch.default_model),
                result_type=FileInfo,
                start_to_close_timeout=_SHORT,
                retry_policy=_SHORT_RETRY,
            )
            self._progress.total, fingerprint = scanned.jobs, scanned.fingerprint
        try:
            offset = await self._start_jobs(batch, fingerprint, limit)
            await workflow.wait_condition(lambda: not self._running)
            await self._write_results()
        except asyncio.CancelledError:
            await self._cancel()
            raise
        if offset < (self._progress.total or 0):
            workflow.continue_as_new(
                dataclasses.replace(
                    batch,
                    offset=offset,
                    fingerprint=fingerprint,
                    max_in_flight=limit,
                    results_size=self._results_size,
                    progress=self._progress,
                    results=self._results,
                )
            )
        self._progress.updated_at = workflow.now().timestamp()
        return BatchResult(self.progress(), self._results, options.results_file)

    async def _default_limit(self) -> int:
        """Twice the accounts' slots: a job is always waiting when a slot frees."""
        info: AccountsInfo = await workflow.execute_activity(
            ACCOUNTS,
            result_type=AccountsInfo,
            start_to_close_timeout=_SHORT,
            retry_policy=_SHORT_RETRY,
        )
        return max(2 * info.slots, 1)

    async def _start_jobs(self, batch: BatchInput, fingerprint: str | None, limit: int) -> int:
        """Start this run's share of the jobs, at most ``limit`` at a time; the offset of
        the first job left to a later run."""
        options = batch.options
        offset, started = batch.offset, 0
        while started < options.jobs_per_run:
            count = min(options.chunk_size, options.jobs_per_run - started)
            jobs = await self._next_jobs(batch, fingerprint, offset, count)
            if not jobs:
                break
            for job in jobs:
                await workflow.wait_condition(lambda: len(self._running) < limit)
                self._start(job, batch)
                offset += 1
                started += 1
                if len(self._unwritten) >= options.chunk_size:
                    await self._write_results()
            if workflow.info().is_continue_as_new_suggested():
                break
        return offset

    async def _next_jobs(
        self, batch: BatchInput, fingerprint: str | None, offset: int, count: int
    ) -> list[JobSpec]:
        """The ``count`` jobs from ``offset``: a slice of the list, or a chunk of the file."""
        if batch.jobs is not None:
            return batch.jobs[offset : offset + count]
        assert batch.jobs_file is not None and fingerprint is not None
        if offset >= (self._progress.total or 0):
            return []
        chunk: list[JobSpec] = await workflow.execute_activity(
            READ_CHUNK,
            ChunkRequest(batch.jobs_file, batch.default_model, fingerprint, offset, count),
            result_type=list[JobSpec],
            start_to_close_timeout=_SHORT,
            retry_policy=_SHORT_RETRY,
        )
        return chunk

    def _start(self, job: JobSpec, batch: BatchInput) -> None:
        options = batch.options
        handle: ActivityHandle[JobOutcome] = workflow.start_activity(
            RUN_JOB,
            JobRequest(job, options.download_to),
            result_type=JobOutcome,
            activity_id=f"job/{job.id}",
            start_to_close_timeout=timedelta(seconds=options.attempt_timeout),
            heartbeat_timeout=timedelta(seconds=options.heartbeat_timeout),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=options.retry_initial),
                maximum_interval=timedelta(seconds=options.retry_max),
                backoff_coefficient=2.0,
                maximum_attempts=options.max_attempts,
            ),
            # A cancelled activity reports how it ended: it may have finished a paid job.
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        self._running[job.id] = handle
        collector = asyncio.ensure_future(self._collect(job, handle))
        self._collectors.add(collector)
        collector.add_done_callback(self._collectors.discard)

    async def _collect(self, job: JobSpec, handle: ActivityHandle[JobOutcome]) -> None:
        try:
            outcome = await handle
        except ActivityError as err:
            outcome = _failed(job, err)
        finally:
            del self._running[job.id]
        self._record(outcome)

    def _record(self, outcome: JobOutcome) -> None:
        progress = self._progress
        if outcome.status == "succeeded":
            progress.done += 1
        elif outcome.status == "cancelled":
            progress.cancelled += 1
        else:
            progress.failed += 1
        progress.credits += outcome.credits
        progress.retries += max(outcome.attempts - 1, 0)
        if outcome.account is not None:
            tally = progress.accounts.setdefault(outcome.account, AccountTally())
            tally.credits += outcome.credits
            if outcome.status == "succeeded":
                tally.done += 1
            elif outcome.status != "cancelled":
                tally.failed += 1
        progress.updated_at = workflow.now().timestamp()
        if self._results is not None:
            self._results[outcome.id] = outcome
        elif self._results_file is not None:
            self._unwritten.append(json.dumps(outcome.to_json(), sort_keys=True))

    async def _write_results(self) -> None:
        if self._results_file is None or not self._unwritten:
            return
        lines, self._unwritten = self._unwritten, []
        self._results_size = await workflow.execute_activity(
            WRITE_RESULTS,
            ResultsWrite(self._results_file, self._results_size, lines),
            result_type=int,
            start_to_close_timeout=_SHORT,
            retry_policy=_SHORT_RETRY,
        )

    async def _cancel(self) -> None:
        """Start nothing more; let the running jobs decide (sent: finish; not: stop)."""
        self._progress.cancelling = True
        for handle in list(self._running.values()):
            handle.cancel()
        await workflow.wait_condition(lambda: not self._running)
        await self._write_results()
        self._progress.updated_at = workflow.now().timestamp()


def _failed(job: JobSpec, err: ActivityError) -> JobOutcome:
    """The outcome of a job whose activity ended without one (cancelled, or out of tries)."""
    cause = err.cause
    if isinstance(cause, CancelledError):
        return JobOutcome(job.id, "cancelled", error="the batch was cancelled before it was sent")
    if isinstance(cause, ApplicationError):
        return JobOutcome(
            job.id,
            "failed",
            error=cause.message,
            error_code=cause.type,
            retryable=not cause.non_retryable,
        )
    return JobOutcome(job.id, "failed", error=str(cause or err), retryable=True)
