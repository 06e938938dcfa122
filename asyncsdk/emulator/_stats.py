"""What the emulator observed, for assertions about a client's behaviour.

All times are Unix timestamps on the emulator's clock (see `_state.State.wall`). The record is
mutated in place by the emulator; `reset()` starts a fresh observation period.

The generations themselves (id, `name` as sent, `createdAt`, status now, which is final once
the generation has ended) are the emulator's records, read with `Emulator.generations(token)`;
these counters say what happened around them.
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
    - `not_created`: submissions answered without creating a generation, by token then
      reason: the error code answered (``RATE_LIMIT_ERROR``, ``VALIDATION_ERROR``, an
      injected 500...) or the fault that stopped it before any answer (``drop_before_create``,
      ``outage``, ``echo_headers``). A submission whose credentials name no account is not
      counted. Dropped or garbled answers of created generations are not here: they created.
    - `faults`: injected faults served, by the name of the `Faults` method
      (``drop_after_create``, ``garble_reads``, ``outage``, ``strip_rate_limit_headers``,
      ``unknown_status``...), whether scripted or drawn by `chaos`.

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
    not_created: defaultdict[str, Counter[str]] = attrs.field(factory=_per_token_counters)
    faults: Counter[str] = attrs.field(factory=Counter)

    def reset(self) -> None:
        """Zero every counter."""
        fresh = EmulatorStats()
        for field in attrs.fields(EmulatorStats):
            setattr(self, field.name, getattr(fresh, field.name))
