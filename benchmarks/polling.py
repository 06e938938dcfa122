"""3. Polling cost and latency: polls per generation, and how late the client sees the end.

For generations of 2, 10 and 40 s (from creation to the end, on the service's clock; the
emulator compresses time by ``TIME_SCALE`` and draws each processing time within +/-``JITTER``
of its nominal value, so that a learnt duration is never exact), two kinds of client run side
by side, ``LANES`` of each, every one on its own account of one emulator process:

- **asyncsdk**: ``submit()`` then ``wait()`` with the default ``poll_interval`` (1 s, scaled);
  its polls are counted on its aiohttp session (a trace hook);
- **fixed 1 s poller** (the baseline): raw aiohttp, GET every second until the status is
  terminal: what a hand-written client does.

Each client first runs ``WARM_UP`` generations (the SDK learns durations per model; the cold
first generation is reported in a note), then ``PER_REPETITION`` generations per repetition.
The detection delay is the time the client holds the terminal record minus the service's end
(``createdAt + totalTime`` of the record), scaled back to real seconds.
Targets: mean delay <= 0.25 s at <= 1 poll per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from asyncsdk import AsyncClient
from asyncsdk._wire import parse_datetime

from ._common import EmulatorProcess, Spread, Table, limits_for, progress, run_main

TIME_SCALE = 0.1
JITTER = 0.1
STARTING_TIME = 0.5
DURATIONS = (2.0, 10.0, 40.0)
PER_REPETITION = 1
LANES = 5
WARM_UP = 2
TARGET_DELAY = 0.25
TARGET_RATE = 1.0
MODEL = "google/nano-banana"


@dataclass
class Sample:
    """One generation as one client saw it (real-time seconds)."""

    polls: int
    delay: float
    duration: float


@dataclass
class Run:
    """What one client measured: the warm-up, then the samples of each repetition."""

    cold: Sample | None = None
    repetitions: list[list[Sample]] = field(default_factory=list)


def _server_end(record: Any) -> float:
    """Unix time at which the service ended the generation, from its record."""
    created = parse_datetime(record["createdAt"]).timestamp()
    return created + float(record["totalTime"])


class Counter:
    """Counts status polls made through an aiohttp session (``trace_configs=[counter.config]``)."""

    def __init__(self) -> None:
        self.polls = 0
        self.config = aiohttp.TraceConfig()
        self.config.on_request_start.append(self._started)

    async def _started(
        self, _: aiohttp.ClientSession, __: types.SimpleNamespace, params: Any
    ) -> None:
        if params.method == "GET" and "/image-generation/" in params.url.path:
            self.polls += 1


async def sdk_generation(client: AsyncClient, counter: Counter, prompt: str) -> Sample:
    submission = await client.submit(MODEL, prompt)
    before = counter.polls
    generation = await client.wait(submission.generation_id)
    seen = time.time()
    assert generation.created_at is not None and generation.total_time is not None
    end = generation.created_at.timestamp() + generation.total_time
    return Sample(
        counter.polls - before, (seen - end) / TIME_SCALE, generation.total_time / TIME_SCALE
    )


async def fixed_generation(
    session: aiohttp.ClientSession, base_url: str, token: str, prompt: str
) -> Sample:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base_url}/image-generation/{MODEL}"
    async with session.post(url, json={"prompt": prompt}, headers=headers) as response:
        generation_id = (await response.json())["data"]["generationId"]
    polls = 0
    while True:
        async with session.get(
            f"{base_url}/image-generation/{generation_id}", headers=headers
        ) as r:
            record = (await r.json())["data"]
        polls += 1
        if record["status"] in ("succeeded", "failed"):
            seen = time.time()
            break
        await asyncio.sleep(1.0 * TIME_SCALE)
    delay = (seen - _server_end(record)) / TIME_SCALE
    return Sample(polls, delay, float(record["totalTime"]) / TIME_SCALE)


async def measure(duration: float, repetitions: int, lanes: int) -> dict[str, Run]:
    """Both clients side by side, ``lanes`` of each, for generations of ``duration`` seconds."""
    runs = {"asyncsdk": Run(), "fixed 1 s poller": Run()}
    async with contextlib.AsyncExitStack() as stack:
        emu = await stack.enter_async_context(
            EmulatorProcess(
                accounts=2 * lanes,
                time_scale=TIME_SCALE,
                submissions=1000,  # not the subject here: never wait for the window
                starting_time=STARTING_TIME,
                processing_time=duration - STARTING_TIME,
                jitter=JITTER,
            )
        )
        plain = await stack.enter_async_context(aiohttp.ClientSession())
        sdk_lanes: list[tuple[AsyncClient, Counter]] = []
        for lane in range(lanes):
            counter = Counter()
            traced = await stack.enter_async_context(
                aiohttp.ClientSession(trace_configs=[counter.config])
            )
            client = AsyncClient(
                emu.tokens[2 * lane],
                base_url=emu.base_url,
                limits=limits_for(TIME_SCALE, submissions=1000),
                poll_interval=1.0 * TIME_SCALE,
                session=traced,
            )
            sdk_lanes.append((await stack.enter_async_context(client), counter))
        serial = itertools.count()

        async def sdk_batch(lane: int, count: int) -> list[Sample]:
            client, counter = sdk_lanes[lane]
            return [
                await sdk_generation(client, counter, f"sdk {duration} #{next(serial)}")
                for _ in range(count)
            ]

        async def fixed_batch(lane: int, count: int) -> list[Sample]:
            token = emu.tokens[2 * lane + 1]
            return [
                await fixed_generation(plain, emu.base_url, token, f"fixed #{next(serial)}")
                for _ in range(count)
            ]

        async def round_of(count: int) -> tuple[list[Sample], list[Sample]]:
            batches = await asyncio.gather(
                *(sdk_batch(lane, count) for lane in range(lanes)),
                *(fixed_batch(lane, count) for lane in range(lanes)),
            )
            sdk = [s for batch in batches[:lanes] for s in batch]
            return sdk, [s for batch in batches[lanes:] for s in batch]

        sdk, fixed = await round_of(WARM_UP)
        runs["asyncsdk"].cold, runs["fixed 1 s poller"].cold = sdk[0], fixed[0]
        for _ in range(repetitions):
            sdk, fixed = await round_of(PER_REPETITION)
            runs["asyncsdk"].repetitions.append(sdk)
            runs["fixed 1 s poller"].repetitions.append(fixed)
    return runs


def _per_repetition(run: Run) -> tuple[list[float], list[float], list[float]]:
    """Per repetition: polls per generation, polls per second, mean delay."""
    polls, rates, delays = [], [], []
    for samples in run.repetitions:
        count = sum(s.polls for s in samples)
        polls.append(count / len(samples))
        rates.append(count / sum(s.duration + max(s.delay, 0.0) for s in samples))
        delays.append(statistics.fmean(s.delay for s in samples))
    return polls, rates, delays


def _ratio(values: Sequence[float], baseline: Sequence[float]) -> Spread:
    return Spread.of([v / b for v, b in zip(values, baseline, strict=True)])


async def run(quick: bool) -> list[Table]:
    durations = (2.0,) if quick else DURATIONS
    repetitions = 1 if quick else 5
    lanes = 1 if quick else LANES
    table = Table(
        "3. Polling cost and detection delay (real-time seconds)",
        [
            "duration",
            "client",
            "polls per generation",
            "polls per second",
            "mean delay (s)",
            "polls ratio",
            "delay ratio",
            "verdict",
        ],
    )
    colds: list[str] = []
    for duration in durations:
        progress(
            f"polling: {duration:g} s generations, {lanes} lanes x "
            f"({WARM_UP} + {repetitions} x {PER_REPETITION})"
        )
        runs = await measure(duration, repetitions, lanes)
        base_polls, _, base_delays = _per_repetition(runs["fixed 1 s poller"])
        for name, result in runs.items():
            polls, rates, delays = _per_repetition(result)
            rate, delay = Spread.of(rates), Spread.of(delays)
            verdict = ""
            if name == "asyncsdk":
                met = delay.median <= TARGET_DELAY and rate.median <= TARGET_RATE
                verdict = "met" if met else "MISSED"
            table.add(
                f"{duration:g} s",
                name,
                Spread.of(polls).fmt(".1f"),
                rate.fmt(".2f"),
                delay.fmt(".3f"),
                _ratio(polls, base_polls).fmt(".2f") + "x",
                _ratio(delays, base_delays).fmt(".2f") + "x",
                verdict,
            )
            if result.cold is not None:
                colds.append(
                    f"{duration:g} s {name}: {result.cold.polls} polls, "
                    f"{result.cold.delay:.2f} s late"
                )
    table.notes += [
        f"Median (min-max) over {repetitions} repetitions of {lanes} x {PER_REPETITION} "
        f"generations per kind of client, after {WARM_UP} warm-up generations; both kinds run "
        "side by side, each client on its own account of one emulator process. Ratios are per "
        "repetition, against the fixed 1 s poller.",
        f"Time compressed {1 / TIME_SCALE:g}x (poll_interval 1 s -> {TIME_SCALE:g} s); "
        f"processing times drawn within +/-{JITTER:.0%} of nominal; "
        f"targets: mean delay <= {TARGET_DELAY} s at <= {TARGET_RATE:g} poll/s.",
        "Cold first generation (nothing learnt yet, excluded above): " + "; ".join(colds) + ".",
    ]
    return [table]


def main() -> None:
    run_main(__doc__ or "", run)


if __name__ == "__main__":
    main()
