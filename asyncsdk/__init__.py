"""asyncsdk: the async-first Python SDK for the BabySea image-generation API.

>>> import asyncsdk
>>> async def main() -> None:                                 # doctest: +SKIP
...     async with asyncsdk.AsyncClient() as client:        # BABYSEA_API_KEY from the env
...         generation = await client.generate("google/nano-banana", "a red kite at dawn")
...         print(await client.download(generation, "out"))

The public surface is this module: every name below is re-exported explicitly from a private
module, and tracebacks show them as ``asyncsdk.Name``. Where each concern lives::

    the client, one account
      _client.py      AsyncClient: configuration, key hygiene, lifecycle; composes the rest
      _transport.py   the only module that touches aiohttp: the shared pool, the error seam
      _reads.py       status, account, lists, records, and the one retry policy (_retry.py)
      _request.py     a submission's arguments, checked, and its tag
      _submission.py  the submission protocol: reserve → send → created / nothing / unknown
      _watch.py       watch() / wait(), bounded by the service's deadline; _polling.py plans
                      the polls, _wakeups.py takes webhook deliveries (notify())
      _downloads.py   output images, atomically
      _telemetry.py   OpenTelemetry spans and metrics (the otel extra); _logs.py: ASYNCSDK_LOG
    the limits
      _config.py      Limits and every default; the environment is read here only
      _limits.py      the gate protocol and the in-process gate (window, slot, lanes, probe)
      _redis/         RedisGate: the same gate across processes, Lua scripts in files
    data
      _models.py      frozen attrs records; _wire.py: the one cattrs converter
      _errors.py      the error tree, the code → class table, redaction of server text
      _images.py      image inputs (URLs, files, bytes → data: URIs)
    batches
      _jobs.py        Job, JobResult and the error policy of a job
      _queue.py       the job queue (handed-back jobs first, the source read lazily)
      _budget.py      prices learnt and the credit cap
      _journal.py     the SQLite journal that makes reruns pay once
      _batch.py       BatchRunner: one worker per account slot, pulling jobs
      _jobfile.py     JSON Lines / CSV job files
    around it
      cli.py, _display.py, _demo.py   the ``asyncsdk`` command
      webhooks.py     verify() / sign() webhook deliveries
      emulator/       the embedded BabySea emulator (its own docstring maps it)
      testing/        the pytest plugin for users' tests
      temporal/       durable batches on Temporal (the temporal extra)
"""

import importlib as _importlib
import typing as _typing

from ._config import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from ._config import Limits as Limits
from ._errors import APIConnectionError as APIConnectionError
from ._errors import APIError as APIError
from ._errors import APIResponseValidationError as APIResponseValidationError
from ._errors import APITimeoutError as APITimeoutError
from ._errors import AsyncSDKError as AsyncSDKError
from ._errors import AuthenticationError as AuthenticationError
from ._errors import BadRequestError as BadRequestError
from ._errors import ConcurrencyLimitError as ConcurrencyLimitError
from ._errors import ContentPolicyError as ContentPolicyError
from ._errors import GenerationFailedError as GenerationFailedError
from ._errors import GenerationTimeoutError as GenerationTimeoutError
from ._errors import ImageInputError as ImageInputError
from ._errors import InsufficientCreditsError as InsufficientCreditsError
from ._errors import JobExpiredError as JobExpiredError
from ._errors import NotFoundError as NotFoundError
from ._errors import RateLimitError as RateLimitError
from ._errors import ServerError as ServerError
from ._errors import SubmissionUnknownError as SubmissionUnknownError
from ._jobs import AccountCheck as AccountCheck
from ._jobs import AccountProgress as AccountProgress
from ._jobs import BatchProgress as BatchProgress
from ._jobs import Job as Job
from ._jobs import JobResult as JobResult
from ._jobs import JobStatus as JobStatus
from ._journal import Journal as Journal
from ._limits import AccountGate as AccountGate
from ._limits import Gate as Gate
from ._limits import GateStatistics as GateStatistics
from ._limits import Holder as Holder
from ._limits import LocalGate as LocalGate
from ._limits import Permit as Permit
from ._limits import Priority as Priority
from ._logs import setup_logging as _setup_logging
from ._models import AccountDetails as AccountDetails
from ._models import AccountInfo as AccountInfo
from ._models import ApiKeyInfo as ApiKeyInfo
from ._models import ApiStatus as ApiStatus
from ._models import Credits as Credits
from ._models import Generation as Generation
from ._models import GenerationPage as GenerationPage
from ._models import GenerationStatus as GenerationStatus
from ._models import RateLimitInfo as RateLimitInfo
from ._models import Submission as Submission
from ._version import __version__ as __version__

if _typing.TYPE_CHECKING:
    from . import webhooks as webhooks
    from ._batch import BatchRunner as BatchRunner
    from ._client import AsyncClient as AsyncClient
    from ._redis import RedisGate as RedisGate
    from ._redis import RedisGateError as RedisGateError
    from ._submission import Reservation as Reservation

#: Names imported on first use: `import asyncsdk` needs no optional extra (redis), and
#: neither it nor `asyncsdk --help` imports aiohttp (the client and the batch runner load it).
_LAZY = {
    "AsyncClient": "._client",
    "BatchRunner": "._batch",
    "RedisGate": "._redis",
    "RedisGateError": "._redis",
    "Reservation": "._submission",
    "webhooks": ".webhooks",
}


def __getattr__(name: str) -> object:
    """Import a lazy name's module on first use (a clear ImportError for a missing extra);
    every public name of that module is then bound here and claims ``asyncsdk``."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    imported = _importlib.import_module(module, __name__)
    if name == "webhooks":
        globals()[name] = imported
        return imported
    for other, where in _LAZY.items():
        if where == module and other != "webhooks":
            value = getattr(imported, other)
            value.__module__ = __name__
            globals()[other] = value
    return globals()[name]


__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APITimeoutError",
    "AccountCheck",
    "AccountDetails",
    "AccountGate",
    "AccountInfo",
    "AccountProgress",
    "ApiKeyInfo",
    "ApiStatus",
    "AsyncClient",
    "AsyncSDKError",
    "AuthenticationError",
    "BadRequestError",
    "BatchProgress",
    "BatchRunner",
    "ConcurrencyLimitError",
    "ContentPolicyError",
    "Credits",
    "DEFAULT_BASE_URL",
    "Gate",
    "GateStatistics",
    "Generation",
    "GenerationFailedError",
    "GenerationPage",
    "GenerationStatus",
    "GenerationTimeoutError",
    "Holder",
    "ImageInputError",
    "InsufficientCreditsError",
    "Job",
    "JobExpiredError",
    "JobResult",
    "JobStatus",
    "Journal",
    "Limits",
    "LocalGate",
    "NotFoundError",
    "Permit",
    "Priority",
    "RateLimitError",
    "RateLimitInfo",
    "RedisGate",
    "RedisGateError",
    "Reservation",
    "ServerError",
    "Submission",
    "SubmissionUnknownError",
    "__version__",
]

# Tracebacks and reprs read `asyncsdk.RateLimitError`, not `asyncsdk._errors.RateLimitError`.
for _name in __all__:
    if _name in _LAZY:
        continue
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("asyncsdk._"):
        _obj.__module__ = "asyncsdk"
del _name, _obj

# ASYNCSDK_LOG=debug|info, and credentials scrubbed from every record of the asyncsdk loggers.
_setup_logging()
