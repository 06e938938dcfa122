"""The adaptive poll schedule, on paper: no sleeping."""

from __future__ import annotations

import pytest

from asyncsdk import Generation, GenerationStatus
from asyncsdk._polling import DurationModel, PollSchedule


def simulate(schedule: PollSchedule, ends_at: float, start: float = 0.0) -> tuple[int, float]:
    """Poll until the generation (ending at `ends_at`) is seen done: (polls, detection delay)."""
    now, polls = start, 1  # the first poll happens at once
    while now < ends_at:
        now += schedule.next_delay(now)
        polls += 1
    return polls, now - ends_at


def test_without_a_hint_polls_back_off_to_the_cap() -> None:
    schedule = PollSchedule(1.0, started=0.0, expected=None)
    delays = [schedule.next_delay(0.0) for _ in range(8)]
    assert delays[0] == 1.0 and delays[1] == 1.5
    assert delays == sorted(delays) and delays[-1] == 5.0


@pytest.mark.parametrize("duration", [2.0, 10.0, 40.0])
def test_with_an_accurate_hint_detection_is_quick_and_polls_are_few(duration: float) -> None:
    schedule = PollSchedule(1.0, started=0.0, expected=duration)
    polls, delay = simulate(schedule, ends_at=duration)
    assert delay <= 0.25
    assert polls <= max(3, duration / 2)


def test_a_late_generation_is_polled_densely_then_less_so() -> None:
    schedule = PollSchedule(1.0, started=0.0, expected=5.0)
    now = 5.0
    delays = [schedule.next_delay(now) for _ in range(30)]
    assert delays[0] == pytest.approx(0.125)
    assert max(delays) <= 1.0 and delays == sorted(delays)


def test_duration_model_learns_per_provider() -> None:
    model = DurationModel()
    assert model.expected("google") is None
    for seconds in (10.0, 10.0, 20.0):
        model.observe(
            Generation("g", GenerationStatus.SUCCEEDED, model_provider="google", total_time=seconds)
        )
    expected = model.expected("google")
    assert expected is not None and 10.0 < expected < 20.0
    assert model.expected("bfl") is None
