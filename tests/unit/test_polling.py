"""The poll schedule on paper: a fake clock, seeded durations, no sleeping.

The main property: for each kind of duration distribution, once durations are learnt, the
SDK's (polls per generation, mean notice delay) point lies below the frontier of
fixed-interval pollers measured on the same generations.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence

import pytest

from asyncsdk import Generation, GenerationStatus
from asyncsdk._config import MAX_POLL_FACTOR
from asyncsdk._polling import (
    COLD_START,
    FLOOR,
    GRACE,
    MAX_SAMPLES,
    OWN_SAMPLES,
    REFRESH_SHARE,
    SURPRISES,
    DurationModel,
    Durations,
    PollSchedule,
)

P = 1.0  # the poll interval: durations below are in poll intervals
Draw = Callable[[random.Random], float]

DISTRIBUTIONS: dict[str, Draw] = {
    "constant": lambda r: 10.0,
    "narrow": lambda r: r.uniform(9.8, 10.2),
    "wide-uniform": lambda r: r.uniform(6.0, 20.0),
    "lognormal": lambda r: r.lognormvariate(math.log(8.0), 0.5),
    "bimodal": lambda r: r.gauss(4.0, 0.25) if r.random() < 0.6 else r.gauss(16.0, 1.0),
}


def ended(generation_id: str, seconds: float, model: str = "m") -> Generation:
    return Generation(
        generation_id, GenerationStatus.SUCCEEDED, model_provider=model, total_time=seconds
    )


def simulate(
    schedule: PollSchedule, duration: float, first_read: float, *, webhooks: bool = False
) -> tuple[int, float]:
    """Polls (the first read included) until one sees the end; (polls, notice delay)."""
    now, polls = first_read, 1
    while now < duration:
        delay = schedule.next_delay(now, webhooks=webhooks)
        assert delay > 0
        now += delay
        polls += 1
        assert polls < 10_000
    return polls, now - duration


def fixed(duration: float, first_read: float, interval: float) -> tuple[int, float]:
    """A fixed poller: the first read, then one every ``interval``."""
    if duration <= first_read:
        return 1, first_read - duration
    steps = math.ceil((duration - first_read) / interval)
    return 1 + steps, first_read + steps * interval - duration


def frontier_delay(points: Sequence[tuple[float, float]], polls: float) -> float:
    """The fixed pollers' mean delay at ``polls`` polls per generation: their Pareto points,
    interpolated linearly in 1/polls (a fixed poller's delay is about E[D] / (2 polls))."""
    pareto: list[tuple[float, float]] = []
    for p, d in sorted(points):
        if not pareto or d < pareto[-1][1]:
            pareto.append((p, d))
    if polls <= pareto[0][0]:
        return pareto[0][1]
    for (p0, d0), (p1, d1) in itertools.pairwise(pareto):
        if p0 <= polls <= p1:
            return d0 + (d1 - d0) * (1 / polls - 1 / p0) / (1 / p1 - 1 / p0)
    return 0.0  # more polls than the finest fixed poller: nothing to claim


def learn(model: DurationModel, draw: Draw, rng: random.Random, count: int) -> None:
    for _ in range(count):
        model.observe(ended(f"warm-{rng.random()}", draw(rng)))


def run(
    draw: Draw, *, seed: int, generations: int = 300, warm_up: int = 32
) -> tuple[float, float, list[tuple[float, float]]]:
    """(SDK polls, SDK delay, fixed pollers' points) on the same seeded generations; the SDK
    keeps learning as it goes, like a client does."""
    rng = random.Random(seed)
    model = DurationModel()
    learn(model, draw, rng, warm_up)
    cases = [(draw(rng), rng.uniform(0.05, 0.3)) for _ in range(generations)]
    polls = delay = 0.0
    for i, (duration, first_read) in enumerate(cases):
        p, d = simulate(model.schedule("m", P, started=0.0), duration, first_read)
        polls, delay = polls + p, delay + d
        model.observe(ended(f"g{i}", duration))
    points = []
    for interval in (0.1 * 1.1**i for i in range(60)):
        outcomes = [fixed(duration, first_read, interval) for duration, first_read in cases]
        points.append(
            (sum(p for p, _ in outcomes) / generations, sum(d for _, d in outcomes) / generations)
        )
    return polls / generations, delay / generations, points


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("seed", [1, 2])
def test_the_schedule_dominates_the_fixed_interval_frontier(name: str, seed: int) -> None:
    polls, delay, points = run(DISTRIBUTIONS[name], seed=seed)
    frontier = frontier_delay(points, polls)
    # Less delay at equal polls (with a margin), and no fixed poller better on both counts.
    assert delay < 0.9 * frontier, (polls, delay, frontier)
    assert not any(p <= polls and d <= delay for p, d in points)


def test_a_narrow_spread_stays_near_the_floor() -> None:
    # Shorter than the cap: the first read, then about one poll at the far edge.
    polls, delay, _ = run(lambda r: r.uniform(3.9, 4.1), seed=3)
    assert polls <= 2.4 and delay <= 0.2
    # Longer: one more poll per MAX_POLL_FACTOR poll intervals, in case the service changed.
    polls, delay, _ = run(DISTRIBUTIONS["narrow"], seed=3)
    assert polls <= 3.6 and delay <= 0.2


def test_a_constant_duration_is_caught_at_its_end() -> None:
    model = DurationModel()
    for i in range(10):
        model.observe(ended(f"g{i}", 10.0))
    polls, delay = simulate(model.schedule("m", P, started=0.0), 10.0, 0.1)
    assert polls == 1 + 2 and delay <= 0.05  # the first read, one within the cap, the end


def test_cold_start_is_a_capped_geometric_schedule() -> None:
    schedule = PollSchedule(P, started=0.0)
    delays = [schedule.next_delay(0.0) for _ in range(8)]
    assert delays[0] == COLD_START * P and delays[1] == 1.5 * COLD_START * P
    assert delays == sorted(delays) and delays[-1] == P


def test_polls_are_never_closer_than_the_floor_nor_further_apart_than_the_cap() -> None:
    rng = random.Random(5)
    for name, draw in DISTRIBUTIONS.items():
        model = DurationModel()
        learn(model, draw, rng, 40)
        for _ in range(20):
            duration, now = draw(rng), rng.uniform(0.0, 3.0)
            schedule = model.schedule("m", P, started=0.0)
            while now < duration:
                delay = schedule.next_delay(now)
                assert FLOOR * P - 1e-9 <= delay <= MAX_POLL_FACTOR * P + 1e-9, name
                now += delay


def test_a_late_generation_is_polled_densely_then_less_so() -> None:
    model = DurationModel()
    for i in range(10):
        model.observe(ended(f"g{i}", 5.0))
    schedule = model.schedule("m", P, started=0.0)
    now = 6.0  # past everything learnt
    delays = []
    for _ in range(20):
        delays.append(schedule.next_delay(now))
        now += delays[-1]
    assert delays[0] == pytest.approx(FLOOR * P)
    assert delays == sorted(delays) and delays[-1] == P


def test_no_poll_where_nothing_ends() -> None:
    # Bimodal: the gap between the modes gets only the polls the cap asks for.
    model = DurationModel()
    rng = random.Random(7)
    learn(model, DISTRIBUTIONS["bimodal"], rng, 48)
    times = model.schedule("m", P, started=0.0).plan(0.1)
    in_gap = [t for t in times if 6.0 < t < 12.0]
    assert len(in_gap) <= 2  # 6 poll intervals of nothing: at most what the cap asks for
    assert any(3.0 < t < 5.0 for t in times) and any(14.0 < t < 19.0 for t in times)


def test_outliers_do_not_spoil_the_usual_generations() -> None:
    rng = random.Random(8)
    model = DurationModel()
    usual = []
    for i in range(400):
        outlier = rng.random() < 0.03
        duration = rng.uniform(30.0, 50.0) if outlier else rng.uniform(3.9, 4.1)
        result = simulate(model.schedule("m", P, started=0.0), duration, 0.1)
        if i >= 50 and not outlier:
            usual.append(result)
        model.observe(ended(f"g{i}", duration))
    assert sum(p for p, _ in usual) / len(usual) <= 2.6
    assert sum(d for _, d in usual) / len(usual) <= 0.2


def test_the_schedule_follows_the_service_when_it_changes() -> None:
    model = DurationModel()
    for i in range(48):
        model.observe(ended(f"old{i}", 10.0 + (i % 5) * 0.1))
    for i in range(SURPRISES):
        model.observe(ended(f"new{i}", 20.0 + i * 0.1))
    durations = model.durations("m")
    assert durations is not None and durations.low > 15.0  # the old ones are forgotten
    polls, delay = simulate(model.schedule("m", P, started=0.0), 20.1, 0.1)
    assert polls <= 7 and delay <= 0.5


def test_ordinary_spread_is_no_surprise() -> None:
    rng = random.Random(9)
    model = DurationModel()
    for i in range(500):
        model.observe(ended(f"g{i}", DISTRIBUTIONS["lognormal"](rng)))
    durations = model.durations("m")
    assert durations is not None
    assert durations.high - durations.low > 8.0  # the whole spread is still there


def test_a_record_read_twice_is_learnt_once() -> None:
    model = DurationModel()
    for _ in range(5):
        model.observe(ended("same", 10.0))
    model.observe(ended("other", 20.0))
    assert model.expected("m") == pytest.approx(15.0, rel=0.1)


def test_unusable_durations_are_ignored() -> None:
    model = DurationModel()
    model.observe(Generation("a", GenerationStatus.SUCCEEDED, model_provider="m"))
    model.observe(ended("b", 0.0))
    model.observe(ended("c", math.inf))
    model.observe(ended("d", math.nan))
    assert model.durations("m") is None and model.expected("m") is None


def test_durations_are_learnt_per_model_and_per_account() -> None:
    model = DurationModel()
    for i in range(OWN_SAMPLES):
        model.observe(ended(f"a{i}", 30.0), account="slow")
    for i in range(OWN_SAMPLES):
        model.observe(ended(f"b{i}", 5.0), account="fast")
    model.observe(ended("x", 7.0, model="other"))
    slow, fast = model.durations("m", account="slow"), model.durations("m", account="fast")
    pooled = model.durations("m", account="new")  # too few of its own: the pooled ones
    assert slow is not None and fast is not None and pooled is not None
    assert slow.low > 25.0 and fast.high < 6.0 and pooled.low < 6.0 < 25.0 < pooled.high
    assert model.expected("other") == pytest.approx(7.0, rel=0.02)
    assert model.durations("unknown") is None


def test_the_distribution_is_made_again_once_enough_of_it_is_new() -> None:
    """Thousands of generations ending close together do not each remake the distribution:
    it is remade once ``REFRESH_SHARE`` of its samples are new, and at once after a jump."""
    model = DurationModel()
    for i in range(MAX_SAMPLES):
        model.observe(ended(f"g{i}", 10.0 + (i % 7) * 0.1))
    made = model.durations("m")
    refresh = math.ceil(REFRESH_SHARE * MAX_SAMPLES)
    for i in range(refresh - 1):
        model.observe(ended(f"n{i}", 10.3))
        assert model.durations("m") is made
    model.observe(ended("last", 10.3))
    remade = model.durations("m")
    assert remade is not None and remade is not made
    for i in range(SURPRISES):
        model.observe(ended(f"jump{i}", 30.0 + i * 0.1))
    jumped = model.durations("m")
    assert jumped is not None and jumped.low > 20.0


def test_first_reads_close_together_share_a_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    planned = []
    make_plan = Durations._plan

    def counted(self: Durations, *args: float) -> list[float]:
        planned.append(args)
        return make_plan(self, *args)

    monkeypatch.setattr(Durations, "_plan", counted)
    durations = Durations.from_samples([9.0, 9.5, 10.0, 10.5, 11.0])
    first = durations.plan(0.101, target_delay=0.125, budget_interval=1.0)
    first.clear()  # a copy: the cached plan is not the caller's to change
    again = durations.plan(0.105, target_delay=0.125, budget_interval=1.0)
    assert again and again == durations.plan(0.1, target_delay=0.125, budget_interval=1.0)
    assert again[-1] == durations.high
    assert len(planned) == 1  # planned once for the three


def test_a_generation_just_created_is_planned_from_its_answer() -> None:
    """``schedule_submitted`` plans from the submission's answer once the model's records
    have been seen (the ``modelProvider`` they report may differ from the id submitted)."""
    model = DurationModel()
    assert model.schedule_submitted("vendor/m", P, answered=100.0) is None  # never seen
    model.reports_as("vendor/m", "m")
    assert model.schedule_submitted("vendor/m", P, answered=100.0) is None  # nothing learnt
    for i in range(20):
        model.observe(ended(f"g{i}", 10.0))
    schedule = model.schedule_submitted("vendor/m", P, answered=100.0)
    assert schedule is not None
    polls = schedule.plan(100.05)
    assert polls and polls[-1] == pytest.approx(110.0, abs=0.1)
    assert all(t >= 100.0 + FLOOR for t in polls)


def test_with_webhooks_polling_is_a_safety_net() -> None:
    model = DurationModel()
    for i in range(20):
        model.observe(ended(f"g{i}", 9.0 + (i % 5) * 0.5))
    schedule = model.schedule("m", P, started=0.0)
    durations = model.durations("m")
    assert durations is not None
    first = schedule.next_delay(0.1, webhooks=True)
    assert first == pytest.approx(durations.high + GRACE * P - 0.1)  # past every likely end
    assert schedule.next_delay(0.1 + first, webhooks=True) == MAX_POLL_FACTOR * P
    # A delivery lost: the safety net finds the end, and without webhooks the plan resumes.
    assert schedule.next_delay(3.0) <= MAX_POLL_FACTOR * P
    cold = PollSchedule(P, started=0.0)
    assert cold.next_delay(0.1, webhooks=True) == MAX_POLL_FACTOR * P


def test_distribution_arithmetic() -> None:
    box = Durations.box(2.0, 4.0)
    assert box.mean() == pytest.approx(3.0)
    assert box.survival_at(3.0) == pytest.approx(0.5) and box.survival_at(5.0) == 0.0
    assert box.quantile(0.25) == pytest.approx(2.5)
    mixture = Durations.from_samples([1.0] * 10 + [10.0] * 10, [1.0] * 10 + [3.0] * 10)
    assert mixture.survival_at(5.0) == pytest.approx(0.75)  # the weights count
    assert mixture.mean() == pytest.approx(7.75)
    assert mixture.survival_at(2.0) == mixture.survival_at(9.0)  # nothing in the gap
    with pytest.raises(ValueError):
        Durations.from_samples([])
