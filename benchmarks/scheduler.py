"""2. Scheduler efficiency: achieved throughput over the bound the service's limits allow.

Three scenarios, each against its own emulator process on a compressed clock (each
repetition on fresh accounts, with fresh clients: nothing learnt, empty windows):

- **rate-bound**: one account, 25 jobs of 1.5 s (10 of them take 15 s, far less than the
  60 s window), sent as 25 concurrent ``generate()`` calls;
- **slot-bound**: one account, 8 jobs of 10 s (longer than window / submissions = 6 s), as
  8 concurrent ``generate()`` calls;
- **batch**: 100 accounts x 20 jobs of 3.5 s through ``BatchRunner``.

The bound. Per account, with ``S`` submissions per window ``W``, one generation slot and
generations of ``g`` seconds, the service admits submission ``k`` no earlier than
``a_k = max(a_(k-1) + g, a_(k-S) + W)`` (the slot frees when the previous generation ends; the
window admits a first burst of ``S`` at once, then each place frees ``W`` after it was taken),
``a_0 = 0``, and ``n`` jobs end no earlier than ``T* = a_(n-1) + g``. With equal durations
that is ``(ceil(n/S) - 1) * W + (n - (ceil(n/S) - 1) * S) * g`` when ``S * g <= W``
(rate-bound) and ``n * g`` when ``g >= W / S`` (slot-bound). The recurrence is run per account
over the durations the service actually drew for that account's jobs (``totalTime``, in
creation order; processing times vary by +/-``JITTER``), and ``T*`` is the largest over the
accounts; an account that ran more than the even share ``ceil(jobs / accounts)`` counts as
running the even share of its mean duration, so an uneven spread is not excused.
Efficiency = ``T*`` / the measured time from the first call to the last result in hand
(= achieved throughput / bound throughput). Targets: >= 0.95, zero 429s served. The last
column is how long ``BatchRunner.run()`` goes on after its last result (its idle workers wait
for their account's window before they find that no job is left).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from asyncsdk import AsyncClient, BatchRunner, Generation, Job

from ._common import EmulatorProcess, Spread, Table, limits_for, progress, run_main

MODEL = "google/nano-banana"
JITTER = 0.1
STARTING_TIME = 0.5
SUBMISSIONS = 10
WINDOW = 60.0
TARGET = 0.95


@dataclass(frozen=True)
class Scenario:
    """One row of the table: its nominal durations, its size and its compression."""

    name: str
    accounts: int
    jobs: int
    duration: float  # nominal seconds from creation to the end
    time_scale: float
    batch: bool

    def quick(self) -> Scenario:
        """A second's worth: few jobs, strong compression."""
        accounts = min(self.accounts, 3)
        return Scenario(
            self.name, accounts, 2 * accounts, self.duration, self.time_scale / 4, self.batch
        )


SCENARIOS = (
    Scenario("rate-bound, 1 account", 1, 25, 1.5, 0.02, batch=False),
    Scenario("slot-bound, 1 account", 1, 8, 10.0, 0.02, batch=False),
    Scenario("batch, 100 accounts x 20 jobs", 100, 2000, 3.5, 0.1, batch=True),
)


def bound(durations: Sequence[float], submissions: int, window: float) -> float:
    """``T*`` of the module docstring: the earliest end of generations of these durations,
    in this order, on one account."""
    arrivals: list[float] = []
    for k in range(len(durations)):
        earliest = arrivals[-1] + durations[k - 1] if arrivals else 0.0
        if k >= submissions:
            earliest = max(earliest, arrivals[k - submissions] + window)
        arrivals.append(earliest)
    return arrivals[-1] + durations[-1]


@dataclass
class Outcome:
    """One repetition of one scenario."""

    efficiency: float
    elapsed: float
    tail: float
    bound: float
    served_429s: int
    polls_per_generation: float
    failures: int


async def _generate_all(clients: Sequence[AsyncClient], scenario: Scenario, tag: str) -> Finished:
    """``jobs`` concurrent ``generate()`` calls on one account."""
    (client,) = clients
    results: list[Generation] = []

    async def one(i: int) -> None:
        results.append(await client.generate(MODEL, f"{tag} job {i}"))

    async with anyio.create_task_group() as tg:
        for i in range(scenario.jobs):
            tg.start_soon(one, i)
    return Finished({"the account": results}, time.monotonic())


async def _batch_all(clients: Sequence[AsyncClient], scenario: Scenario, tag: str) -> Finished:
    """All jobs through one ``BatchRunner`` over every client."""
    jobs = [Job(MODEL, f"{tag} job {i}", id=f"{tag}-{i}") for i in range(scenario.jobs)]
    by_account: dict[str, list[Generation]] = {}
    last = 0.0
    async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as stream:
        async for result in stream:
            last = time.monotonic()
            if result.generation is None:
                raise RuntimeError(f"job {result.job.id} failed: {result.error!r}")
            by_account.setdefault(result.account or "", []).append(result.generation)
    return Finished(by_account, last)


@dataclass
class Finished:
    """What a driver returns: the generations by account, and when the last was in hand."""

    by_account: dict[str, list[Generation]]
    last_result: float


Driver = Callable[[Sequence[AsyncClient], Scenario, str], Awaitable[Finished]]


async def repetition(emu: EmulatorProcess, scenario: Scenario, index: int) -> Outcome:
    """Run the scenario once on accounts ``index * accounts ...`` of ``emu``."""
    scale = scenario.time_scale
    tokens = emu.tokens[index * scenario.accounts : (index + 1) * scenario.accounts]
    limits = limits_for(scale, submissions=SUBMISSIONS, window=WINDOW)
    clients = [
        AsyncClient(token, base_url=emu.base_url, limits=limits, poll_interval=1.0 * scale)
        for token in tokens
    ]
    driver: Driver = _batch_all if scenario.batch else _generate_all
    # Open every client's connection first: in compressed time, 100 TCP handshakes at once
    # would weigh 10-50x what they weigh against the real service.
    for client in clients:
        await client.status()
    await emu.reset()
    try:
        started = time.monotonic()
        finished = await driver(clients, scenario, f"r{index}")
        returned = time.monotonic()
    finally:
        for client in clients:
            await client.aclose()
    stats = await emu.stats()
    elapsed = finished.last_result - started
    share = math.ceil(scenario.jobs / scenario.accounts)
    best = 0.0
    for generations in finished.by_account.values():
        generations.sort(key=lambda g: g.created_at or 0)
        durations = [g.total_time or 0.0 for g in generations]
        if len(durations) > share:  # an uneven spread is not excused: count the even share
            durations = [statistics.fmean(durations)] * share
        best = max(best, bound(durations, SUBMISSIONS, WINDOW * scale))
    return Outcome(
        efficiency=best / elapsed,
        elapsed=elapsed / scale,
        tail=(returned - finished.last_result) / scale,
        bound=best / scale,
        served_429s=stats.served_429s,
        polls_per_generation=stats.polls / max(stats.created, 1),
        failures=scenario.jobs - sum(len(g) for g in finished.by_account.values()),
    )


async def run(quick: bool) -> list[Table]:
    scenarios = [s.quick() for s in SCENARIOS] if quick else list(SCENARIOS)
    repetitions = 1 if quick else 5
    outcomes: dict[str, list[Outcome]] = {s.name: [] for s in scenarios}
    async with contextlib.AsyncExitStack() as stack:
        emulators = []
        for scenario in scenarios:
            emulators.append(
                await stack.enter_async_context(
                    EmulatorProcess(
                        accounts=scenario.accounts * repetitions,
                        time_scale=scenario.time_scale,
                        submissions=SUBMISSIONS,
                        window=WINDOW,
                        starting_time=STARTING_TIME,
                        processing_time=scenario.duration - STARTING_TIME,
                        jitter=JITTER,
                    )
                )
            )
        for index in range(repetitions):
            for scenario, emu in zip(scenarios, emulators, strict=True):
                progress(f"scheduler: {scenario.name}, repetition {index + 1}/{repetitions}")
                outcomes[scenario.name].append(await repetition(emu, scenario, index))
    return [_table(scenarios, outcomes, repetitions)]


def _table(
    scenarios: Sequence[Scenario], outcomes: dict[str, list[Outcome]], repetitions: int
) -> Table:
    table = Table(
        "2. Scheduler efficiency: achieved throughput / the limits' bound",
        [
            "scenario",
            "jobs x duration",
            "bound T* (s)",
            "measured (s)",
            "efficiency",
            "429s served",
            "polls per generation",
            "verdict",
            "run() ends (s after)",
        ],
    )
    for scenario in scenarios:
        runs = outcomes[scenario.name]
        efficiency = Spread.of([o.efficiency for o in runs])
        served = sum(o.served_429s for o in runs)
        failures = sum(o.failures for o in runs)
        met = efficiency.median >= TARGET and served == 0 and failures == 0
        table.add(
            scenario.name,
            f"{scenario.jobs} x {scenario.duration:g} s",
            Spread.of([o.bound for o in runs]).fmt(".1f"),
            Spread.of([o.elapsed for o in runs]).fmt(".1f"),
            efficiency.fmt(".3f"),
            str(served),
            Spread.of([o.polls_per_generation for o in runs]).fmt(".2f"),
            "met" if met else "MISSED",
            Spread.of([o.tail for o in runs]).fmt(".1f"),
        )
    compressions = ", ".join(f"{s.name.split(',')[0]} {1 / s.time_scale:g}x" for s in scenarios)
    table.notes += [
        f"Median (min-max) of {repetitions} repetitions, the scenarios interleaved; times in "
        f"real (uncompressed) seconds; 429s served: the total over all repetitions.",
        f"Limits {SUBMISSIONS} submissions per {WINDOW:g} s, 1 generation at a time; "
        f"time compressed ({compressions}), the client's limits, margin and poll interval "
        f"with it; processing times within +/-{JITTER:.0%} of nominal.",
        "T* = the largest over the accounts of a_(n-1) + g_(n-1), a_k = max(a_(k-1) + "
        "g_(k-1), a_(k-S) + W), a_0 = 0, over the durations g_k the service drew for the "
        "account's n jobs (equal g: (ceil(n/S) - 1) * W + (n - (ceil(n/S) - 1) * S) * g "
        "when rate-bound, n * g when slot-bound); n at most ceil(jobs / accounts).",
        "Fresh clients every repetition (their connections opened before the clock starts): "
        "the first generation of each is polled without a learnt duration.",
    ]
    return table


def main() -> None:
    run_main(__doc__ or "", run)


if __name__ == "__main__":
    main()
