"""What the batch workflow and its activities exchange: plain dataclasses, nothing else.

Temporal stores every value below in the workflow's history (as JSON, by its default data
converter), and the workflow code that reads them runs in Temporal's sandbox, so this module
imports nothing but the standard library: it is safe to pass through the sandbox.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "AccountTally",
    "AccountsInfo",
    "BatchInput",
    "BatchOptions",
    "BatchProgress",
    "BatchResult",
    "ChunkRequest",
    "FileInfo",
    "FileRequest",
    "JobOutcome",
    "JobRequest",
    "JobSpec",
    "ResultsWrite",
]

#: The task queue workers and starters use unless told otherwise.
DEFAULT_TASK_QUEUE: Final = "asyncsdk-batch"


@dataclass(frozen=True)
class JobSpec:
    """One job as the workflow carries it: :class:`asyncsdk.Job` in JSON-able form.

    ``params`` are the other arguments of :meth:`asyncsdk.AsyncClient.submit` (``name``,
    ``output_number``, ``aspect_ratio``, ``images`` as URLs or paths the workers can read,
    model extras); they must be JSON values. ``start_by`` (Unix time): a job no account could
    start by then ends ``expired``, never sent.
    """

    id: str
    model: str
    prompt: str
    params: dict[str, Any] = field(default_factory=dict)
    start_by: float | None = None


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs; the same for every run of a workflow (continue-as-new keeps them).

    :ivar max_in_flight: jobs running (or waiting for an account) at once; ``None``: twice
        the accounts' generation slots, as a worker reports them, so that a job is always
        waiting at each gate when a slot frees.
    :ivar download_to: save each succeeded job's images there (a directory the workers can
        write), named ``<job id>-<n>.<ext>``; ``None`` saves nothing.
    :ivar results_file: append one JSON line per job there (a path the workers can write)
        as the jobs finish; with jobs from a file the workflow's result then carries only
        the totals.
    :ivar chunk_size: jobs read from a file per activity.
    :ivar jobs_per_run: jobs started by one run before it continues as new (Temporal keeps a
        run's history small this way; it also continues earlier when the server suggests).
    :ivar heartbeat_timeout: seconds without a heartbeat after which Temporal gives a job's
        activity to another worker (the activity beats about four times as often).
    :ivar attempt_timeout: seconds one attempt of a job may take, gate wait included.
    :ivar retry_initial: first pause before an attempt is retried, in seconds (doubling).
    :ivar retry_max: longest pause between attempts, in seconds.
    :ivar max_attempts: attempts per job (0: unlimited, until the job ends one way or
        another).
    """

    max_in_flight: int | None = None
    download_to: str | None = None
    results_file: str | None = None
    chunk_size: int = 500
    jobs_per_run: int = 1000
    heartbeat_timeout: float = 30.0
    attempt_timeout: float = 1800.0
    retry_initial: float = 1.0
    retry_max: float = 60.0
    max_attempts: int = 0

    def __post_init__(self) -> None:
        for name in ("chunk_size", "jobs_per_run"):
            if getattr(self, name) < 1:
                raise ValueError(f"BatchOptions.{name} must be >= 1")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError("BatchOptions.max_in_flight must be >= 1 (or None)")
        for name in ("heartbeat_timeout", "attempt_timeout", "retry_initial", "retry_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BatchOptions.{name} must be > 0")
        if self.max_attempts < 0:
            raise ValueError("BatchOptions.max_attempts must be >= 0")


@dataclass(frozen=True)
class JobOutcome:
    """What became of one job (one line of the results, keyed by ``id``).

    :ivar status: ``succeeded``, ``failed``, ``download_failed`` (paid for, images not
        saved), ``expired`` (not started by its ``start_by``: not paid) or ``cancelled`` (the
        workflow was cancelled before it was sent: not paid).
    :ivar retryable: whether running the job again could succeed.
    :ivar attempts: the activity attempt that ended it (1 unless a worker died or the
        network failed on the way).
    """

    id: str
    status: str
    account: str | None = None
    generation_id: str | None = None
    images: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    credits: int = 0
    error: str | None = None
    error_code: str | None = None
    retryable: bool = False
    attempts: int = 1
    finished_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        """The results line (the fields of ``asyncsdk batch --results``, plus attempts)."""
        return dataclasses.asdict(self)


@dataclass
class AccountTally:
    """One account's totals in the progress."""

    done: int = 0
    failed: int = 0
    credits: int = 0


@dataclass
class BatchProgress:
    """Where a batch stands (the workflow's ``progress`` query), over all its runs.

    ``total`` is the number of jobs (``None`` until a file's jobs are counted); ``done``
    succeeded; ``failed`` failed, ended ``download_failed`` or ``expired``; ``cancelled`` were
    never sent; ``running`` are in flight (sent, or waiting for an account); ``retries``
    counts the extra attempts the finished jobs took (a worker died, the network failed). Times
    are Unix seconds of the workflow's clock; ``runs`` counts continue-as-new runs.
    """

    total: int | None = None
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    credits: int = 0
    retries: int = 0
    accounts: dict[str, AccountTally] = field(default_factory=dict)
    started_at: float = 0.0
    updated_at: float = 0.0
    runs: int = 1
    cancelling: bool = False

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.cancelled


@dataclass
class BatchInput:
    """The workflow's argument: the jobs (a list, or a file the workers read), the options,
    and what earlier runs of the same workflow carried over (continue-as-new).

    :ivar jobs: the jobs themselves (keep this to a few thousand: Temporal limits the size
        of one argument; use ``jobs_file`` for more).
    :ivar jobs_file: a JSON Lines or CSV file of jobs (``asyncsdk batch``'s format) that the
        workers can read; read in chunks by an activity.
    :ivar default_model: the model of file jobs that name none.
    """

    jobs: list[JobSpec] | None = None
    jobs_file: str | None = None
    default_model: str = "google/nano-banana"
    options: BatchOptions = field(default_factory=BatchOptions)
    # Carried from run to run (continue-as-new); leave them alone.
    offset: int = 0
    fingerprint: str | None = None
    max_in_flight: int | None = None
    results_size: int = 0
    progress: BatchProgress | None = None
    results: dict[str, JobOutcome] | None = None

    def __post_init__(self) -> None:
        if (self.jobs is None) == (self.jobs_file is None):
            raise ValueError("BatchInput needs jobs or jobs_file (exactly one)")


@dataclass
class BatchResult:
    """The workflow's result: the totals, and each job's outcome keyed by job id (for a
    list of jobs without ``results_file``; else the outcomes are in ``results_file``)."""

    progress: BatchProgress
    results: dict[str, JobOutcome] | None = None
    results_file: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """The argument of the job activity."""

    job: JobSpec
    download_to: str | None = None


@dataclass(frozen=True)
class AccountsInfo:
    """What a worker runs on: its accounts' labels and their generation slots in all."""

    labels: list[str]
    slots: int


@dataclass(frozen=True)
class FileRequest:
    path: str
    default_model: str


@dataclass(frozen=True)
class FileInfo:
    """A jobs file, checked: its jobs and a fingerprint that changes if the file does."""

    jobs: int
    fingerprint: str


@dataclass(frozen=True)
class ChunkRequest:
    path: str
    default_model: str
    fingerprint: str
    start: int
    count: int


@dataclass(frozen=True)
class ResultsWrite:
    """Append ``lines`` to ``path`` at byte ``size`` (whatever an earlier try of the same
    write left past it is cut first, so a retried write never doubles a line)."""

    path: str
    size: int
    lines: list[str]
