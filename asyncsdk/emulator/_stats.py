"""What the emulator observed, for assertions about a client's behaviour.

All times are Unix timestamps on the emulator's clock (see `_state.State.wall`). The record is
mutated in place by the emulator; `reset()` starts a fresh observation period.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import attrs


def _per_token_counters() -> defaultdict[str, Counter[str]]:
    return defaultdict(Counter)


def _per_token_lists() -> defaultdict[str, list[float]]:
    return defaultdict(list)


@attrs.define
class EmulatorStats:
    """Counters kept by an emulator (`emulator.stats`).

    - `requests`: requests served, by ``(method, route)``; route is the route template
      (``/api/v1/image-generation/{generationId}``) or ``"<unmatched>"``.
    - `errors`: error responses, by code.
    - `created`: generations created, by token (including dropped-after-create ones).
    - `throttled`: 429s served, by token then code (`RATE_LIMIT_ERROR`,
      `CONCURRENT_GENERATION_ERROR`).
    - `max_in_progress`: the most generations in `starting`/`processing` at any one moment,
      by token.
    - `arrivals`: arrival time of every authenticated POST, by token (accepted or not).

    >>> stats = EmulatorStats()
    >>> stats.created["bye_00"]
    0
    """

    requests: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    errors: Counter[str] = attrs.field(factory=Counter)
    created: Counter[str] = attrs.field(factory=Counter)
    throttled: defaultdict[str, Counter[str]] = attrs.field(factory=_per_token_counters)
    max_in_progress: Counter[str] = attrs.field(factory=Counter)
    arrivals: defaultdict[str, list[float]] = attrs.field(factory=_per_token_lists)

    def reset(self) -> None:
        """Zero every counter."""
        fresh = EmulatorStats()
        for field in attrs.fields(EmulatorStats):
            setattr(self, field.name, getattr(fresh, field.name))
