"""The exception tree, and the table that maps the service's error codes onto it.

::

    AsyncSDKError
    ├── APIError                 .status .code .message .request_id (X-Request-ID)
    │   ├── AuthenticationError      AUTHENTICATION_FAILED, MISSING_API_TOKEN, INVALID_API_TOKEN
    │   ├── BadRequestError          INVALID_JSON, VALIDATION_ERROR
    │   ├── ContentPolicyError       NSFW_CONTENT_DETECTED
    │   ├── ImageInputError          IMAGE_SIZE_LIMIT_EXCEEDED, IMAGE_DOWNLOAD_FAILED
    │   ├── InsufficientCreditsError INSUFFICIENT_CREDITS
    │   ├── NotFoundError            INVALID_GENERATION_ID, GENERATION_NOT_FOUND,
    │   │                            ACCOUNT_NOT_FOUND
    │   ├── RateLimitError           RATE_LIMIT_ERROR            .reset_at
    │   │   └── ConcurrencyLimitError  CONCURRENT_GENERATION_ERROR
    │   ├── ServerError              every HTTP 500 code (FETCH_FAILED, ...)
    │   └── APIResponseValidationError  a 2xx answer that cannot be read
    ├── APIConnectionError       network failure; subclass APITimeoutError (a TimeoutError)
    ├── SubmissionUnknownError   .tag .sent_at: sent, and nothing readable has said since
    │                            whether it created a generation
    ├── GenerationFailedError    .generation (status failed, .failure_reason)
    ├── GenerationTimeoutError   .generation_id .last_status
    └── JobExpiredError          .job_id .start_by: a batch job not started by its deadline

:func:`error_for` turns an error response into the right class: by code when the code is
known, else by HTTP status, keeping the unknown code on ``.code``. Errors the SDK raises before
anything is sent (an image over the size limit, a submission that would have to wait past the
caller's deadline) use the same classes with ``status=None``.

Misuse of the SDK itself (bad arguments, a closed client) raises ``ValueError``,
``TypeError`` or ``RuntimeError``, outside this tree. No message ever contains the API key:
text a server sent (messages, body snippets) is scrubbed of it by the transport before any
error is built from it (:func:`redact`), and URLs in messages lose their query strings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._models import Generation, GenerationStatus, RateLimitInfo

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APITimeoutError",
    "AsyncSDKError",
    "AuthenticationError",
    "BadRequestError",
    "ConcurrencyLimitError",
    "ContentPolicyError",
    "GenerationFailedError",
    "GenerationTimeoutError",
    "ImageInputError",
    "JobExpiredError",
    "InsufficientCreditsError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "SubmissionUnknownError",
    "error_for",
    "redact",
]


class AsyncSDKError(Exception):
    """Base class of every error this SDK raises on purpose."""


class APIError(AsyncSDKError):
    """The service answered with an error (or would have: see ``status=None``).

    :ivar status: the HTTP status, or ``None`` when the SDK raised it before sending.
    :ivar code: the service's error code, e.g. ``"VALIDATION_ERROR"``.
    :ivar message: the service's human-readable message.
    :ivar request_id: the ``X-Request-ID`` of the response; quote it to support.
    :ivar rate_limit: the response's ``X-RateLimit-*`` headers, when it had them.
    """

    status: int | None
    code: str | None
    message: str
    request_id: str | None
    rate_limit: RateLimitInfo | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        head = " ".join(str(part) for part in (status, code) if part is not None)
        text = f"{head}: {message}" if head else message
        if request_id:
            text += f" (request id: {request_id})"
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments would otherwise be lost when pickling (multiprocessing).
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[APIError], message: str, state: dict[str, object]) -> APIError:
    error = cls.__new__(cls)
    AsyncSDKError.__init__(error, message)
    error.__dict__.update(state)
    return error


class AuthenticationError(APIError):
    """The API key is missing, malformed, unknown, expired or revoked (HTTP 401)."""


class BadRequestError(APIError):
    """The request was rejected as malformed or invalid (HTTP 400)."""


class ContentPolicyError(APIError):
    """The prompt or an input image was refused by the content filter."""


class ImageInputError(APIError):
    """An input image is too large, or could not be downloaded or read."""


class InsufficientCreditsError(APIError):
    """The account has not enough credits for the generation (HTTP 402); nothing was charged."""


class NotFoundError(APIError):
    """The generation id is malformed or unknown, or the account no longer exists (HTTP 404)."""


class RateLimitError(APIError):
    """Too many submissions in the window (HTTP 429).

    :ivar reset_at: Unix time (seconds) at which a submission is admitted again, when known.
    """

    reset_at: float | None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        reset_at: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, request_id=request_id)
        self.reset_at = reset_at


class ConcurrencyLimitError(RateLimitError):
    """A generation is already in progress on the account (HTTP 429)."""


class ServerError(APIError):
    """The service failed (HTTP 5xx)."""


class APIResponseValidationError(APIError):
    """The service answered 2xx, but the answer cannot be read (truncated JSON, an HTML page,
    a record without the fields every answer has).

    On a read it is retried like a 5xx. On a submission it means the outcome is unknown: the
    service may have created the generation, so the SDK looks for it before anything else.
    """


class APIConnectionError(AsyncSDKError):
    """The service could not be reached, or the connection broke before an answer came.

    :ivar request_sent: ``False`` only when the request certainly never reached the service
        (the connection could not be opened); otherwise the service may have acted on it.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_connection_error, (type(self), str(self), self.request_sent))


def _rebuild_connection_error(
    cls: type[APIConnectionError], message: str, request_sent: bool
) -> APIConnectionError:
    return cls(message, request_sent=request_sent)


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer within the request timeout."""


class SubmissionUnknownError(AsyncSDKError):
    """A submission was sent, and nothing readable has said since whether it created a
    generation (its answer was lost or unreadable, and the list could not be read, or did
    not settle, before the caller's deadline).

    Nothing is sent again. The generation, if any, carries ``tag`` in its ``name``: look for
    it later (``await client.reconcile(tag, sent_at=sent_at)``) before submitting again.

    :ivar tag: the tag the submission carried in ``name``.
    :ivar sent_at: Unix time the request left.
    :ivar prompt: the submission's prompt (with ``tag``, what identifies it in the list).
    """

    def __init__(self, tag: str, sent_at: float, prompt: str, reason: str = "") -> None:
        self.tag = tag
        self.sent_at = sent_at
        self.prompt = prompt
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"submission {tag} was sent, and whether it created a generation is not known"
            f"{detail}; it is not sent again: look for a generation named {tag!r} "
            "(client.reconcile) before submitting again"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.tag, self.sent_at, self.prompt, self.reason))


class GenerationFailedError(AsyncSDKError):
    """A generation ended ``failed``; ``.generation.failure_reason`` says why."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        reason = generation.failure_reason or "no reason given"
        super().__init__(f"generation {generation.generation_id} failed: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.generation,))


class GenerationTimeoutError(AsyncSDKError, TimeoutError):
    """The caller's deadline passed before the generation ended."""

    def __init__(self, generation_id: str, last_status: GenerationStatus | None) -> None:
        self.generation_id = generation_id
        self.last_status = last_status
        seen = last_status.value if last_status is not None else "never seen"
        super().__init__(f"generation {generation_id} did not end in time (last status: {seen})")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.generation_id, self.last_status))


class JobExpiredError(AsyncSDKError):
    """A batch job could not start before its ``start_by`` deadline; it was never submitted
    (nothing was paid), and a rerun may run it.

    :ivar job_id: the job's id.
    :ivar start_by: the deadline, Unix time.
    """

    def __init__(self, job_id: str, start_by: float) -> None:
        self.job_id = job_id
        self.start_by = start_by
        late = time.strftime("%H:%M:%S", time.localtime(start_by))
        super().__init__(f"job {job_id} could not start by its deadline ({late}); not submitted")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.job_id, self.start_by))


_BY_CODE: Final[Mapping[str, type[APIError]]] = {
    "AUTHENTICATION_FAILED": AuthenticationError,
    "MISSING_API_TOKEN": AuthenticationError,
    "INVALID_API_TOKEN": AuthenticationError,
    "INVALID_JSON": BadRequestError,
    "VALIDATION_ERROR": BadRequestError,
    "NSFW_CONTENT_DETECTED": ContentPolicyError,
    "IMAGE_SIZE_LIMIT_EXCEEDED": ImageInputError,
    "IMAGE_DOWNLOAD_FAILED": ImageInputError,
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "INVALID_GENERATION_ID": NotFoundError,
    "GENERATION_NOT_FOUND": NotFoundError,
    "ACCOUNT_NOT_FOUND": NotFoundError,
    "RATE_LIMIT_ERROR": RateLimitError,
    "CONCURRENT_GENERATION_ERROR": ConcurrencyLimitError,
    "FAILED_TO_VALIDATE_TOKEN": ServerError,
    "FETCH_FAILED": ServerError,
    "IMAGE_UPLOAD_FAILED": ServerError,
    "GENERATION_UPDATE_FAILED": ServerError,
    "GENERATION_INIT_FAILED": ServerError,
    "CREDIT_PROCESSING_FAILED": ServerError,
    "GENERATION_START_FAILED": ServerError,
    "INTERNAL_SERVER_ERROR": ServerError,
}

_BY_STATUS: Final[Mapping[int, type[APIError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: AuthenticationError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}

#: 5xx codes after which the service promises that nothing was created or charged.
NOTHING_CREATED_CODES: Final = frozenset(
    {
        "FAILED_TO_VALIDATE_TOKEN",
        "GENERATION_INIT_FAILED",
        "CREDIT_PROCESSING_FAILED",
        "GENERATION_START_FAILED",
    }
)


#: The shape of an API key, redacted wherever server text may echo one (not only ours).
_KEY_SHAPE: Final = re.compile(r"bye_[A-Za-z0-9_-]+")
_BEARER: Final = re.compile(r"(?i)(bearer\s+)[^\s,;\"'<>]+")


_QUERY: Final = re.compile(r"""((?:https?|wss?)://[^\s?#'"<>]*)[?#][^\s'"<>]*""")


def redact(text: str, *secrets: str) -> str:
    """``text`` without ``secrets``, without anything shaped like an API key or a bearer
    credential, and without the query strings of URLs (a CDN's may be a signature).

    >>> redact("echo: Authorization: Bearer bye_0123abcd, X-API-Key: bye_0123abcd")
    'echo: Authorization: Bearer ***, X-API-Key: bye_***'
    >>> redact("GET https://cdn.example/1.png?sig=abc failed")
    'GET https://cdn.example/1.png failed'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _QUERY.sub(r"\1", text)
    return _BEARER.sub(r"\1***", _KEY_SHAPE.sub("bye_***", text))


def error_for(
    status: int,
    code: str | None,
    message: str,
    *,
    request_id: str | None = None,
    rate_limit: RateLimitInfo | None = None,
) -> APIError:
    """The exception for an error response: by ``code`` first, then by HTTP ``status``."""
    cls = _BY_CODE.get(code or "")
    if cls is None:
        cls = ServerError if status >= 500 else _BY_STATUS.get(status, APIError)
    if issubclass(cls, RateLimitError):
        reset_at = rate_limit.resume_at() if rate_limit is not None else None
        error: APIError = cls(
            message, status=status, code=code, request_id=request_id, reset_at=reset_at
        )
    else:
        error = cls(message, status=status, code=code, request_id=request_id)
    error.rate_limit = rate_limit
    return error
