"""When to poll a running generation next: adaptive, and dense where completion is likely.

A generation's status is only known by polling, so every poll trades requests for detection
delay. :class:`PollSchedule` spends few polls early and many near the end:

- Without a hint it starts at ``poll_interval`` and backs off by 1.5x to
  ``poll_interval * MAX_POLL_FACTOR``.
- With a hint (the expected time from submission to the end, learnt per model from the
  ``totalTime`` / ``predictTime`` of the generations the client has seen end, by
  :class:`DurationModel`), it sleeps straight to the expected end, then polls densely
  (``poll_interval / 8``, backing off slowly) until the generation ends.

Pure arithmetic over the caller's clock readings: no I/O, unit-tested without sleeping.
"""

from __future__ import annotations

from typing import Final

from ._config import MAX_POLL_FACTOR
from ._models import Generation

__all__ = ["DurationModel", "PollSchedule"]

DENSE_FACTOR: Final = 1 / 8
BACKOFF: Final = 1.5
#: Weight of the newest observation in the running mean of a model's durations.
ALPHA: Final = 0.3


class DurationModel:
    """Running estimate of how long generations take, per model provider."""

    def __init__(self) -> None:
        self._mean: dict[str | None, float] = {}

    def observe(self, generation: Generation) -> None:
        seconds = generation.total_time or generation.predict_time
        if not seconds or seconds <= 0:
            return
        key = generation.model_provider
        old = self._mean.get(key)
        self._mean[key] = seconds if old is None else old + ALPHA * (seconds - old)

    def expected(self, model_provider: str | None) -> float | None:
        """Expected seconds from creation to the end, or ``None`` before any observation."""
        return self._mean.get(model_provider)


class PollSchedule:
    """The delays between the polls of one generation (see the module docstring)."""

    def __init__(self, poll_interval: float, *, started: float, expected: float | None) -> None:
        self.poll_interval = poll_interval
        self.started = started
        self.expected = expected
        self._next_backoff = poll_interval
        self._dense = poll_interval * DENSE_FACTOR
        self._first = True

    def next_delay(self, now: float) -> float:
        """Seconds to sleep before the next poll, given the time of the last one."""
        cap = self.poll_interval * MAX_POLL_FACTOR
        if self.expected is not None:
            until_end = self.started + self.expected - now
            if until_end > self._dense:
                # Catch the starting -> processing change first, then aim at the end.
                delay = min(self.poll_interval, until_end) if self._first else until_end
                self._first = False
                return min(delay, cap)
            delay, self._dense = self._dense, min(self._dense * 1.2, self.poll_interval)
            return delay
        delay, self._next_backoff = self._next_backoff, min(self._next_backoff * BACKOFF, cap)
        return delay
