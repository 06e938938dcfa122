"""Workers and starters: ``create_worker``, ``run_worker``, ``start_batch``, ``follow``.

A worker serves one task queue with :class:`BatchWorkflow` and the activities of
:class:`BatchActivities` over one client per account. Run as many as you like, on as many
hosts: give them the same keys and the same ``RedisGate`` URL, and every account's limits
hold across all of them while each job goes to whichever account, in whichever worker, can
start it first. Temporal hands a job to another worker when one dies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Final

import anyio
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError
from temporalio.worker import Worker

from .._client import AsyncClient
from .._jobs import Job
from ._activities import BatchActivities, file_fingerprint, job_spec
from ._types import (
    DEFAULT_TASK_QUEUE,
    BatchInput,
    BatchOptions,
    BatchProgress,
    BatchResult,
    JobSpec,
)
from ._workflow import BatchWorkflow

__all__ = ["DEFAULT_TASK_QUEUE", "create_worker", "follow", "run_worker", "start_batch"]

#: Temporal's defaults for a workflow task's timeout and for a worker's sticky queue.
_TEMPORAL_TIMEOUT: Final = 10.0


def create_worker(
    temporal: Client,
    clients: Sequence[AsyncClient],
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    names: Sequence[str] | None = None,
    max_concurrent_activities: int | None = None,
    **options: Any,
) -> Worker:
    """A Temporal worker for batches over these accounts' clients (run it with ``await
    worker.run()`` or ``async with worker: ...``).

    :param temporal: a connected ``temporalio.client.Client``.
    :param clients: one :class:`asyncsdk.AsyncClient` per account, sharing a
        :class:`asyncsdk.RedisGate` when more than one worker runs (not closed here).
    :param max_concurrent_activities: jobs this worker runs at once, gate waits included
        (default: four per generation slot, at least eight).
    :param options: more ``temporalio.worker.Worker`` arguments. The sticky queue's
        schedule-to-start timeout defaults to a quarter of the accounts' window (at most
        Temporal's 10 s), so that a dead worker's workflows move on within a window.
    """
    clients = list(clients)
    activities = BatchActivities(clients, names=names)
    slots = sum(c.limits.concurrent for c in clients)
    window = max(c.limits.window for c in clients)
    options.setdefault(
        "sticky_queue_schedule_to_start_timeout",
        timedelta(seconds=min(_TEMPORAL_TIMEOUT, max(window / 4, 0.1))),
    )
    return Worker(
        temporal,
        task_queue=task_queue,
        workflows=[BatchWorkflow],
        activities=activities.all(),
        max_concurrent_activities=max_concurrent_activities or max(8, 4 * slots),
        **options,
    )


async def run_worker(
    clients: Sequence[AsyncClient],
    *,
    address: str = "localhost:7233",
    namespace: str = "default",
    task_queue: str = DEFAULT_TASK_QUEUE,
    names: Sequence[str] | None = None,
    on_ready: Callable[[], object] | None = None,
    **options: Any,
) -> None:
    """Connect to Temporal at ``address`` and serve batches until cancelled.

    >>> async def main() -> None:                                    # doctest: +SKIP
    ...     async with asyncsdk.RedisGate.from_url("redis://redis:6379/0") as gate:
    ...         clients = [asyncsdk.AsyncClient(key, gate=gate) for key in keys]
    ...         await run_worker(clients, address="temporal:7233")
    """
    temporal = await Client.connect(address, namespace=namespace)
    worker = create_worker(temporal, clients, task_queue=task_queue, names=names, **options)
    async with worker:
        if on_ready is not None:
            on_ready()
        await anyio.sleep_forever()


def batch_id(jobs: Sequence[JobSpec] | None = None, fingerprint: str | None = None) -> str:
    """A workflow id for a batch, derived from its content: starting the same batch again
    finds the running workflow (or the finished one) instead of paying for it twice."""
    digest = hashlib.sha256()
    if jobs is not None:
        for job in jobs:
            digest.update(
                json.dumps([job.id, job.model, job.prompt, job.params], sort_keys=True).encode()
            )
    else:
        digest.update((fingerprint or "").encode())
    return "asyncsdk-batch-" + digest.hexdigest()[:16]


async def start_batch(
    temporal: Client,
    jobs: Iterable[Job] | None = None,
    *,
    jobs_file: str | None = None,
    default_model: str = "google/nano-banana",
    options: BatchOptions | None = None,
    id: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    task_timeout: float | None = None,
) -> WorkflowHandle[BatchWorkflow, BatchResult]:
    """Start a batch workflow (or find the one already running under the same id).

    >>> handle = await start_batch(temporal, jobs, id="kites-2026-11-30")  # doctest: +SKIP
    >>> result = await follow(handle, print)

    :param jobs: :class:`asyncsdk.Job` objects (a few thousand at most; use ``jobs_file``
        for more), or ``None`` with ``jobs_file``: a JSONL/CSV file the workers can read.
    :param id: the workflow id; by default derived from the jobs (or the file's content),
        so that starting the same batch twice runs it once. The id also keys each job's
        submission tag: a workflow with a new id submits its jobs anew.
    :param task_timeout: seconds a workflow task may take before Temporal gives it to
        another worker (Temporal's default: 10).
    """
    if (jobs is None) == (jobs_file is None):
        raise ValueError("start_batch() needs jobs or jobs_file (exactly one)")
    specs = [job_spec(job) for job in jobs] if jobs is not None else None
    if specs is not None:
        seen: set[str] = set()
        for spec in specs:
            if spec.id in seen:
                raise ValueError(f"two jobs have the id {spec.id!r}")
            seen.add(spec.id)
    if id is None:
        id = batch_id(specs, file_fingerprint(jobs_file) if jobs_file is not None else None)
    batch = BatchInput(
        jobs=specs,
        jobs_file=jobs_file,
        default_model=default_model,
        options=options or BatchOptions(),
    )
    return await temporal.start_workflow(
        BatchWorkflow.run,
        batch,
        id=id,
        task_queue=task_queue,
        task_timeout=timedelta(seconds=task_timeout) if task_timeout is not None else None,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def follow(
    handle: WorkflowHandle[Any, BatchResult],
    on_progress: Callable[[BatchProgress], object] | None = None,
    *,
    interval: float = 0.5,
) -> BatchResult:
    """Wait for the batch's result, calling ``on_progress`` with the progress every
    ``interval`` seconds (queried from the latest run: continue-as-new is followed)."""
    latest = handle._client.get_workflow_handle(handle.id)

    async def watch() -> None:
        while True:
            try:
                progress = await latest.query(BatchWorkflow.progress)
            except (RPCError, WorkflowQueryFailedError):  # between runs, no worker yet
                pass
            else:
                if on_progress is not None:
                    on_progress(progress)
            await anyio.sleep(interval)

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        if on_progress is not None:
            tg.start_soon(watch)
        try:
            result: BatchResult = await handle.result()
        except Exception as exc:  # raised below as itself, not in an ExceptionGroup
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if on_progress is not None:
        on_progress(result.progress)
    return result
