"""Prices and the credit cap without sockets: GO, WAIT, STOP, and what counts as spent."""

from __future__ import annotations

import pytest

from asyncsdk import Job
from asyncsdk._budget import Budget, Prices, Verdict

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"


def test_an_estimate_is_never_below_the_price_per_generation_or_per_image() -> None:
    prices = Prices()
    assert prices.estimate(MODEL) is None and prices.cheapest() is None
    prices.learn(MODEL, 1, 2)
    assert (prices.estimate(MODEL), prices.estimate(MODEL, 3)) == (2, 6)  # maybe per image
    prices.learn(MODEL, 4, 4)  # four images for 4: maybe a price per generation
    assert (prices.estimate(MODEL), prices.estimate(MODEL, 2)) == (4, 4)
    prices.learn(MODEL, 1, 1)  # a lower price never lowers what was seen
    assert prices.estimate(MODEL, 3) == 6 and prices.cheapest() == 2
    prices.learn(MODEL, 1, None)
    prices.learn(None, 1, 9)
    assert prices.estimate(MODEL, 3) == 6


async def test_a_model_of_unknown_price_runs_alone_with_all_that_is_left() -> None:
    prices = Prices()
    budget = Budget(5, prices)
    a, b, c = (Job(MODEL, f"p{i}", id=f"j{i}") for i in range(3))
    assert budget.reserve(a) is Verdict.GO and budget.reserved == 5
    assert budget.reserve(b) is Verdict.WAIT  # a is in flight: b waits for its price
    woken = budget.next_change()
    prices.learn(MODEL, 1, 2)
    budget.created(a.id, 2)  # the answer states the price: exactly that is held
    assert woken.is_set() and budget.reserved == 2
    assert budget.reserve(b) is Verdict.GO and budget.reserved == 4
    assert budget.reserve(c) is Verdict.WAIT  # 2 > 5 - 4, but what is in flight may end


async def test_what_ended_counts_as_spent_and_stop_when_nothing_can_free_room() -> None:
    prices = Prices()
    prices.learn(MODEL, 1, 2)
    budget = Budget(5, prices)
    a, b, c, d = (Job(MODEL, f"p{i}", id=f"j{i}") for i in range(4))
    assert budget.reserve(a) is Verdict.GO and budget.reserve(b) is Verdict.GO
    budget.ended(a.id, 2)  # paid its price
    budget.ended(b.id, 0)  # outcome unknown: what was held for it counts as spent
    assert (budget.spent, budget.reserved) == (4, 0)
    assert budget.reserve(c) is Verdict.STOP
    assert "costs about 2 credits and only 1 of max_credits=5 are left" in budget.last_refusal
    budget.ended(d.id, None)  # nothing created (or refunded): nothing spent
    assert budget.spent == 4


async def test_a_refunded_job_frees_its_room() -> None:
    prices = Prices()
    prices.learn(MODEL, 1, 3)
    budget = Budget(4, prices)
    a, b = Job(MODEL, "a", id="a"), Job(MODEL, "b", id="b")
    assert budget.reserve(a) is Verdict.GO
    assert budget.reserve(b) is Verdict.WAIT
    budget.ended(a.id, None)  # a failed generation is refunded
    assert budget.reserve(b) is Verdict.GO and budget.spent == 0


async def test_an_unknown_price_with_nothing_left_stops() -> None:
    budget = Budget(0, Prices())
    assert budget.reserve(Job(MODEL, "a", id="a")) is Verdict.STOP
    assert budget.last_refusal == "no credits left of max_credits=0"


async def test_stop_wakes_every_waiter_now_and_later() -> None:
    budget = Budget(5, Prices())
    before = budget.next_change()
    budget.stop()
    assert before.is_set() and budget.next_change().is_set()
