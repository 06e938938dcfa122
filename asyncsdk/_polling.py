"""When to poll a running generation next: a schedule planned from the durations learnt so far.

A generation's end is only seen by reading its status, so every poll trades one request for
less *notice delay* (the time from the end to the read that shows it). The SDK plans each
generation's polls from the distribution of durations it has learnt for the model.

**What is learnt.** :class:`DurationModel` keeps, per model (and per account when the caller
says whose generation it was), the last ``MAX_SAMPLES`` exact durations the service reports
on ended generations (``totalTime``, creation to end; ``predictTime`` when that is missing),
each weighed by ``0.5 ** (age / HALF_LIFE)`` so that the distribution follows the service
when it drifts. When it jumps (``SURPRISES`` durations in a row beyond the 10-90% range of the
remembered ones by more than its width, on the same side), only the surprising ones are kept.
A record read twice (a poll and a list) is learnt once. An account's own durations are used
once it has ``OWN_SAMPLES`` of them, the pooled ones of every account before that.

**The distribution.** :class:`Durations` smooths the samples into a mixture of boxes: each
sample spread uniformly over +/- the distance to its ``sqrt(n)``-th nearest neighbour (a
lone sample over +/-``SINGLE_WIDTH`` of itself; never narrower than ``MIN_WIDTH`` of itself).
The density is then piecewise constant and the survival ``S(t) = P(D > t)`` piecewise linear,
so every integral below has a closed form per piece. Boxes adapt to the local density: a tight
mode keeps narrow boxes, a sparse tail wide ones, the empty gap of a bimodal model stays empty,
and an outlier adds a small, far box instead of widening everything.

**The plan.** Polling at a rate ``n(t)`` while the generation runs costs ``∫ S(t) n(t) dt``
polls and a mean delay of ``∫ f(t) / (2 n(t)) dt`` (a poll interval of ``1/n`` around an end
catches it half an interval late on average; ``f`` is the density). Minimising polls plus
``λ`` times delay pointwise gives ``n(t) = k * sqrt(f(t) / S(t))``: poll in proportion to the
square root of the hazard rate, i.e. densely where an end is likely *given that none happened
yet*, never where nothing ends. Then, with ``A = ∫ sqrt(f S) dt``::

    polls = k * A,    delay = A / (2k),    polls * delay = A**2 / 2

A fixed poller every ``h`` makes ``E[D] / h`` polls at a delay of ``h / 2``: ``polls * delay =
E[D] / 2``, and ``A**2 <= E[D]`` (Cauchy-Schwarz), with equality only for memoryless durations.
So the plan is never worse than the best fixed interval, and much better the more the
distribution says: nothing before the shortest duration, nothing in a gap, little in a long
thin tail. ``k`` is chosen for a mean delay of ``TARGET_DELAY * poll_interval``, but never so
large that the plan makes more polls than a fixed poller every ``poll_interval``; on that
budget the delay is ``poll_interval / 2 * A**2 / E[D]`` (at most the fixed poller's).
The plan's polls are placed at equal steps of ``∫ n(t) dt`` (conditioned on the generation
still running at the first read), and the last one at the far end of the distribution: a
distribution narrower than the target is polled once, at its far edge. A pass of coordinate
descent on the same cost (polls plus ``λ = 2 k**2`` times delay, exact for the mixture) then
moves each poll to its best place between its neighbours: a poll that equal steps put inside
a mode moves to the mode's far edge when a gap follows.

**Bounds.** Polls are never closer than ``FLOOR * poll_interval`` and never further apart than
``MAX_POLL_FACTOR * poll_interval`` (extra polls are spread evenly over a longer gap, in case
the service changed). Past the plan (later than anything learnt), and for a model never seen
(cold start), polls follow a capped geometric schedule: from ``FLOOR`` (late) or
``COLD_START`` (cold) poll intervals, times ``BACKOFF``, up to ``BACKOFF_CAP`` poll intervals.

**Webhooks.** When the application hands webhook deliveries to the client (see
:mod:`asyncsdk._wakeups`), a watcher is woken by the delivery and polling is only a safety net:
``next_delay(now, webhooks=True)`` waits until the far end of the learnt distribution plus
``GRACE`` poll intervals, then polls every ``MAX_POLL_FACTOR * poll_interval``.

**Cost.** A distribution is made again once ``REFRESH_SHARE`` of its samples are new (or
after a jump), not at every ending, and each keeps its plans for first reads within
``PLAN_GRAIN`` poll intervals of one another: thousands of generations of one model ending
close together share a few plans instead of planning one each.

Pure arithmetic over the caller's clock readings: no I/O, unit-tested without sleeping; the
benchmark ``benchmarks/polling.py`` measures it against the frontier of fixed-interval pollers.
"""

from __future__ import annotations

import array
import bisect
import collections
import math
from collections.abc import Sequence
from typing import Final

from ._config import MAX_POLL_FACTOR
from ._models import Generation

__all__ = ["DurationModel", "Durations", "PollSchedule"]

#: Mean notice delay the plan aims at, in poll intervals.
TARGET_DELAY: Final = 0.125
#: Shortest pause between two polls, in poll intervals.
FLOOR: Final = 0.125
#: First pause of a model's first generation (nothing learnt), in poll intervals.
COLD_START: Final = 0.25
#: Growth of the pauses of the geometric schedule (cold start, late generation).
BACKOFF: Final = 1.5
#: Longest pause of the geometric schedule, in poll intervals.
BACKOFF_CAP: Final = 1.0
#: With webhooks flowing, the safety poll waits this long past the far end of the
#: distribution for the delivery, in poll intervals.
GRACE: Final = 1.0
#: Durations remembered per model (and account).
MAX_SAMPLES: Final = 48
#: Age, in observations, at which a duration weighs half as much as the newest.
HALF_LIFE: Final = 16.0
#: An account's own durations are used once it has this many.
OWN_SAMPLES: Final = 8
#: Half-width of the box around a lone observation, relative to it.
SINGLE_WIDTH: Final = 0.1
#: Narrowest half-width of any box, relative to its observation.
MIN_WIDTH: Final = 0.003
#: How many generation ids are remembered so that a record read twice is learnt once.
SEEN_MEMORY: Final = 256
#: A learnt distribution is made again once this share of its samples is new (at least one):
#: every few endings, not at each one, when thousands of generations end close together.
REFRESH_SHARE: Final = 0.125
#: Plans are cached per distribution for first reads within this many poll intervals.
PLAN_GRAIN: Final = 1 / 64
#: Plans cached per distribution.
PLANS_CACHED: Final = 64
#: After this many surprising durations in a row on the same side, only they are kept.
SURPRISES: Final = 3

_Key = tuple[str | None, str | None]


class _Samples:
    """The recent durations of one model (and account), oldest first."""

    __slots__ = ("distribution", "fresh", "streak", "values")

    def __init__(self) -> None:
        self.values = array.array("d")
        self.streak = 0  # consecutive surprises: > 0 above the usual range, < 0 below
        #: The distribution of ``values``, made again once ``REFRESH_SHARE`` of them are new
        #: (every schedule reads it); ``fresh`` counts the samples added since.
        self.distribution: Durations | None = None
        self.fresh = 0

    def add(self, seconds: float) -> None:
        side = self._surprise(seconds)
        self.streak = self.streak + side if side and self.streak * side >= 0 else side
        self.values.append(seconds)
        self.fresh += 1
        if abs(self.streak) >= SURPRISES:
            # The service changed: what came before says nothing about what comes next.
            del self.values[: -abs(self.streak)]
            self.streak = 0
            self.distribution = None
        elif len(self.values) > MAX_SAMPLES:
            del self.values[0]
        if self.fresh >= max(1.0, REFRESH_SHARE * len(self.values)):
            self.distribution = None

    def _surprise(self, seconds: float) -> int:
        """+1 (-1) when ``seconds`` is beyond the 10-90% range by more than its width."""
        if len(self.values) < 2 * SURPRISES:
            return 0
        ordered = sorted(self.values)
        low = ordered[len(ordered) // 10]
        high = ordered[-1 - len(ordered) // 10]
        width = high - low
        if seconds > high + width:
            return 1
        if seconds < low - width:
            return -1
        return 0


class Durations:
    """A distribution of durations (seconds): piecewise-constant density on ``edges``.

    ``density[i]`` holds on ``[edges[i], edges[i + 1])`` and ``survival[i]`` is ``P(D >
    edges[i])``; the survival falls linearly within a piece, from 1 to 0.
    """

    __slots__ = ("_plans", "density", "edges", "survival")

    def __init__(self, edges: Sequence[float], density: Sequence[float]) -> None:
        self._plans: dict[tuple[float, float, float], list[float]] = {}
        if len(edges) != len(density) + 1 or len(density) < 1:
            raise ValueError("a distribution needs n + 1 edges for n densities, n >= 1")
        self.edges = array.array("d", edges)
        self.density = array.array("d", (max(d, 0.0) for d in density))
        mass = sum(d * (b - a) for d, a, b in zip(self.density, edges, edges[1:], strict=False))
        if not mass > 0:
            raise ValueError("a distribution needs some mass")
        for i, d in enumerate(self.density):
            self.density[i] = d / mass
        survival = array.array("d", [1.0])
        for d, a, b in zip(self.density, edges, edges[1:], strict=False):
            survival.append(max(survival[-1] - d * (b - a), 0.0))
        survival[-1] = 0.0
        self.survival = survival

    @classmethod
    def box(cls, low: float, high: float) -> Durations:
        """Uniform on ``[low, high]``."""
        low = max(low, 0.0)
        high = max(high, low + 1e-9)
        return cls([low, high], [1.0])

    @classmethod
    def from_samples(
        cls, samples: Sequence[float], weights: Sequence[float] | None = None
    ) -> Durations:
        """The smoothed mixture of boxes around ``samples`` (see the module docstring)."""
        if not samples:
            raise ValueError("no samples")
        if weights is None:
            weights = [1.0] * len(samples)
        pairs = sorted(zip(samples, weights, strict=True))
        xs = [x for x, _ in pairs]
        n = len(xs)
        rank = min(max(1, round(math.sqrt(n))), n - 1)
        events: list[tuple[float, float]] = []
        for i, (x, w) in enumerate(pairs):
            half = SINGLE_WIDTH * x if n == 1 else _kth_distance(xs, i, rank)
            half = min(max(half, MIN_WIDTH * x, 1e-6), x) if x > 0 else 1e-6
            height = w / (2.0 * half)
            events.append((x - half, height))
            events.append((x + half, -height))
        events.sort()
        edges: list[float] = []
        density: list[float] = []  # density[i] holds from edges[i] on
        level = 0.0
        for position, change in events:
            level += change
            if edges and position <= edges[-1]:
                density[-1] = level
            else:
                edges.append(position)
                density.append(level)
        density = [max(d, 0.0) for d in density[:-1]]
        # A piece is a gap when only rounding is left of the boxes that ended.
        top = max(density)
        density = [d if d > top * 1e-9 else 0.0 for d in density]
        return cls(edges, density)

    @property
    def low(self) -> float:
        """The shortest possible duration."""
        return self.edges[0]

    @property
    def high(self) -> float:
        """The longest possible duration: the far edge."""
        return self.edges[-1]

    def survival_at(self, t: float) -> float:
        """``P(D > t)``."""
        if t <= self.edges[0]:
            return 1.0
        if t >= self.edges[-1]:
            return 0.0
        i = bisect.bisect_right(self.edges, t) - 1
        return max(self.survival[i] - self.density[i] * (t - self.edges[i]), 0.0)

    def quantile(self, q: float) -> float:
        """The duration ``t`` with ``P(D <= t) = q``."""
        target = 1.0 - min(max(q, 0.0), 1.0)
        for i, d in enumerate(self.density):
            s0, s1 = self.survival[i], self.survival[i + 1]
            if s1 <= target <= s0 and d > 0:
                return self.edges[i] + (s0 - target) / d
        return self.edges[-1] if target <= 0 else self.edges[0]

    def mean(self) -> float:
        """``E[D]``."""
        return self.edges[0] + self._integral_of_survival(self.edges[0])

    def _pieces(self, start: float) -> list[tuple[float, float, float, float, float]]:
        """``(t0, t1, density, S(t0), S(t1))`` of every piece after ``start``."""
        out = []
        for i, d in enumerate(self.density):
            a, b = self.edges[i], self.edges[i + 1]
            if b <= start:
                continue
            s0 = self.survival[i]
            if a < start:
                s0 = max(s0 - d * (start - a), 0.0)
                a = start
            out.append((a, b, d, s0, self.survival[i + 1]))
        return out

    def _integral_of_survival(self, start: float) -> float:
        """``∫ S(t) dt`` from ``start`` on."""
        head = max(self.edges[0] - start, 0.0)
        return head + sum((s0 + s1) / 2 * (b - a) for a, b, _, s0, s1 in self._pieces(start))

    def plan(self, elapsed: float, *, target_delay: float, budget_interval: float) -> list[float]:
        """The times (from creation) to poll a generation still running at ``elapsed``.

        Polls at rate ``k * sqrt(hazard)`` for a mean delay of ``target_delay``, with at most
        the expected polls of a fixed poller every ``budget_interval``; the last poll is at the
        far edge. Empty when nothing learnt lasts beyond ``elapsed``.

        Plans are cached: ``elapsed`` is rounded down to ``PLAN_GRAIN * budget_interval``
        (a plan made a little earlier in the generation's life is as good), so the generations
        of a busy model share a handful of plans per distribution.
        """
        grain = PLAN_GRAIN * budget_interval
        elapsed = math.floor(elapsed / grain) * grain
        key = (elapsed, target_delay, budget_interval)
        cached = self._plans.get(key)
        if cached is None:
            if len(self._plans) >= PLANS_CACHED:
                self._plans.clear()
            cached = self._plans[key] = self._plan(elapsed, target_delay, budget_interval)
        return list(cached)

    def _plan(self, elapsed: float, target_delay: float, budget_interval: float) -> list[float]:
        alive = self.survival_at(elapsed)
        if alive <= 0:
            return []
        pieces = self._pieces(elapsed)
        a_total = b_total = 0.0
        for _, _, d, s0, s1 in pieces:
            if d > 0:
                root = math.sqrt(d)
                a_total += (s0**1.5 - s1**1.5) / root * (2.0 / 3.0)
                b_total += (math.sqrt(s0) - math.sqrt(s1)) / root * 2.0
        a_total /= alive  # conditioned on D > elapsed (B, a hazard integral, is unchanged)
        remaining = self._integral_of_survival(elapsed) / alive
        if not a_total > 0 or not b_total > 0:
            return [self.high]
        k = min(a_total / (2.0 * target_delay), remaining / (budget_interval * a_total))
        count = max(1, round(k * b_total))
        step = b_total / count
        times: list[float] = []
        reached = 0.0
        goal = step
        for t0, _, d, s0, s1 in pieces:
            if d <= 0:
                continue
            root = math.sqrt(d)
            span = (math.sqrt(s0) - math.sqrt(s1)) / root * 2.0
            while len(times) < count - 1 and goal <= reached + span:
                left = max(math.sqrt(s0) - (goal - reached) * root / 2.0, 0.0)
                times.append(t0 + (s0 - left * left) / d)
                goal += step
            reached += span
        times.append(self.high)
        self._refine(times, elapsed, 2.0 * k * k)
        return times

    def _refine(self, times: list[float], elapsed: float, weight: float) -> None:
        """Move each poll but the last to its best place between its neighbours.

        With the neighbours at ``a`` and ``b``, a poll at ``x`` costs (up to constants)
        ``S(x)`` (the next poll is made only if the generation outlives ``x``) plus ``weight``
        times the delay of the ends in ``(a, b]``; that is
        ``-weight * ((x - a) F(a) + (b - x) F(x)) - F(x)`` with ``F = 1 - S``, piecewise
        quadratic in ``x``. Equal steps of the continuous plan put a poll inside a mode
        rather than at its far edge when a gap follows; this puts it at the edge.
        """
        edges, density, survival = self.edges, self.density, self.survival
        start = 0
        for j in range(len(times) - 1):
            a = times[j - 1] if j > 0 else elapsed
            b = times[j + 1]
            while start + 1 < len(density) and edges[start + 1] <= a:
                start += 1
            fa = 1.0 - min(max(survival[start] - density[start] * (a - edges[start]), 0.0), 1.0)
            if fa > 1.0 - 1e-9:
                break  # nothing left to place: the generation has ended by now
            # cost(x) = -weight * ((x - a) * fa + (b - x) * F(x)) - F(x)
            best_x, best = times[j], math.inf
            for i in range(start, len(density)):
                lo = edges[i] if edges[i] > a else a
                hi = edges[i + 1] if edges[i + 1] < b else b
                if lo > hi:
                    break
                f = density[i]
                f_lo = 1.0 - survival[i] + f * (lo - edges[i])
                value = -weight * ((lo - a) * fa + (b - lo) * f_lo) - f_lo
                if value < best:
                    best, best_x = value, lo
                if f > 0:
                    # Where the derivative, weight (F(x) - fa) - (weight (b - x) + 1) f,
                    # vanishes; else the piece's far end (the next piece's near end).
                    x = (weight * (fa - f_lo + f * lo + f * b) + f) / (2.0 * weight * f)
                    x = hi if x > hi else lo if x < lo else x
                    fx = f_lo + f * (x - lo)
                    value = -weight * ((x - a) * fa + (b - x) * fx) - fx
                    if value < best:
                        best, best_x = value, x
            times[j] = best_x


def _kth_distance(xs: Sequence[float], i: int, rank: int) -> float:
    """Distance from ``xs[i]`` to its ``rank``-th nearest neighbour (``xs`` sorted)."""
    left, right = i - 1, i + 1
    distance = 0.0
    for _ in range(rank):
        below = xs[i] - xs[left] if left >= 0 else math.inf
        above = xs[right] - xs[i] if right < len(xs) else math.inf
        if below <= above:
            distance, left = below, left - 1
        else:
            distance, right = above, right + 1
    return distance


class DurationModel:
    """The durations of ended generations, per model (and per account): see the module
    docstring.

    >>> model = DurationModel()
    >>> model.observe(Generation("g1", GenerationStatus.SUCCEEDED, model_provider="m",
    ...                          total_time=9.5))
    >>> schedule = model.schedule("m", 1.0, started=0.0)
    """

    def __init__(self) -> None:
        self._samples: dict[_Key, _Samples] = {}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: The ``modelProvider`` the records of a model report, by the model id submitted.
        self._reported: dict[str, str | None] = {}

    def reports_as(self, model: str, model_provider: str | None) -> None:
        """Remember that generations submitted for ``model`` report ``model_provider``."""
        if model not in self._reported and len(self._reported) < SEEN_MEMORY:
            self._reported[model] = model_provider

    def schedule_submitted(
        self,
        model: str,
        poll_interval: float,
        *,
        answered: float,
        account: str | None = None,
    ) -> PollSchedule | None:
        """The poll schedule of a generation of ``model`` whose submission was answered at
        ``answered`` (it was created a little before), planned without reading it first; or
        ``None`` while nothing is learnt for that model (read it first)."""
        if model not in self._reported:
            return None
        durations = self.durations(self._reported[model], account=account)
        if durations is None:
            return None
        return PollSchedule(poll_interval, started=answered, durations=durations)

    def observe(self, generation: Generation, *, account: str | None = None) -> None:
        """Learn from an ended generation's ``totalTime`` (or ``predictTime``)."""
        seconds = generation.total_time or generation.predict_time
        if seconds is None or not 0 < seconds < math.inf:
            return
        if generation.generation_id in self._seen:
            return
        self._seen[generation.generation_id] = None
        if len(self._seen) > SEEN_MEMORY:
            self._seen.popitem(last=False)
        keys: list[_Key] = [(None, generation.model_provider)]
        if account is not None:
            keys.append((account, generation.model_provider))
        for key in keys:
            self._samples.setdefault(key, _Samples()).add(seconds)

    def durations(
        self, model_provider: str | None, *, account: str | None = None
    ) -> Durations | None:
        """The learnt distribution, or ``None`` before any observation."""
        own = self._samples.get((account, model_provider)) if account is not None else None
        if own is None or len(own.values) < OWN_SAMPLES:
            own = self._samples.get((None, model_provider))
        if own is None or not own.values:
            return None
        if own.distribution is None:
            own.fresh = 0
            samples = own.values
            n = len(samples)
            decay = 0.5 ** (1.0 / HALF_LIFE)
            weights = [decay ** (n - 1 - i) for i in range(n)]
            own.distribution = Durations.from_samples(samples, weights)
        return own.distribution

    def schedule(
        self,
        model_provider: str | None,
        poll_interval: float,
        *,
        started: float,
        account: str | None = None,
    ) -> PollSchedule:
        """The poll schedule of one generation of ``model_provider`` created at ``started``."""
        return PollSchedule(
            poll_interval,
            started=started,
            durations=self.durations(model_provider, account=account),
        )

    def expected(self, model_provider: str | None) -> float | None:
        """Expected seconds from creation to the end, or ``None`` before any observation."""
        durations = self.durations(model_provider)
        return None if durations is None else durations.mean()


class PollSchedule:
    """The pauses between the polls of one generation created at ``started`` (on the
    caller's clock), planned from ``durations`` (cold start without): see the module docstring.
    :meth:`DurationModel.schedule` makes one with what was learnt.
    """

    def __init__(
        self, poll_interval: float, *, started: float, durations: Durations | None = None
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.poll_interval = poll_interval
        self.started = started
        self.durations = durations
        self.floor = poll_interval * FLOOR
        self.cap = poll_interval * MAX_POLL_FACTOR
        self._times: list[float] | None = None  # latest first: the next is popped off the end
        self._backoff = poll_interval * (COLD_START if durations is None else FLOOR)

    def plan(self, now: float) -> list[float]:
        """The poll times still planned (on the caller's clock); the plan is made by the first
        call, with ``now`` the time of the read that found the generation running."""
        return self._planned(now)[::-1]

    def _planned(self, now: float) -> list[float]:
        if self._times is None:
            self._times = self._make_plan(now)[::-1]
        return self._times

    def _make_plan(self, now: float) -> list[float]:
        if self.durations is None:
            return []
        elapsed = max(now - self.started, 0.0)
        offsets = self.durations.plan(
            elapsed,
            target_delay=self.poll_interval * TARGET_DELAY,
            budget_interval=self.poll_interval,
        )
        if not offsets:
            return []
        # The floor, keeping the far edge: walk back from it.
        kept: list[float] = []
        for t in reversed(offsets):
            if not kept or kept[-1] - t >= self.floor:
                kept.append(t)
        kept.reverse()
        kept = [t for t in kept[:-1] if t - elapsed >= self.floor] + kept[-1:]
        # The cap: spread extra polls evenly over a longer gap.
        times: list[float] = []
        previous = elapsed
        for t in kept:
            gap = t - previous
            extra = math.ceil(gap / self.cap - 1e-9) - 1
            times += [previous + gap * j / (extra + 1) for j in range(1, extra + 1)]
            times.append(t)
            previous = t
        return [self.started + t for t in times]

    def next_delay(self, now: float, *, webhooks: bool = False) -> float:
        """Seconds to sleep before the next poll, given the time of the last one.

        With ``webhooks=True`` (deliveries are flowing and will wake the watcher) only the
        safety net: one poll after the far end of the distribution, then slow polls.
        """
        times = self._planned(now)
        if webhooks:
            if self.durations is not None:
                safety = self.started + self.durations.high + self.poll_interval * GRACE
                if safety - now > self.floor:
                    return safety - now
            return self.cap
        while times and times[-1] - now < self.floor / 2:
            times.pop()
        if times:
            return min(max(times.pop() - now, self.floor), self.cap)
        delay = self._backoff
        self._backoff = min(self._backoff * BACKOFF, self.poll_interval * BACKOFF_CAP)
        return delay
