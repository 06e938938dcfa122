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

**The floor.** Thousands of accounts on two shared cores are bound by CPU, not by the
service's limits: 30,000 generations need about 100,000 requests, which one core cannot send
in the 11 s the limits would allow. So each row also shows the physical floor measured in the
same run: a plain aiohttp client (one session of 100 connections, 100 tasks reading a record in
a loop, the reply decoded with ``json.loads``) against the same emulator process, for a few
seconds: the requests per second one core drives, and the loop lag and RSS that costs. The
SDK's rate (the emulator's count of requests served over the run's time) is compared with it:
target within 1.5x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Sequence
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

MODEL = "google/nano-banana"
TIME_SCALE = 1.0
JITTER = 0.1
IDLE_SECONDS = 0.5
FLOOR_SECONDS = 4.0
FLOOR_TASKS = 100
FLOOR_TARGET = 1.5


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
    Row(1_000, 3, 3, rss=100.0, lag=0.020, sockets=100),
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


async def child(base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> Any:
    """One repetition of the SDK, in this (fresh) process: the figures as a JSON-able dict."""
    async with LoopLag() as idle:
        await asyncio.sleep(IDLE_SECONDS)
    baseline = memory()["rss"]
    limits = limits_for(scale)
    clients = [
        AsyncClient(token, base_url=base_url, limits=limits, poll_interval=1.0 * scale)
        for token in tokens
    ]
    work = [Job(MODEL, f"scale job {i}", id=f"s{i}") for i in range(len(tokens) * jobs)]
    failures = 0
    with GcTime() as collector:
        async with LoopLag() as busy, Sockets(counter=tcp_sockets) as sockets:
            cpu, started = time.process_time(), time.monotonic()
            last = started
            async with contextlib.aclosing(BatchRunner(clients).run(work)) as stream:
                async for result in stream:
                    last = time.monotonic()
                    failures += result.generation is None
            cpu = time.process_time() - cpu
        for client in clients:
            await client.aclose()
    return {
        "baseline_mb": baseline,
        "peak_mb": memory()["peak"],
        "jobs": len(work),
        "failures": failures,
        "elapsed": last - started,
        "cpu": cpu,
        "gc": collector.seconds,
        "lag_p50": busy.p(50),
        "lag_p99": busy.p(99),
        "lag_max": max(busy.samples, default=0.0),
        "idle_p99": idle.p(99),
        "sockets": sockets.peak,
    }


async def floor_child(base_url: str, token: str, path: str) -> Any:
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
        deadline = time.monotonic() + FLOOR_SECONDS

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


async def _run_row(row: Row, scale: float) -> tuple[list[Any], list[Any]]:
    """The row's repetitions and, around them, the floor against the same emulator."""
    results, floors = [], []
    async with EmulatorProcess(
        accounts=row.accounts * row.repetitions, time_scale=scale, jitter=JITTER, credits=1000
    ) as emu:
        # One finished generation for the floor to read, on an account the SDK does not use.
        reader = emu.tokens[-1]
        async with aiohttp.ClientSession() as session:
            generation_id = await _finished_generation(session, emu.base_url, reader)
        path = f"/image-generation/{generation_id}"
        for index in range(row.repetitions):
            progress(
                f"scale: floor, then {row.accounts:,} accounts x {row.jobs} jobs, rep {index + 1}"
            )
            floors.append(await _spawn(["--floor", emu.base_url, reader, path]))
            tokens = emu.tokens[index * row.accounts : (index + 1) * row.accounts]
            await emu.reset()
            result = await _spawn(
                ["--child", emu.base_url, str(row.jobs), str(scale)], "\n".join(tokens)
            )
            stats = await emu.stats()
            result.update(served=stats.served_429s, requests=stats.total_requests)
            results.append(result)
    return results, floors


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


async def run(quick: bool, rows: Sequence[Row] = ROWS) -> list[Table]:
    tables = []
    for row in rows:
        row = row.quick() if quick else row
        scale = TIME_SCALE / 10 if quick else TIME_SCALE
        results, floors = await _run_row(row, scale)
        tables.append(_table(row, results, floors, scale))
    return tables


def _table(row: Row, results: list[Any], floors: list[Any], scale: float) -> Table:
    def spread(key: str, factor: float = 1.0, of: list[Any] = results) -> Spread:
        return Spread.of([r[key] * factor for r in of])

    rates = [r["requests"] / r["elapsed"] for r in results]
    behind = Spread.of([f["rate"] / rate for f, rate in zip(floors, rates, strict=True)])
    peak, p99, sockets = spread("peak_mb"), spread("lag_p99"), spread("sockets")
    table = Table(
        f"4. Scale: {row.accounts:,} accounts x {row.jobs} jobs in one client process",
        ["figure", "asyncsdk", "floor (plain aiohttp, same run)", "target", "verdict"],
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    table.add(
        "peak RSS (MB)",
        peak.fmt(".0f"),
        spread("peak_mb", of=floors).fmt(".0f"),
        f"<= {row.rss:.0f} MB",
        verdict(peak.median <= row.rss),
    )
    table.add(
        "idle RSS before the run (MB)",
        spread("baseline_mb").fmt(".0f"),
        spread("baseline_mb", of=floors).fmt(".0f"),
        "",
        "",
    )
    table.add(
        "loop lag p99 (ms)",
        spread("lag_p99", 1000).fmt(".1f"),
        spread("lag_p99", 1000, of=floors).fmt(".1f"),
        f"<= {row.lag * 1000:.0f} ms",
        verdict(p99.median <= row.lag),
    )
    table.add("loop lag p50 / max (ms)", f"{spread('lag_p50', 1000).fmt('.1f')} / "
              f"{spread('lag_max', 1000).fmt('.0f')}", "", "", "")  # fmt: skip
    table.add(
        "TCP sockets open at once",
        sockets.fmt(".0f"),
        spread("sockets", of=floors).fmt(".0f"),
        f"<= {row.sockets}",
        verdict(sockets.median <= row.sockets),
    )
    table.add(
        "requests per second",
        Spread.of(rates).fmt(".0f"),
        spread("rate", of=floors).fmt(".0f"),
        f"floor within {FLOOR_TARGET}x",
        verdict(behind.median <= FLOOR_TARGET),
    )
    table.add("floor / asyncsdk rate", behind.fmt(".2f") + "x", "", "", "")
    table.add(
        "client CPU per request (us)",
        Spread.of([r["cpu"] / r["requests"] * 1e6 for r in results]).fmt(".0f"),
        spread("cpu_per_request", 1e6, of=floors).fmt(".0f"),
        "",
        "",
    )
    table.add(
        "client CPU per job (ms) / in the GC",
        Spread.of([r["cpu"] / r["jobs"] * 1000 for r in results]).fmt(".2f")
        + " / "
        + Spread.of([r["gc"] / r["cpu"] for r in results]).fmt(".0%"),
        "",
        "",
        "",
    )
    served, failed = sum(r["served"] for r in results), sum(r["failures"] for r in results)
    table.add("429s served / jobs failed", f"{served} / {failed}", "", "0 / 0",
              verdict(served == 0 and failed == 0))  # fmt: skip
    table.add("time to the last result (s)", spread("elapsed").fmt(".1f"), "", "", "")
    table.notes += [
        f"Median (min-max) of {len(results)} repetition(s), each in a fresh client process on "
        f"fresh accounts; time scale {scale:g} (generations of {3.5 * scale:g} s "
        f"+/-{JITTER:.0%}, poll_interval {scale:g} s); the clients share one connection pool "
        "(the default, 100 connections).",
        f"Floor: plain aiohttp, {FLOOR_TASKS} tasks over one session of {FLOOR_TASKS} "
        f"connections reading one record for {FLOOR_SECONDS:g} s, in a fresh process before "
        "each repetition, against the same emulator process.",
    ]
    name = f"{row.accounts:,} accounts x {row.jobs} jobs: peak RSS / lag p99 / sockets"
    summary(
        name,
        f"{peak.median:.0f} MB / {p99.median * 1000:.1f} ms / {sockets.median:.0f}",
        f"floor: {spread('peak_mb', of=floors).median:.0f} MB / "
        f"{spread('lag_p99', 1000, of=floors).median:.1f} ms / "
        f"{spread('sockets', of=floors).median:.0f}",
        f"<= {row.rss:.0f} MB / {row.lag * 1000:.0f} ms / {row.sockets}",
        peak.median <= row.rss and p99.median <= row.lag and sockets.median <= row.sockets,
    )
    summary(
        f"{row.accounts:,} accounts: requests per second (floor / asyncsdk)",
        f"{Spread.of(rates).median:.0f}",
        f"{spread('rate', of=floors).median:.0f} (floor)",
        f"within {FLOOR_TARGET}x of the floor",
        behind.median <= FLOOR_TARGET,
    )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        base_url, jobs, scale = argv[1], int(argv[2]), float(argv[3])
        tokens = sys.stdin.read().split()
        print(json.dumps(asyncio.run(child(base_url, tokens, jobs, scale))), flush=True)
        return
    if argv[:1] == ["--floor"]:
        print(json.dumps(asyncio.run(floor_child(argv[1], argv[2], argv[3]))), flush=True)
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
