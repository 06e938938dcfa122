"""4. Scale: 1,000 accounts x 5 jobs from one client process, the emulator in another.

Each repetition runs in a fresh client process (peak RSS is a per-process high-water mark),
on fresh accounts of one emulator process with 1,000 accounts per repetition. The client
process builds 1,000 ``AsyncClient`` objects (each with its own aiohttp session, the default)
and 5,000 ``Job`` objects, runs them through one ``BatchRunner``, and measures:

- peak RSS (``VmHWM`` of ``/proc/self/status``), against the same process before it built
  anything (interpreter, asyncsdk and aiohttp imported, loop running);
- memory per queued job: (peak RSS - that baseline) / jobs, everything included (clients,
  sessions, connections, jobs, results);
- event-loop lag: how late a 10 ms ticker wakes up (p50, p99) during the run, against the
  same ticker in the idle process just before;
- efficiency against the bound of ``benchmarks.scheduler`` (here slot-bound: 5 x g per
  account), and the 429s the emulator served (target: zero).

Targets: peak RSS <= 200 MB, loop lag p99 <= 20 ms, zero 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from asyncsdk import AsyncClient, BatchRunner, Generation, Job

from ._common import (
    ROOT,
    EmulatorProcess,
    LoopLag,
    Spread,
    Table,
    limits_for,
    memory,
    progress,
)
from .scheduler import bound

MODEL = "google/nano-banana"
ACCOUNTS = 1000
JOBS_PER_ACCOUNT = 5
TIME_SCALE = 1.0
JITTER = 0.1
TARGET_RSS = 200.0
TARGET_LAG = 0.020
IDLE_SECONDS = 1.0


async def child(
    base_url: str,
    tokens: Sequence[str],
    jobs_per_account: int,
    scale: float,
    shared_session: bool = False,
) -> Any:
    """One repetition, in this (fresh) process: the figures as a JSON-able dict."""
    async with LoopLag() as idle:
        await asyncio.sleep(IDLE_SECONDS)
    baseline = memory()["rss"]
    limits = limits_for(scale)
    session = aiohttp.ClientSession() if shared_session else None
    clients = [
        AsyncClient(
            token, base_url=base_url, limits=limits, poll_interval=1.0 * scale, session=session
        )
        for token in tokens
    ]
    jobs = [Job(MODEL, f"scale job {i}", id=f"s{i}") for i in range(len(tokens) * jobs_per_account)]
    queued = memory()["rss"]
    by_account: dict[str, list[Generation]] = {}
    failures = 0
    async with LoopLag() as busy:
        started = time.monotonic()
        last = started
        async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as stream:
            async for result in stream:
                last = time.monotonic()
                if result.generation is None:
                    failures += 1
                else:
                    by_account.setdefault(result.account or "", []).append(result.generation)
    for client in clients:
        await client.aclose()
    if session is not None:
        await session.close()
    share = math.ceil(len(jobs) / len(clients))
    best = 0.0
    for generations in by_account.values():
        generations.sort(key=lambda g: g.created_at or 0)
        durations = [g.total_time or 0.0 for g in generations][:share]
        best = max(best, bound(durations, 10, 60.0 * scale))
    return {
        "baseline_mb": baseline,
        "queued_mb": queued,
        "peak_mb": memory()["peak"],
        "jobs": len(jobs),
        "failures": failures,
        "elapsed": (last - started) / scale,
        "bound": best / scale,
        "lag_p50": busy.p(50),
        "lag_p99": busy.p(99),
        "lag_max": max(busy.samples, default=0.0),
        "idle_p50": idle.p(50),
        "idle_p99": idle.p(99),
    }


async def _repetition(
    emu: EmulatorProcess, tokens: Sequence[str], jobs: int, scale: float, shared: bool
) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.scale",
        "--child",
        emu.base_url,
        str(jobs),
        str(scale),
        "shared" if shared else "own",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await process.communicate("\n".join(tokens).encode())
    if process.returncode != 0:
        raise RuntimeError(f"scale child failed with exit code {process.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def run(quick: bool, shared_session: bool = False) -> list[Table]:
    accounts = 20 if quick else ACCOUNTS
    jobs = 2 if quick else JOBS_PER_ACCOUNT
    scale = TIME_SCALE / 10 if quick else TIME_SCALE
    repetitions = 1 if quick else 5
    results: list[Any] = []
    served = 0
    async with EmulatorProcess(
        accounts=accounts * repetitions, time_scale=scale, jitter=JITTER, credits=1000
    ) as emu:
        for index in range(repetitions):
            progress(f"scale: {accounts} accounts x {jobs} jobs, repetition {index + 1}")
            tokens = emu.tokens[index * accounts : (index + 1) * accounts]
            await emu.reset()
            results.append(await _repetition(emu, tokens, jobs, scale, shared_session))
            served += (await emu.stats()).served_429s
    return [_table(results, served, accounts, jobs, scale, shared_session)]


def _table(
    results: list[Any], served: int, accounts: int, jobs: int, scale: float, shared: bool
) -> Table:
    def spread(key: str, factor: float = 1.0) -> Spread:
        return Spread.of([r[key] * factor for r in results])

    peak = spread("peak_mb")
    p99 = spread("lag_p99")
    efficiency = Spread.of([r["bound"] / r["elapsed"] for r in results])
    failures = sum(r["failures"] for r in results)
    per_job = Spread.of([(r["peak_mb"] - r["baseline_mb"]) * 1024 / r["jobs"] for r in results])
    table = Table(
        f"4. Scale: {accounts:,} accounts x {jobs} jobs in one client process",
        ["figure", "measured", "baseline (same process, idle)", "ratio", "target", "verdict"],
    )
    table.add(
        "peak RSS (MB)",
        peak.fmt(".0f"),
        spread("baseline_mb").fmt(".0f"),
        Spread.of([r["peak_mb"] / r["baseline_mb"] for r in results]).fmt(".1f") + "x",
        f"<= {TARGET_RSS:.0f} MB",
        "met" if peak.median <= TARGET_RSS else "MISSED",
    )
    table.add(
        "memory per queued job (KB, all-in)",
        per_job.fmt(".1f"),
        "",
        "",
        "",
        "",
    )
    table.add(
        "loop lag p50 (ms)",
        spread("lag_p50", 1000).fmt(".1f"),
        spread("idle_p50", 1000).fmt(".2f"),
        "",
        "",
        "",
    )
    table.add(
        "loop lag p99 (ms)",
        spread("lag_p99", 1000).fmt(".1f"),
        spread("idle_p99", 1000).fmt(".2f"),
        "",
        f"<= {TARGET_LAG * 1000:.0f} ms",
        "met" if p99.median <= TARGET_LAG else "MISSED",
    )
    table.add("loop lag max (ms)", spread("lag_max", 1000).fmt(".0f"), "", "", "", "")
    table.add(
        "efficiency (bound / measured)",
        efficiency.fmt(".3f"),
        f"T* {spread('bound').fmt('.1f')} s",
        "",
        "",
        "",
    )
    table.add(
        "429s served / jobs failed",
        f"{served} / {failures}",
        "",
        "",
        "0 / 0",
        "met" if served == 0 and failures == 0 else "MISSED",
    )
    table.notes += [
        f"Median (min-max) of {len(results)} repetitions, each in a fresh client process on "
        f"fresh accounts; time scale {scale:g} (generations of 3.5 s +/-{JITTER:.0%} "
        "processing, poll_interval 1 s); "
        + (
            "all clients share one aiohttp session (--shared-session)."
            if shared
            else "every client has its own aiohttp session (the default)."
        ),
        "Memory per queued job = (peak RSS - idle RSS) / jobs: clients, sessions, connections, "
        "jobs and results together.",
    ]
    return table


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        base_url, jobs, scale, shared = argv[1], int(argv[2]), float(argv[3]), argv[4]
        tokens = sys.stdin.read().split()
        figures = asyncio.run(child(base_url, tokens, jobs, scale, shared == "shared"))
        print(json.dumps(figures), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a second: smoke only")
    parser.add_argument(
        "--shared-session", action="store_true", help="one aiohttp session for all clients"
    )
    args = parser.parse_args(argv)
    for table in asyncio.run(run(args.quick, args.shared_session)):
        print(table.render(), flush=True)


if __name__ == "__main__":
    main()
