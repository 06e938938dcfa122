"""Durable batches across machines, on Temporal (``pip install 'asyncsdk[temporal]'``).

A batch becomes one Temporal workflow; each job is one activity that any worker may run.
Workers share the accounts through :class:`asyncsdk.RedisGate`, so every account's limits
hold across all of them and each job goes to whichever account, in whichever worker, can
start it first. Temporal holds the jobs: a worker that dies (``kill -9`` included) has its
jobs retried on the others, and a retry finds the generation the dead attempt paid for by
the job's tag instead of paying again.

>>> async def main(temporal, jobs) -> None:                           # doctest: +SKIP
...     handle = await start_batch(temporal, jobs, id="kites")     # a worker runs elsewhere
...     result = await follow(handle, lambda p: print(p.done, "/", p.total))
...     print(result.results["kite-1"].images)

From the shell::

    asyncsdk temporal worker --keys-file keys.txt --redis redis://redis:6379/0
    asyncsdk temporal batch jobs.jsonl --out /shared/out

Where each part lives::

    _types.py       the dataclasses the workflow and the activities exchange (JobSpec,
                    BatchInput, BatchOptions, JobOutcome, BatchProgress, BatchResult)
    _workflow.py    BatchWorkflow: fan-out, progress query, continue-as-new, cancellation
    _activities.py  BatchActivities: run_job (submit once, wait with heartbeats, download)
                    and the bookkeeping ones (accounts, file chunks, result lines)
    _reserve.py     reserve_any(): the first account whose gate admits
    _worker.py      create_worker(), run_worker(), start_batch(), follow()
    _cli.py         ``asyncsdk temporal worker | batch | cancel``

Importing this package imports nothing from Temporal; the names below load it on first use.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from ._activities import BatchActivities as BatchActivities
    from ._activities import job_spec as job_spec
    from ._reserve import reserve_any as reserve_any
    from ._types import AccountTally as AccountTally
    from ._types import BatchInput as BatchInput
    from ._types import BatchOptions as BatchOptions
    from ._types import BatchProgress as BatchProgress
    from ._types import BatchResult as BatchResult
    from ._types import JobOutcome as JobOutcome
    from ._types import JobSpec as JobSpec
    from ._worker import DEFAULT_TASK_QUEUE as DEFAULT_TASK_QUEUE
    from ._worker import create_worker as create_worker
    from ._worker import follow as follow
    from ._worker import run_worker as run_worker
    from ._worker import start_batch as start_batch
    from ._workflow import BatchWorkflow as BatchWorkflow

_LAZY = {
    "AccountTally": "._types",
    "BatchActivities": "._activities",
    "BatchInput": "._types",
    "BatchOptions": "._types",
    "BatchProgress": "._types",
    "BatchResult": "._types",
    "BatchWorkflow": "._workflow",
    "DEFAULT_TASK_QUEUE": "._worker",
    "JobOutcome": "._types",
    "JobSpec": "._types",
    "create_worker": "._worker",
    "follow": "._worker",
    "job_spec": "._activities",
    "reserve_any": "._reserve",
    "run_worker": "._worker",
    "start_batch": "._worker",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # The classes keep their own modules: Temporal's sandbox re-imports the workflow by its
    # module, and the data converter resolves the dataclasses' annotations there.
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
