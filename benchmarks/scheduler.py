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
``a_0 = 0``, and ``n`` jobs end no earlier than ``T* = a_(n-1) + g``. In closed form that is
``(ceil(n/S) - 1) * W + (n - (ceil(n/S) - 1) * S) * g`` when ``S * g <= W`` (rate-bound) and
``n * g`` when ``g >= W / S`` (slot-bound). ``g`` is the mean duration the service actually
drew in the repetition (``totalTime``; processing times vary by +/-``JITTER``) and ``n`` the
even share ``ceil(jobs / accounts)``, so an uneven spread across accounts is not excused.
Efficiency = ``T*`` / the measured time from the first call to the last result (= achieved
throughput / bound throughput). Targets: >= 0.95, zero 429s served.
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
    Scenario("batch, 100 accounts x 20 jobs", 100, 2000, 3.5, 0.05, batch=True),
)


def bound(jobs: int, duration: float, submissions: int, window: float) -> float:
    """``T*`` of the module docstring: the earliest end of ``jobs`` jobs on one account."""
    arrivals: list[float] = []
    for k in range(jobs):
        earliest = arrivals[-1] + duration if arrivals else 0.0
        if k >= submissions:
            earliest = max(earliest, arrivals[k - submissions] + window)
        arrivals.append(earliest)
    return arrivals[-1] + duration


@dataclass
class Outcome:
    """One repetition of one scenario."""

    efficiency: float
    elapsed: float
    bound: float
    served_429s: int
    polls_per_generation: float
    failures: int


async def _generate_all(
    clients: Sequence[AsyncClient], scenario: Scenario, tag: str
) -> list[Generation]:
    """``jobs`` concurrent ``generate()`` calls on one account."""
    (client,) = clients
    results: list[Generation] = []

    async def one(i: int) -> None:
        results.append(await client.generate(MODEL, f"{tag} job {i}"))

    async with anyio.create_task_group() as tg:
        for i in range(scenario.jobs):
            tg.start_soon(one, i)
    return results


async def _batch_all(
    clients: Sequence[AsyncClient], scenario: Scenario, tag: str
) -> list[Generation]:
    """All jobs through one ``BatchRunner`` over every client."""
    jobs = [Job(MODEL, f"{tag} job {i}", id=f"{tag}-{i}") for i in range(scenario.jobs)]
    results: list[Generation] = []
    async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as stream:
        async for result in stream:
            if result.generation is None:
                raise RuntimeError(f"job {result.job.id} failed: {result.error!r}")
            results.append(result.generation)
    return results


Driver = Callable[[Sequence[AsyncClient], Scenario, str], Awaitable[list[Generation]]]


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
    await emu.reset()
    try:
        started = time.monotonic()
        generations = await driver(clients, scenario, f"r{index}")
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            await client.aclose()
    stats = await emu.stats()
    durations = [g.total_time for g in generations if g.total_time is not None]
    mean = statistics.fmean(durations)
    share = math.ceil(scenario.jobs / scenario.accounts)
    best = bound(share, mean, SUBMISSIONS, WINDOW * scale)
    return Outcome(
        efficiency=best / elapsed,
        elapsed=elapsed / scale,
        bound=best / scale,
        served_429s=stats.served_429s,
        polls_per_generation=stats.polls / max(stats.created, 1),
        failures=scenario.jobs - len(generations),
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
        )
    compressions = ", ".join(f"{s.name.split(',')[0]} {1 / s.time_scale:g}x" for s in scenarios)
    table.notes += [
        f"Median (min-max) of {repetitions} repetitions, the scenarios interleaved; times in "
        f"real (uncompressed) seconds; 429s served: the total over all repetitions.",
        f"Limits {SUBMISSIONS} submissions per {WINDOW:g} s, 1 generation at a time; "
        f"time compressed ({compressions}), the client's limits, margin and poll interval "
        f"with it; processing times within +/-{JITTER:.0%} of nominal.",
        "T* per account = a_(n-1) + g, a_k = max(a_(k-1) + g, a_(k-S) + W), a_0 = 0: "
        "(ceil(n/S) - 1) * W + (n - (ceil(n/S) - 1) * S) * g when rate-bound, n * g when "
        "slot-bound; n = ceil(jobs / accounts), g = the mean duration the service drew.",
        "Fresh clients every repetition: the first generation of each is polled without a "
        "learnt duration.",
    ]
    return table


def main() -> None:
    run_main(__doc__ or "", run)


if __name__ == "__main__":
    main()
