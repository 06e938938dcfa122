"""When to poll a running generation next: adaptive, and dense where completion is likely.

A generation's status is only known by polling, so every poll trades requests for detection
delay. :class:`PollSchedule` spends few polls early and most of them where the end is likely:

- Without a hint (the first generation of a model) it starts at ``poll_interval`` and backs
  off by 1.5x to ``backoff_cap`` (default ``poll_interval * MAX_POLL_FACTOR``). The client
  passes ``poll_interval * COLD_FACTOR``, i.e. it polls a model's first generation like a
  fixed 1 s poller: backing off to 5 s made a cold 10 s generation 2-3 s late, and a batch
  carries that delay into its next window. It happens once per model and client.
- With a hint (how long generations of the model take from creation to the end, and how much
  that varies, learnt by :class:`DurationModel` from the ``totalTime`` / ``predictTime`` of
  the generations the client has seen end), it waits for the *window of likely ends*,
  ``expected +/- spread``, and polls across it every ``poll_interval * WINDOW_FACTOR``. The
  mean detection delay is then half a step (0.125 s at the default 1 s interval) and the polls
  in the window ``2 * spread / step``. A narrow window (``spread`` at most
  ``poll_interval * SINGLE_FACTOR``) is polled once, at its far edge: the mean delay is then
  ``spread``, for one poll. On a long wait it looks once after ``poll_interval`` (to report
  ``starting -> processing``) and at least every ``poll_interval * MAX_POLL_FACTOR`` (in case
  the hint is wrong). Past the window (a late generation) it polls densely, ``poll_interval / 8``,
  backing off slowly to ``poll_interval``.

Aiming at the mean alone (the first version) detected every generation that ended early only
at the mean: with durations varying by +/-10% that is a second late on average for a 40 s
generation. The spread is ``SPREAD_FACTOR`` times the running mean absolute deviation of the
durations: twice the deviation covers a uniform spread entirely and nine tenths of a normal
one. After a single observation the deviation is taken as ``INITIAL_DEVIATION`` of it.
The benchmark ``benchmarks/polling.py`` measures the result against a fixed 1 s poller.

Pure arithmetic over the caller's clock readings: no I/O, unit-tested without sleeping.
"""

from __future__ import annotations

import collections
from typing import Final

from ._config import MAX_POLL_FACTOR
from ._models import Generation

__all__ = ["DurationModel", "PollSchedule"]

DENSE_FACTOR: Final = 1 / 8
BACKOFF: Final = 1.5
#: Longest pause between polls without a hint that the client asks for, in poll intervals.
COLD_FACTOR: Final = 1.0
#: Poll step across the window of likely ends, in poll intervals (the delay is half of it).
WINDOW_FACTOR: Final = 0.25
#: A window of likely ends at most this wide (in poll intervals, each side) is polled once.
SINGLE_FACTOR: Final = 0.3
#: A wait longer than this many poll intervals gets one early look (``processing``).
EARLY_LOOK_FACTOR: Final = 4.0
#: Weight of the newest observation in the running mean (and deviation) of a model's durations.
ALPHA: Final = 0.3
#: The window of likely ends is the mean +/- this many mean absolute deviations.
SPREAD_FACTOR: Final = 2.0
#: Relative deviation assumed after a model's first observation.
INITIAL_DEVIATION: Final = 0.05
#: How many observed generations are remembered, so that a record read twice counts once.
_SEEN_MEMORY: Final = 1024


class DurationModel:
    """Running estimate of how long generations take, and how much that varies, per model."""

    def __init__(self) -> None:
        self._mean: dict[str | None, float] = {}
        self._deviation: dict[str | None, float] = {}
        self._seen: collections.OrderedDict[tuple[str, float], None] = collections.OrderedDict()

    def observe(self, generation: Generation) -> None:
        seconds = generation.total_time or generation.predict_time
        if not seconds or seconds <= 0:
            return
        # Every read of an ended generation comes here (polls, lists): count each once.
        seen = (generation.generation_id, seconds)
        if seen in self._seen:
            return
        self._seen[seen] = None
        if len(self._seen) > _SEEN_MEMORY:
            self._seen.popitem(last=False)
        key = generation.model_provider
        old = self._mean.get(key)
        if old is None:
            self._mean[key] = seconds
            self._deviation[key] = seconds * INITIAL_DEVIATION
            return
        error = seconds - old
        self._mean[key] = old + ALPHA * error
        self._deviation[key] += ALPHA * (abs(error) - self._deviation[key])

    def expected(self, model_provider: str | None) -> float | None:
        """Expected seconds from creation to the end, or ``None`` before any observation."""
        return self._mean.get(model_provider)

    def spread(self, model_provider: str | None) -> float:
        """Half the width of the window of likely ends, in seconds (0 when unknown)."""
        return SPREAD_FACTOR * self._deviation.get(model_provider, 0.0)


class PollSchedule:
    """The delays between the polls of one generation (see the module docstring)."""

    def __init__(
        self,
        poll_interval: float,
        *,
        started: float,
        expected: float | None,
        spread: float = 0.0,
        backoff_cap: float | None = None,
    ) -> None:
        self.poll_interval = poll_interval
        self.started = started
        self.expected = expected
        self.spread = max(spread, 0.0)
        self.backoff_cap = (
            backoff_cap if backoff_cap is not None else poll_interval * MAX_POLL_FACTOR
        )
        self._next_backoff = poll_interval
        self._dense = poll_interval * DENSE_FACTOR
        self._step = poll_interval * WINDOW_FACTOR
        self._first = True

    def next_delay(self, now: float) -> float:
        """Seconds to sleep before the next poll, given the time of the last one."""
        cap = self.poll_interval * MAX_POLL_FACTOR
        if self.expected is None:
            delay = self._next_backoff
            self._next_backoff = min(self._next_backoff * BACKOFF, self.backoff_cap)
            return delay
        end = self.started + self.expected
        narrow = self.spread <= self.poll_interval * SINGLE_FACTOR
        first_look = end + self.spread if narrow else end - self.spread + self._step
        until = first_look - now
        if until > self.poll_interval / 100:  # not there yet (a hair counts as there)
            delay = until
            if self._first and until > EARLY_LOOK_FACTOR * self.poll_interval:
                delay = self.poll_interval
            self._first = False
            return min(delay, cap)
        self._first = False
        if now < end + self.spread:
            return self._step
        delay, self._dense = self._dense, min(self._dense * 1.2, self.poll_interval)
        return delay
