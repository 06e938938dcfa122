"""Jobs and what became of them: the batch's data, and the job-level error policy.

A :class:`Job` is one generation to run; a :class:`JobResult` says what became of it, with a
:class:`JobStatus`::

    Job ──► BatchRunner ──► JobResult.status
                              succeeded         the generation succeeded (images saved if asked)
                              failed            refused, failed, or not run (see .retryable)
                              expired           not started by its start_by: nothing was paid
                              download_failed   paid for, images not saved: a rerun saves them

The error policy is one set of predicates, shared by :class:`~asyncsdk.BatchRunner` and the
Temporal activities, over the error a job's submission or generation ended with:

- :func:`is_account_failure`: the account, not the job, is unusable (authentication, credits,
  account gone): the job goes to another account and this one is taken out of the batch;
- :func:`created_nothing`: after this error of a submission nothing can exist (or be charged);
- :func:`is_final`: the job is over for this run (recorded ``failed``, not sent back to
  ``pending``);
- :func:`is_retryable`: running the job again could succeed (the service failed, the network,
  the limits, a deadline), as opposed to a refused prompt or bad input.

This module does no I/O and imports no HTTP code (the CLI builds jobs before it loads aiohttp).
:class:`AccountProgress`, :class:`BatchProgress` and :class:`AccountCheck` are the records
the runner reports its state in.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

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
)
from ._models import Generation

__all__ = [
    "AccountCheck",
    "AccountProgress",
    "BatchProgress",
    "EarlierFailure",
    "Job",
    "JobResult",
    "JobStatus",
    "created_nothing",
    "is_account_failure",
    "is_final",
    "is_retryable",
    "submit_options",
]


_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})  # shared by every job without params


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
            MappingProxyType(dict(params)) if params else _NO_PARAMS,
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


def submit_options(job: Job) -> dict[str, Any]:
    """The job's keyword arguments for :meth:`AsyncClient.submit`; the job id names the
    generation (as the prefix of its tag) unless the job names it."""
    options = dict(job.params)
    if not options.get("name") and len(job.id) >= 3:
        options["name"] = job.id[:30]
    return options


class JobStatus(str, enum.Enum):
    """What became of a job (:attr:`JobResult.status`); compares equal to its string.

    >>> JobStatus.EXPIRED == "expired"
    True
    """

    #: The generation succeeded (and its images were saved, if the runner downloads).
    SUCCEEDED = "succeeded"
    #: Refused, failed, or not run; :attr:`JobResult.retryable` says whether to try again.
    FAILED = "failed"
    #: Not started by its ``start_by``: never sent, nothing paid.
    EXPIRED = "expired"
    #: Paid for, but the images could not be saved: a rerun with the journal saves them.
    DOWNLOAD_FAILED = "download_failed"

    def __str__(self) -> str:
        return self.value


# -- the error policy ---------------------------------------------------------------------------
def is_account_failure(exc: BaseException) -> bool:
    """Errors that say the account, not the job, is unusable."""
    if isinstance(exc, (AuthenticationError, InsufficientCreditsError)):
        return True
    return isinstance(exc, NotFoundError) and exc.code == "ACCOUNT_NOT_FOUND"


def is_final(exc: BaseException) -> bool:
    """Errors that are final for the job in this run: it is recorded ``failed`` (not sent
    back to ``pending``); see :func:`is_retryable` for whether a later run may help."""
    if is_account_failure(exc):
        return False
    if isinstance(exc, (GenerationFailedError, ValueError, TypeError, OSError)):
        return True
    if isinstance(exc, APIError):
        if exc.status is None:  # refused before sending (e.g. an image over the limit)
            return exc.code != "RATE_LIMIT_ERROR"
        return 400 <= exc.status < 500 and exc.status != 429
    return False


def created_nothing(exc: BaseException) -> bool:
    """Errors of a submission after which nothing can have been created (or charged)."""
    if isinstance(exc, APIConnectionError):
        return not exc.request_sent
    if isinstance(exc, APIError):
        if exc.status is None or 400 <= exc.status < 500:
            return True
        return exc.code in NOTHING_CREATED_CODES
    return isinstance(exc, (ValueError, TypeError, OSError))


def is_retryable(exc: BaseException | None) -> bool:
    """Whether running the job again could succeed: the service failed (a failed generation
    is refunded), the network, the limits, a deadline; not a refused prompt or bad input."""
    if exc is None:
        return False
    if isinstance(exc, EarlierFailure):
        return exc.retryable
    if isinstance(exc, (GenerationFailedError, GenerationTimeoutError, JobExpiredError)):
        return True
    if isinstance(exc, (APIConnectionError, RateLimitError)) or is_account_failure(exc):
        return True
    if isinstance(exc, APIError):
        return exc.status is not None and exc.status >= 500
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return False
    return isinstance(exc, AsyncSDKError) and getattr(exc, "code", None) is None


class EarlierFailure(AsyncSDKError):
    """A job that failed in an earlier run, as the journal recorded it."""

    def __init__(self, message: str, code: str | None, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


# -- records --------------------------------------------------------------------------------------
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
    retryable: bool = attrs.Factory(lambda self: is_retryable(self.error), takes_self=True)

    @property
    def ok(self) -> bool:
        return self.generation is not None and self.error is None

    @property
    def status(self) -> JobStatus:
        """``succeeded``, ``failed``, ``expired`` (never started: nothing paid) or
        ``download_failed`` (paid for; a rerun with the journal saves the images)."""
        if self.ok:
            return JobStatus.SUCCEEDED
        if isinstance(self.error, JobExpiredError):
            return JobStatus.EXPIRED
        if self.generation is not None:
            return JobStatus.DOWNLOAD_FAILED
        return JobStatus.FAILED

    @property
    def credits(self) -> int:
        """Credits the job's generation cost (a failed generation is refunded: 0)."""
        return (self.generation.credit_cost or 0) if self.generation is not None else 0


@attrs.frozen
class AccountProgress:
    """One account's line of the progress display.

    ``state`` is what the account is doing: ``idle``, ``waiting`` (for its gate),
    ``waiting (budget)``, ``submitting``, the status of the generation it watches
    (``starting``, ``processing``...), ``out`` (taken out: ``out`` says why) or ``done``.
    """

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
