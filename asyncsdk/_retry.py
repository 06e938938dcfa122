"""What is retried, and how long to wait before the next try.

:func:`is_retryable` is the one predicate for reads (status polls, lists, account, downloads):
connection failures, timeouts, HTTP 5xx, a 2xx answer that cannot be read, and a
``RATE_LIMIT_ERROR`` on a read. Everything
else (400, 401, 402, 404, a concurrency 429) is raised at once. Submissions follow stricter
rules (:mod:`asyncsdk._submission`), because retrying one can cost money: only a request
that provably never left and the 5xx codes after which the service promises nothing was
created (:data:`~asyncsdk._errors.NOTHING_CREATED_CODES`) are resent blindly; an unknown
outcome is settled first.

:func:`wait_times` is a backoff 2.x wait generator: it is sent each exception and answers
with the pause before the next try. A server hint (``X-RateLimit-Reset`` or ``Retry-After``,
folded into :attr:`RateLimitError.reset_at`) wins over exponential backoff; backoff uses "full
jitter" (uniform in ``[0, min(cap, base * 2**n)]``), so pass ``jitter=None`` to backoff. Both
forms are capped, the hint at ``hint_cap`` (the client passes one window: no server hint may
stall it longer than the limits it publishes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final, TypeVar

import backoff

from ._errors import (
    APIConnectionError,
    APIResponseValidationError,
    AsyncSDKError,
    ConcurrencyLimitError,
    RateLimitError,
    ServerError,
)

__all__ = ["MAX_HINT", "is_retryable", "retrying", "wait_times"]

logger = logging.getLogger("asyncsdk")

F = TypeVar("F", bound=Callable[..., Any])

#: Longest pause a server hint may impose, in seconds, unless the caller caps it lower.
MAX_HINT: Final = 120.0
#: One generator for every jitter draw (seeding one per call costs more than the draw).
_RNG: Final = random.Random()


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed *read* is worth another try."""
    if isinstance(exc, (APIConnectionError, ServerError, APIResponseValidationError)):
        return True
    return isinstance(exc, RateLimitError) and not isinstance(exc, ConcurrencyLimitError)


def hinted_wait(
    exc: BaseException | None, now: float | None = None, cap: float = MAX_HINT
) -> float | None:
    """The pause the server asked for with this error, if it asked (at most ``cap``)."""
    reset_at = exc.reset_at if isinstance(exc, RateLimitError) else None
    if reset_at is None:
        return None
    now = time.time() if now is None else now
    return min(max(reset_at - now, 0.0), cap)


def wait_times(
    base: float, cap: float, rng: random.Random | None = None, hint_cap: float = MAX_HINT
) -> Generator[float, BaseException | None, None]:
    """Pauses between tries; send the last exception in (backoff does)."""
    uniform = (rng or _RNG).uniform
    attempt = 0
    exc = yield 0.0  # backoff primes the generator with send(None)
    while True:
        hint = hinted_wait(exc, cap=hint_cap)
        wait = hint if hint is not None else uniform(0.0, min(cap, base * 2**attempt))
        attempt += 1
        exc = yield wait


def retrying(
    max_retries: int, backoff_range: tuple[float, float], hint_cap: float = MAX_HINT
) -> Callable[[F], F]:
    """The one retrying wrapper (reads, downloads): backoff's loop over :func:`wait_times`,
    giving up on what :func:`is_retryable` rejects."""
    base, cap = backoff_range
    return backoff.on_exception(
        wait_times,
        AsyncSDKError,
        max_tries=max_retries + 1,
        giveup=lambda exc: not is_retryable(exc),
        on_backoff=_log_retry,
        jitter=None,  # wait_times jitters already
        logger=None,
        base=base,
        cap=cap,
        hint_cap=hint_cap,
    )


def _log_retry(details: Mapping[str, Any]) -> None:
    logger.info(
        "retrying %s in %.2fs after %s",
        details["args"][0] if details["args"] else "request",
        details["wait"],
        details.get("exception"),
    )
