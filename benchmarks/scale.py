"""4. Scale: thousands of accounts from one client process, the emulator in another.

Two rows, each run in fresh client processes (peak RSS is a per-process high-water mark) on
fresh accounts of one emulator process (time scale 1: generations of 3.5 s, +/-10%):

- **1,000 accounts x 3 jobs**: 1,000 ``AsyncClient`` objects and 3,000 ``Job`` objects
  through one ``BatchRunner``; targets: peak RSS <= 100 MB, loop lag p99 <= 20 ms, open
  sockets <= 100;
- **10,000 accounts x 3 jobs**: the same with 10,000 clients and 30,000 jobs; targets: peak
  RSS <= 200 MB, loop lag p99 <= 50 ms, open sockets <= 200.

Measured in the client process: peak RSS (``VmHWM``) and the RSS of the same process before it
built anything; loop lag (how late a 10 ms ticker wakes: p50, p99, max) during the run and in
the idle process before; the most TCP sockets open at once (sampled every 50 ms by a thread
from ``/proc/self/fd`` and ``/proc/net/tcp``); the process's CPU time and the share of it
spent in the garbage collector (``gc.callbacks``); 429s served and jobs failed.

**Baselines, measured in the same run against the same emulator process.** The hand-rolled
client of ``benchmarks.handrolled`` (one shared aiohttp session; per account an aiolimiter,
a ``Semaphore(1)`` and a fixed poll; tenacity) runs the same jobs on fresh accounts,
alternating with the SDK. Thousands of accounts on two shared cores are bound by CPU, not by
the service's limits: 30,000 generations need about 100,000 requests, which one core cannot
send in the 11 s the limits would allow. So each row also shows the physical floor: a plain
aiohttp client (one session of 100 connections, 100 tasks reading one record in a loop, the
reply decoded with ``json.loads``) for a few seconds: the most requests per second one core
drives, and the loop lag and RSS that costs. A client that runs jobs (submits, sleeps between
polls, keeps state per account) cannot reach that tight loop's rate; the hand-rolled client
shows what such a client does reach, and the SDK's jobs per CPU-second are compared with it
(target: within 1.5x; a job's requests differ, the SDK polling less). Rates are over the
client process's CPU time (its own cost, whatever else runs on the machine); requests are the
emulator's count of those served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from asyncsdk import AsyncClient, BatchRunner, Job

from ._common import (
    ROOT,
    EmulatorProcess,
    LoopLag,
    Sockets,
    Spread,
    Table,
    emit_summaries,
    limits_for,
    memory,
    progress,
    summary,
)
from .handrolled import HandRolled, _handrolled

MODEL = "google/nano-banana"
TIME_SCALE = 1.0
JITTER = 0.1
IDLE_SECONDS = 0.5
FLOOR_SECONDS = 4.0
FLOOR_TASKS = 100
FLOOR_TARGET = 1.5
KINDS = ("asyncsdk", "hand-rolled")


@dataclass(frozen=True)
class Row:
    """One row: its size, how often it runs, and its targets."""

    accounts: int
    jobs: int
    repetitions: int
    rss: float  # MB
    lag: float  # seconds, p99
    sockets: int

    def quick(self) -> Row:
        return Row(self.accounts // 50, 2, 1, self.rss, self.lag, self.sockets)


ROWS = (
    Row(1_000, 3, 2, rss=100.0, lag=0.020, sockets=100),
    Row(10_000, 3, 1, rss=200.0, lag=0.050, sockets=200),
)


class GcTime:
    """CPU seconds spent in the garbage collector while the block runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.collections += 1

    def __enter__(self) -> GcTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)


def tcp_sockets() -> int:
    """TCP sockets this process has open (its socket inodes found in ``/proc/net/tcp*``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    mine = Sockets.inodes()
    return len(mine & inodes)


async def child(kind: str, base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> Any:
    """One repetition of one client, in this (fresh) process: the figures as a JSON-able
    dict. The SDK runs the jobs through one ``BatchRunner``; the hand-rolled client starts
    every job at once, each account's queueing in its own limiter."""
    async with LoopLag() as idle:
        await asyncio.sleep(IDLE_SECONDS)
    baseline = memory()["rss"]
    with GcTime() as collector:
        async with LoopLag() as busy, Sockets(counter=tcp_sockets) as sockets:
            cpu, started = time.process_time(), time.monotonic()
            if kind == "asyncsdk":
                failures = await _sdk_jobs(base_url, tokens, jobs, scale)
            else:
                failures = await _handrolled(base_url, tokens, jobs, scale)
            elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    return {
        "baseline_mb": baseline,
        "peak_mb": memory()["peak"],
        "jobs": len(tokens) * jobs,
        "failures": failures,
        "elapsed": elapsed,
        "cpu": cpu,
        "gc": collector.seconds,
        "lag_p50": busy.p(50),
        "lag_p99": busy.p(99),
        "lag_max": max(busy.samples, default=0.0),
        "idle_p99": idle.p(99),
        "sockets": sockets.peak,
    }


async def weight_child(count: int) -> Any:
    """What one more account weighs, in this (fresh) process: bytes (tracemalloc) and
    GC-tracked objects per open client (its transport in the shared pool, its gate) and per
    hand-rolled account (limiter, semaphore, tenacity's retrying object)."""
    base_url = "http://127.0.0.1:9/api/v1"
    tokens = [f"bye_{i:032x}" for i in range(count)]
    figures = {}

    async def measure(name: str, make: Any) -> None:
        gc.collect()
        objects = len(gc.get_objects())
        tracemalloc.start()
        made = [make(token) for token in tokens]
        gc.collect()
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        figures[name] = {
            "bytes": size / count,
            "objects": (len(gc.get_objects()) - objects) / count,
        }
        for item in made:
            if isinstance(item, AsyncClient):
                await item.aclose()

    def client(token: str) -> AsyncClient:
        made = AsyncClient(token, base_url=base_url)
        made._transport.session  # noqa: B018  (join the pool, as the first request would)
        made.gate  # noqa: B018
        return made

    async with aiohttp.ClientSession() as session:
        await measure("asyncsdk", client)
        await measure("hand-rolled", lambda token: HandRolled(session, base_url, token, 1.0))
    return figures


async def _sdk_jobs(base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> int:
    limits = limits_for(scale)
    clients = [
        AsyncClient(token, base_url=base_url, limits=limits, poll_interval=1.0 * scale)
        for token in tokens
    ]
    work = [Job(MODEL, f"scale job {i}", id=f"s{i}") for i in range(len(tokens) * jobs)]
    failures = 0
    try:
        async with contextlib.aclosing(BatchRunner(clients).run(work)) as stream:
            async for result in stream:
                failures += result.generation is None
    finally:
        for client in clients:
            await client.aclose()
    return failures


async def floor_child(base_url: str, token: str, path: str, seconds: float) -> Any:
    """The floor, in this (fresh) process: plain aiohttp reads as fast as one core goes."""
    baseline = memory()["rss"]
    url = base_url + path
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=FLOOR_TASKS)) as session,
        LoopLag() as busy,
        Sockets(counter=tcp_sockets) as sockets,
    ):
        deadline = time.monotonic() + seconds

        async def reader() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.get(url, headers=headers) as response:
                    json.loads(await response.read())["data"]
                    done += 1

        cpu, started = time.process_time(), time.monotonic()
        await asyncio.gather(*(reader() for _ in range(FLOOR_TASKS)))
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "rate": done / elapsed,
        "cpu_per_request": cpu / done,
        "lag_p99": busy.p(99),
        "peak_mb": memory()["peak"],
        "baseline_mb": baseline,
        "sockets": sockets.peak,
    }


async def _spawn(arguments: Sequence[str], stdin: str = "") -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.scale",
        *arguments,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 900)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"scale child {arguments[:1]} failed: exit code {process.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def _run_row(row: Row, scale: float) -> tuple[dict[str, list[Any]], Any]:
    """The row's repetitions, the clients alternating, and the floor, against one emulator."""
    results: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    async with EmulatorProcess(
        accounts=row.accounts * row.repetitions * len(KINDS) + 1,
        time_scale=scale,
        jitter=JITTER,
        credits=1000,
    ) as emu:
        # One finished generation for the floor to read, on an account nobody else uses.
        reader = emu.tokens[-1]
        async with aiohttp.ClientSession() as session:
            generation_id = await _finished_generation(session, emu.base_url, reader)
        progress(f"scale: the floor against the emulator of {row.accounts:,} accounts")
        path = f"/image-generation/{generation_id}"
        seconds = FLOOR_SECONDS if row.repetitions > 1 or row.accounts >= 1000 else 1.0
        floor = await _spawn(["--floor", emu.base_url, reader, path, str(seconds)])
        batch = 0
        for index in range(row.repetitions):
            for kind in KINDS if index % 2 == 0 else KINDS[::-1]:
                progress(f"scale: {kind}, {row.accounts:,} x {row.jobs} jobs, rep {index + 1}")
                tokens = emu.tokens[batch * row.accounts : (batch + 1) * row.accounts]
                batch += 1
                await emu.reset()
                arguments = ["--child", kind, emu.base_url, str(row.jobs), str(scale)]
                result = await _spawn(arguments, "\n".join(tokens))
                stats = await emu.stats()
                result.update(served=stats.served_429s, requests=stats.total_requests)
                results[kind].append(result)
    return results, floor


async def _finished_generation(session: aiohttp.ClientSession, base_url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(
        f"{base_url}/image-generation/{MODEL}", json={"prompt": "the floor"}, headers=headers
    ) as response:
        generation_id: str = (await response.json())["data"]["generationId"]
    while True:
        async with session.get(
            f"{base_url}/image-generation/{generation_id}", headers=headers
        ) as response:
            if (await response.json())["data"]["status"] == "succeeded":
                return generation_id
        await asyncio.sleep(0.2)


WEIGHED = 2_000


async def run(quick: bool, rows: Sequence[Row] = ROWS) -> list[Table]:
    weighed = 200 if quick else WEIGHED
    tables = [_weight_table(await _spawn(["--weight", str(weighed)]), weighed)]
    for row in rows:
        row = row.quick() if quick else row
        scale = TIME_SCALE / 10 if quick else TIME_SCALE
        results, floor = await _run_row(row, scale)
        tables.append(_table(row, results, floor, scale))
    return tables


def _weight_table(figures: Any, weighed: int) -> Table:
    table = Table(
        "4a. Weight of one more account in a process",
        ["figure", "asyncsdk (client + its gate)", "hand-rolled (account object)"],
    )
    sdk, hand = figures["asyncsdk"], figures["hand-rolled"]
    table.add("bytes (tracemalloc)", f"{sdk['bytes']:,.0f}", f"{hand['bytes']:,.0f}")
    table.add("GC-tracked objects", f"{sdk['objects']:.0f}", f"{hand['objects']:.0f}")
    table.notes.append(
        f"{weighed:,} of each made in a fresh process: an open AsyncClient (in the shared pool, "
        "with its account's gate) against a HandRolled account of benchmarks.handrolled "
        "(limiter, semaphore, tenacity). Issue 12 measured about 25 KB and 133 objects per "
        "client before."
    )
    summary(
        "weight of a client: bytes / GC-tracked objects",
        f"{sdk['bytes']:,.0f} B / {sdk['objects']:.0f}",
        f"hand-rolled account: {hand['bytes']:,.0f} B / {hand['objects']:.0f}",
        "down from about 25 KB / 133 (issue 12)",
        None,
    )
    return table


def _table(row: Row, by_kind: dict[str, list[Any]], floor: Any, scale: float) -> Table:
    sdk, hand = by_kind["asyncsdk"], by_kind["hand-rolled"]

    def spread(key: str, factor: float = 1.0, of: list[Any] = sdk) -> Spread:
        return Spread.of([r[key] * factor for r in of])

    def rate(r: Any) -> float:  # requests per CPU-second of the client process
        return float(r["requests"] / r["cpu"])

    def each(value: Callable[[Any], float], fmt: str) -> tuple[str, str]:
        """``value`` of every repetition, for the SDK and for the hand-rolled client."""
        mine, theirs = (Spread.of([value(r) for r in of]).fmt(fmt) for of in (sdk, hand))
        return mine, theirs

    def both(key: str, fmt: str, factor: float = 1.0) -> tuple[str, str]:
        return each(lambda r: r[key] * factor, fmt)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    def jobs_rate(r: Any) -> float:  # jobs per CPU-second of the client process
        return float(r["jobs"] / r["cpu"])

    behind = Spread.of([jobs_rate(h) / jobs_rate(s) for s, h in zip(sdk, hand, strict=True)])
    peak, p99, sockets = spread("peak_mb"), spread("lag_p99"), spread("sockets")
    table = Table(
        f"4. Scale: {row.accounts:,} accounts x {row.jobs} jobs in one client process",
        ["figure", "asyncsdk", "hand-rolled", "floor: plain loop", "target", "verdict"],
    )
    rss = f"<= {row.rss:.0f} MB"
    table.add("peak RSS (MB)", *both("peak_mb", ".0f"), f"{floor['peak_mb']:.0f}", rss,
              verdict(peak.median <= row.rss))  # fmt: skip
    table.add("idle RSS before the run (MB)", *both("baseline_mb", ".0f"),
              f"{floor['baseline_mb']:.0f}", "", "")  # fmt: skip
    table.add("loop lag p99 (ms)", *both("lag_p99", ".1f", 1000),
              f"{floor['lag_p99'] * 1000:.1f}", f"<= {row.lag * 1000:.0f} ms",
              verdict(p99.median <= row.lag))  # fmt: skip
    table.add("loop lag p50 (ms)", *both("lag_p50", ".1f", 1000), "", "", "")
    table.add("loop lag max (ms)", *both("lag_max", ".0f", 1000), "", "", "")
    table.add("TCP sockets open at once", *both("sockets", ".0f"), f"{floor['sockets']}",
              f"<= {row.sockets}", verdict(sockets.median <= row.sockets))  # fmt: skip
    table.add(
        "jobs per CPU-second",
        *each(jobs_rate, ".0f"),
        "",
        f"hand-rolled within {FLOOR_TARGET}x",
        verdict(behind.median <= FLOOR_TARGET),
    )
    table.add("hand-rolled / asyncsdk (jobs per CPU-second)", behind.fmt(".2f") + "x", "", "",
              "", "")  # fmt: skip
    table.add(
        "requests per CPU-second",
        *each(rate, ".0f"),
        f"{1 / floor['cpu_per_request']:.0f}",
        "",
        "",
    )
    table.add(
        "requests per second (wall clock)",
        *each(lambda r: r["requests"] / r["elapsed"], ".0f"),
        f"{floor['rate']:.0f}",
        "",
        "",
    )
    table.add(
        "requests per job",
        *each(lambda r: r["requests"] / r["jobs"], ".2f"),
        "",
        "",
        "",
    )
    table.add(
        "client CPU per job (ms)",
        *each(lambda r: r["cpu"] / r["jobs"] * 1000, ".2f"),
        "",
        "",
        "",
    )
    table.add(
        "share of the CPU in the GC",
        *each(lambda r: r["gc"] / r["cpu"], ".0%"),
        "",
        "",
        "",
    )
    served = [sum(r["served"] for r in of) for of in (sdk, hand)]
    failed = [sum(r["failures"] for r in of) for of in (sdk, hand)]
    table.add("429s served / jobs failed", f"{served[0]} / {failed[0]}",
              f"{served[1]} / {failed[1]}", "", "0 / 0",
              verdict(served[0] == 0 and failed[0] == 0))  # fmt: skip
    table.add("time to the last job (s)", *both("elapsed", ".1f"), "", "", "")
    table.notes += [
        f"Median (min-max) of {len(sdk)} repetition(s) per client, alternating, each in a "
        f"fresh client process on fresh accounts of one emulator process; time scale {scale:g} "
        f"(generations of {3.5 * scale:g} s +/-{JITTER:.0%}, poll interval {scale:g} s). The "
        "SDK's clients share one connection pool (the default: at most 100 connections); the "
        "hand-rolled clients share one aiohttp session (its default: 100 connections).",
        f"Floor: plain aiohttp, {FLOOR_TASKS} tasks over one session of {FLOOR_TASKS} "
        f"connections reading one record for {floor['seconds']:g} s in a fresh process, against "
        "the same emulator process: its lag is that of a loop with 100 answers ready at once.",
    ]
    summary(
        f"{row.accounts:,} accounts x {row.jobs} jobs: peak RSS / lag p99 / sockets",
        f"{peak.median:.0f} MB / {p99.median * 1000:.1f} ms / {sockets.median:.0f}",
        f"hand-rolled: {spread('peak_mb', of=hand).median:.0f} MB / "
        f"{spread('lag_p99', 1000, of=hand).median:.1f} ms / "
        f"{spread('sockets', of=hand).median:.0f}",
        f"<= {row.rss:.0f} MB / {row.lag * 1000:.0f} ms / {row.sockets}",
        peak.median <= row.rss and p99.median <= row.lag and sockets.median <= row.sockets,
    )
    summary(
        f"{row.accounts:,} accounts: jobs / requests per CPU-second",
        f"{Spread.of([jobs_rate(r) for r in sdk]).median:.0f} / "
        f"{Spread.of([rate(r) for r in sdk]).median:.0f}",
        f"hand-rolled: {Spread.of([jobs_rate(r) for r in hand]).median:.0f} / "
        f"{Spread.of([rate(r) for r in hand]).median:.0f}; plain loop: - / "
        f"{1 / floor['cpu_per_request']:.0f}",
        f"jobs within {FLOOR_TARGET}x of the hand-rolled client",
        behind.median <= FLOOR_TARGET,
    )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kind, base_url, jobs, scale = argv[1], argv[2], int(argv[3]), float(argv[4])
        tokens = sys.stdin.read().split()
        print(json.dumps(asyncio.run(child(kind, base_url, tokens, jobs, scale))), flush=True)
        return
    if argv[:1] == ["--weight"]:
        print(json.dumps(asyncio.run(weight_child(int(argv[1])))), flush=True)
        return
    if argv[:1] == ["--floor"]:
        floor = floor_child(argv[1], argv[2], argv[3], float(argv[4]))
        print(json.dumps(asyncio.run(floor)), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few seconds: smoke only")
    parser.add_argument(
        "--accounts", type=int, nargs="+", help="only the rows of these sizes (1000, 10000)"
    )
    args = parser.parse_args(argv)
    rows = [r for r in ROWS if args.accounts is None or r.accounts in args.accounts]
    for table in asyncio.run(run(args.quick, rows)):
        print(table.render(), flush=True)
    emit_summaries()


if __name__ == "__main__":
    main()
