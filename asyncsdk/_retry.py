"""What is retried, and how long to wait before the next try.

:func:`is_retryable` is the one predicate for reads (status polls, lists, account, downloads):
connection failures, timeouts, HTTP 5xx, and a ``RATE_LIMIT_ERROR`` on a read. Everything
else (400, 401, 402, 404, a concurrency 429) is raised at once. Submissions follow stricter
rules in the client, because retrying one can cost money: only the 5xx codes after which the
service promises nothing was created (:data:`~asyncsdk._errors.NOTHING_CREATED_CODES`) are
resent blindly; a lost answer is reconciled first.

:func:`wait_times` is a backoff 2.x wait generator: it is sent each exception and answers
with the pause before the next try. A server hint (``X-RateLimit-Reset`` or ``Retry-After``,
folded into :attr:`RateLimitError.reset_at`) wins over exponential backoff; backoff uses "full
jitter" (uniform in ``[0, min(cap, base * 2**n)]``), so pass ``jitter=None`` to backoff. Both
forms are capped, the hint at :data:`MAX_HINT`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator
from typing import Final

from ._errors import APIConnectionError, ConcurrencyLimitError, RateLimitError, ServerError

__all__ = ["MAX_HINT", "is_retryable", "wait_times"]

#: Longest pause a server hint may impose before the SDK gives up on it, in seconds.
MAX_HINT: Final = 120.0


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed *read* is worth another try."""
    if isinstance(exc, (APIConnectionError, ServerError)):
        return True
    return isinstance(exc, RateLimitError) and not isinstance(exc, ConcurrencyLimitError)


def hinted_wait(exc: BaseException | None, now: float | None = None) -> float | None:
    """The pause the server asked for with this error, if it asked."""
    reset_at = exc.reset_at if isinstance(exc, RateLimitError) else None
    if reset_at is None:
        return None
    now = time.time() if now is None else now
    return min(max(reset_at - now, 0.0), MAX_HINT)


def wait_times(
    base: float, cap: float, rng: random.Random | None = None
) -> Generator[float, BaseException | None, None]:
    """Pauses between tries; send the last exception in (backoff does)."""
    uniform = (rng or random.Random()).uniform
    attempt = 0
    exc = yield 0.0  # backoff primes the generator with send(None)
    while True:
        hint = hinted_wait(exc)
        wait = hint if hint is not None else uniform(0.0, min(cap, base * 2**attempt))
        attempt += 1
        exc = yield wait
