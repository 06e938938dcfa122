"""Retry waits and the read predicate without sockets: hints first, capped, full jitter."""

from __future__ import annotations

import random
import time
from collections.abc import Generator

import pytest

from asyncsdk import (
    APIConnectionError,
    APIResponseValidationError,
    BadRequestError,
    ConcurrencyLimitError,
    RateLimitError,
    ServerError,
)
from asyncsdk._retry import MAX_HINT, hinted_wait, is_retryable, wait_times

BASE, CAP = 0.5, 4.0


def primed(
    rng: random.Random | None = None, hint_cap: float = MAX_HINT
) -> Generator[float, BaseException | None, None]:
    """A wait generator as backoff drives it: primed with ``send(None)``, answering 0."""
    waits = wait_times(BASE, CAP, rng, hint_cap=hint_cap)
    assert waits.send(None) == 0.0
    return waits


def limited(in_seconds: float) -> RateLimitError:
    return RateLimitError("slow down", status=429, reset_at=time.time() + in_seconds)


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    rng = random.Random(1)
    ceilings = [min(CAP, BASE * 2**n) for n in range(8)]  # 0.5, 1, 2, 4, 4, ...
    for _ in range(200):
        waits = primed(rng)
        for ceiling in ceilings:
            assert 0.0 <= waits.send(ServerError("boom", status=500)) <= ceiling
    # Full jitter, not "equal jitter": the draws reach well into the lower half.
    waits = primed(random.Random(2))
    draws = [waits.send(None) for _ in range(400)][3:]  # all under the cap of 4 s
    assert min(draws) < CAP / 4 and max(draws) > CAP * 3 / 4


def test_a_seeded_generator_gives_the_same_waits_as_its_own_draws() -> None:
    waits = primed(random.Random(42))
    got = [waits.send(None) for _ in range(6)]
    expected = random.Random(42)
    assert got == [expected.uniform(0.0, min(CAP, BASE * 2**n)) for n in range(6)]
    again = primed(random.Random(42))
    assert [again.send(None) for _ in range(6)] == got


def test_a_server_hint_wins_over_backoff() -> None:
    waits = primed(random.Random(3))
    wait = waits.send(limited(30.0))  # far above the backoff cap of 4 s
    assert 29.0 < wait <= 30.0
    # The hint used a try: the next backoff draws under the second ceiling (2 * BASE).
    assert 0.0 <= waits.send(ServerError("boom", status=500)) <= 2 * BASE


def test_a_hint_is_capped_at_hint_cap_and_never_negative() -> None:
    waits = primed(random.Random(4), hint_cap=10.0)
    assert waits.send(limited(3600.0)) == 10.0
    assert waits.send(limited(-5.0)) == 0.0  # a reset already past: no wait
    assert primed(random.Random(4)).send(limited(3600.0)) == MAX_HINT


def test_hinted_wait_reads_only_rate_limit_errors_with_a_reset() -> None:
    now = 1000.0
    hinted = RateLimitError("slow", status=429, reset_at=1002.5)
    assert hinted_wait(hinted, now=now) == 2.5
    assert hinted_wait(hinted, now=now, cap=1.0) == 1.0
    assert hinted_wait(RateLimitError("slow", status=429), now=now) is None
    assert hinted_wait(ServerError("boom", status=503), now=now) is None
    assert hinted_wait(None, now=now) is None


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (APIConnectionError("refused", request_sent=False), True),
        (ServerError("boom", status=502), True),
        (APIResponseValidationError("unreadable", status=200), True),
        (RateLimitError("window full", status=429, code="RATE_LIMIT_ERROR"), True),
        (ConcurrencyLimitError("busy", status=429), False),
        (BadRequestError("bad", status=400), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_the_read_predicate(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable
