"""What every benchmark shares: repetitions, spreads, tables, the emulator process, the machine.

- :class:`Spread` is the median, min and max of the repetitions of one figure; every figure a
  benchmark prints is one (ratios are taken per repetition, then summarised).
- :func:`interleaved` runs variants in turn (a, b, c, a, b, c, ...), so that a noisy moment of
  the machine hits every variant alike.
- :class:`Table` renders as Markdown: the terminal output of ``make bench`` is what
  ``benchmarks/RESULTS.md`` records.
- :class:`EmulatorProcess` runs the emulator in another process (``benchmarks._server``) and
  reads its counters; :func:`limits_for` gives the client the same compressed limits.
- :class:`LoopLag`, :func:`memory` and :class:`Sockets` measure the client process itself.
- :func:`summary` notes one row of issue 12's table (the SDK's figure, the baseline measured
  in the same run, the target); ``python -m benchmarks`` gathers them into one table at the
  end. A benchmark prints its rows after its tables, as Markdown comments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from asyncsdk import Limits

__all__ = [
    "ROOT",
    "SUMMARY_PREFIX",
    "EmulatorProcess",
    "LoopLag",
    "ServerStats",
    "Sockets",
    "Spread",
    "Table",
    "interleaved",
    "limits_for",
    "machine_facts",
    "memory",
    "parse_args",
    "percentile",
    "progress",
    "emit_summaries",
    "run_main",
    "summary",
]

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def progress(message: str) -> None:
    """A line on stderr: the tables alone go to stdout."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Median, min and max of the repetitions of one figure."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no values")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, spec: str = ".2f", unit: str = "") -> str:
        """``1.07 (1.03-1.12)``: the median, then min-max."""
        return (
            f"{self.median:{spec}}{unit} ({self.low:{spec}}-{self.high:{spec}})"
            if self.count > 1
            else f"{self.median:{spec}}{unit}"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(max(math.ceil(q / 100 * len(ordered)), 1), len(ordered))
    return ordered[rank - 1]


async def interleaved(
    variants: Mapping[str, Callable[[], Awaitable[T]]], repetitions: int
) -> dict[str, list[T]]:
    """Each variant's measurement, ``repetitions`` times, in turn: a, b, c, a, b, c, ..."""
    results: dict[str, list[T]] = {name: [] for name in variants}
    for _ in range(repetitions):
        for name, measure in variants.items():
            results[name].append(await measure())
    return results


@dataclass
class Table:
    """A Markdown table with a title and notes under it."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"### {self.title}", "", line(self.columns), line(["-" * w for w in widths])]
        out += [line(row) for row in self.rows]
        if self.notes:
            out.append("")
            out += [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"


# -- the emulator in another process -----------------------------------------------------------


@dataclass(frozen=True)
class ServerStats:
    """The emulator's counters (see ``benchmarks._server``)."""

    throttled: Mapping[str, int]
    created: int
    max_in_progress: int
    requests: Mapping[str, int]
    double_charged: int = 0

    @property
    def served_429s(self) -> int:
        return sum(self.throttled.values())

    @property
    def polls(self) -> int:
        return self.requests.get("GET /api/v1/image-generation/{generationId}", 0)

    @property
    def total_requests(self) -> int:
        return sum(n for route, n in self.requests.items() if "/_bench/" not in route)


def limits_for(
    time_scale: float,
    *,
    submissions: int = 10,
    window: float = 60.0,
    concurrent: int = 1,
    generation_timeout: float = 50.0,
) -> Limits:
    """The client's :class:`Limits` for an emulator started with the same (nominal) values:
    the real-time limits, safety margin included, compressed by ``time_scale``."""
    nominal = Limits(submissions, window, concurrent, generation_timeout)
    return Limits(
        submissions=submissions,
        window=window * time_scale,
        concurrent=concurrent,
        generation_timeout=generation_timeout * time_scale,
        margin=nominal.margin * time_scale,
    )


class EmulatorProcess:
    """``async with EmulatorProcess(accounts=2, time_scale=0.05) as emu:`` -> ``emu.base_url``,
    ``emu.tokens``, ``await emu.stats()``. Keyword arguments are ``benchmarks._server``'s
    options (``processing_time=2.5`` -> ``--processing-time 2.5``)."""

    def __init__(self, **options: float) -> None:
        self.options = options
        self.base_url = ""
        self.tokens: list[str] = []
        self._process: asyncio.subprocess.Process | None = None

    @property
    def origin(self) -> str:
        return self.base_url.removesuffix("/api/v1")

    async def __aenter__(self) -> EmulatorProcess:
        argv = [sys.executable, "-m", "benchmarks._server"]
        for name, value in self.options.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=1 << 24,  # the first line lists every token: 5,000 of them are 190 kB
        )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), 60)
            hello = json.loads(line)
        except BaseException:
            await self.aclose()
            raise
        self.base_url, self.tokens = hello["base_url"], hello["tokens"]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()

    async def _call(self, method: str, path: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.origin + path) as response,
        ):
            return await response.json()

    async def stats(self) -> ServerStats:
        data = await self._call("GET", "/_bench/stats")
        return ServerStats(
            data["throttled"],
            data["created"],
            data["max_in_progress"],
            data["requests"],
            data.get("double_charged", 0),
        )

    async def reset(self) -> None:
        await self._call("POST", "/_bench/reset")


# -- the client process ------------------------------------------------------------------------


class LoopLag:
    """How late a 10 ms ticker wakes up: ``async with LoopLag() as lag: ...; lag.samples``."""

    def __init__(self, period: float = 0.010) -> None:
        self.period = period
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.samples.append(max(time.perf_counter() - before - self.period, 0.0))

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def p(self, q: float) -> float:
        """The ``q``-th percentile of the lag, in seconds."""
        return percentile(self.samples, q)


class Sockets:
    """The most sockets this process had open at once while the block ran, sampled by a
    thread (the count costs the loop nothing): ``async with Sockets() as sockets: ...;
    sockets.peak``. ``counter`` counts them (default: every socket descriptor)."""

    def __init__(self, counter: Callable[[], int] | None = None, period: float = 0.05) -> None:
        self.counter = counter or (lambda: len(Sockets.inodes()))
        self.period = period
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def inodes() -> set[str]:
        """The inodes of this process's sockets, as ``/proc/net/tcp`` spells them."""
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    found.add(target[8:-1])
        return found

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, self.counter())

    async def __aenter__(self) -> Sockets:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self.peak = max(self.peak, self.counter())


def memory() -> dict[str, float]:
    """This process's resident memory now (``rss``) and at its peak (``peak``), in MB."""
    found: dict[str, float] = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found["rss" if key == "VmRSS" else "peak"] = int(value.split()[0]) / 1024
    return found


def machine_facts() -> dict[str, str]:
    """What a reader needs to place the numbers: cores, CPU, Python, libraries, date."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.partition(":")[2].strip()
                    break
    except OSError:
        pass

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    libraries = ("aiohttp", "httpx", "cattrs", "attrs", "anyio", "backoff")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "libraries": ", ".join(f"{name} {version(name)}" for name in libraries),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- the command line of one benchmark ---------------------------------------------------------


SUMMARY_PREFIX = "<!-- summary: "
_SUMMARIES: list[dict[str, Any]] = []


def summary(figure: str, sdk: str, baseline: str, target: str, met: bool | None) -> None:
    """Note one row of issue 12's table (``met=None``: no target here)."""
    _SUMMARIES.append(
        {"figure": figure, "sdk": sdk, "baseline": baseline, "target": target, "met": met}
    )


def emit_summaries() -> None:
    """Print the rows noted so far, one Markdown comment each (after the tables)."""
    for row in _SUMMARIES:
        print(SUMMARY_PREFIX + json.dumps(row) + " -->", flush=True)
    _SUMMARIES.clear()


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="about a second: a smoke run, not a measurement"
    )
    return parser.parse_args(argv)


def run_main(
    description: str,
    run: Callable[[bool], Coroutine[Any, Any, list[Table]]],
    argv: Sequence[str] | None = None,
) -> None:
    """``python -m benchmarks.<name> [--quick]``: run, then print the tables on stdout."""
    args = parse_args(description, argv)
    tables = asyncio.run(run(args.quick))
    for table in tables:
        print(table.render(), flush=True)
    emit_summaries()
