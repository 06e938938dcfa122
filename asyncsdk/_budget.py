"""What a batch may spend: the prices learnt so far, and the credit cap (``max_credits``).

:class:`Prices` keeps the highest credit cost seen per ``(model, output_number)``, learnt from
the accounts' history (:meth:`BatchRunner.check_accounts`), the journal's records and every
submission's answer (``creditCost``). Its estimate for a job never falls below the real cost,
whether the model prices per generation or per image.

:class:`Budget` applies the rule. Before a job is submitted, :meth:`Budget.reserve` answers:

- ``GO`` when the job's estimate fits in ``cap - spent - reserved``; the estimate is held
  (``reserved``) until the submission's answer states the price (then exactly that is held)
  and released when the job ends (then what it cost is ``spent``);
- for a model whose price is still unknown, ``GO`` only when nothing else is in flight, with
  all that is left of the cap held for it, so that its answer prices the model before any
  other job risks the cap;
- ``WAIT`` when the job does not fit now but generations in flight may end (or be priced)
  and free room: the worker hands the job back and waits for :meth:`Budget.next_change`;
- ``STOP`` when it does not fit and nothing is in flight: the run stops cleanly, the rest
  stays ``pending``, and :attr:`Budget.last_refusal` says why.

A job that ends counts what it cost: its price when known, what was held for it when the
outcome is unknown (assumed paid), nothing when it created nothing or was refunded.
"""

from __future__ import annotations

import enum
import math

import anyio

from ._jobs import Job
from ._models import Generation

__all__ = ["Budget", "Prices", "Verdict"]


class Prices:
    """What each model costs, as far as seen: the highest credit cost per (model, images)."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[int, int]] = {}

    def learn(self, model: str | None, images: int | None, cost: int | None) -> None:
        if not model or not isinstance(cost, int) or cost < 0:
            return
        per = self._seen.setdefault(model, {})
        number = images if isinstance(images, int) and images > 0 else 1
        per[number] = max(cost, per.get(number, 0))

    def learn_generation(self, generation: Generation) -> None:
        self.learn(generation.model_provider, generation.output_number, generation.credit_cost)

    def estimate(self, model: str, images: int = 1) -> int | None:
        """A cost that is not below the real one whether the price is per generation or per
        image; ``None`` when the model was never seen."""
        per = self._seen.get(model)
        if not per:
            return None
        return max(math.ceil(cost * max(1.0, images / seen)) for seen, cost in per.items())

    def cheapest(self) -> int | None:
        costs = [cost for per in self._seen.values() for cost in per.values()]
        return min(costs) if costs else None


class Verdict(enum.Enum):
    """:meth:`Budget.reserve`'s answer (see the module docstring)."""

    GO = "go"
    WAIT = "wait"
    STOP = "stop"


class Budget:
    """Credits spent and reserved in this run, against ``cap`` (see the module docstring).
    Every change of what is held or spent wakes the waiters of :meth:`next_change`."""

    def __init__(self, cap: int, prices: Prices) -> None:
        self.cap = cap
        self.spent = 0
        self._prices = prices
        self._held_by_job: dict[str, int] = {}
        self._change: anyio.Event | None = None
        self._stopped = False
        #: Why the last ``STOP`` was given.
        self.last_refusal = ""

    @property
    def reserved(self) -> int:
        """Credits held by the jobs in flight."""
        return sum(self._held_by_job.values())

    def _wake(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = None

    def next_change(self) -> anyio.Event:
        """Set at the next change (a generation in flight ends or is priced, or the run
        stops)."""
        if self._change is None:
            self._change = anyio.Event()
            if self._stopped:
                self._change.set()
        return self._change

    def reserve(self, job: Job) -> Verdict:
        """Hold the job's estimate if it fits (``GO``), else ``WAIT`` or ``STOP``."""
        estimate = self._prices.estimate(job.model, job.output_number)
        reserved = self.reserved
        left = self.cap - self.spent - reserved
        if estimate is None:  # unknown price: run alone, with all that is left reserved
            if reserved:
                return Verdict.WAIT
            if left <= 0:
                self.last_refusal = f"no credits left of max_credits={self.cap}"
                return Verdict.STOP
            self._held_by_job[job.id] = left
            return Verdict.GO
        if estimate <= left:
            self._held_by_job[job.id] = estimate
            return Verdict.GO
        if reserved:
            return Verdict.WAIT
        self.last_refusal = (
            f"the next job ({job.id}, {job.model}) costs about {estimate} credits and only "
            f"{max(left, 0)} of max_credits={self.cap} are left ({self.spent} spent)"
        )
        return Verdict.STOP

    def created(self, job_id: str, cost: int | None) -> None:
        """The submission's answer states the price: hold exactly that."""
        if cost is not None and job_id in self._held_by_job:
            self._held_by_job[job_id] = cost
            self._wake()

    def ended(self, job_id: str, paid: int | None) -> None:
        """The job is over: it cost ``paid`` credits (``None``: nothing was created, or it
        was refunded; ``0``: unknown, so what was held for it counts as spent)."""
        held = self._held_by_job.pop(job_id, 0)
        if paid is not None:
            self.spent += paid or held
        self._wake()

    def stop(self) -> None:
        """The run stops: wake every waiter, now and later, so that it sees it."""
        self._stopped = True
        self._wake()
