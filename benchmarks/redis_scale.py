"""5. RedisGate at scale: 1,000 accounts shared by 4 client processes through one Redis.

One ``redis-server`` (started here, on a free loopback port, without persistence), the
emulator in a process of its own, and 4 client processes, each with its own ``RedisGate``
(``client_name`` ``bench-w<n>``) and 1,000 ``AsyncClient`` objects, one per account, running
``JOBS_PER_ACCOUNT`` jobs per account through one ``BatchRunner``: every account is shared by
the 4 processes. The processes build their clients, then start together. Measured:

- Redis connections per process: the most ``CLIENT LIST`` showed for each ``client_name``
  (sampled every 50 ms), and how many of them are pub/sub connections;
- Redis scripts run (``INFO commandstats``, ``EVALSHA`` calls) per job, and for one list read
  of ended generations (with a hold of this process among them, and without);
- the emulator's records: 429s served, generations created against jobs (a job paid twice
  would show as more generations than jobs), the most generations in progress on an account;
- efficiency against the limits' bound ``T*`` of ``benchmarks.scheduler``, computed per account
  from the durations the service drew for its 4 x ``JOBS_PER_ACCOUNT`` generations;
- each client process's loop lag (p99) and peak RSS.

Targets: 0 429s, 0 double charges, at most 20 Redis connections per process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ._common import (
    ROOT,
    EmulatorProcess,
    LoopLag,
    Spread,
    Table,
    emit_summaries,
    limits_for,
    memory,
    progress,
    summary,
)
from .scheduler import bound

MODEL = "google/nano-banana"
ACCOUNTS = 1000
PROCESSES = 4
JOBS_PER_ACCOUNT = 2  # per process: each account runs PROCESSES x this many
TIME_SCALE = 1.0
JITTER = 0.1
MAX_CONNECTIONS = 20
PAGE = 9  # records in the list read of the release row


# -- Redis -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """``with RedisProcess() as url:`` a redis-server of this benchmark alone."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> str:
        executable = shutil.which("redis-server")
        if executable is None:
            raise FileNotFoundError("redis-server")
        port = _free_port()
        argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--maxclients", "10000"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        self.url = f"redis://127.0.0.1:{port}/0"
                        return self.url
            except OSError:
                time.sleep(0.02)  # a starting server, before the loop runs
        self.__exit__()
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


async def _script_runs(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def _sample_connections(
    client: Any, names: Sequence[str], peak: dict[str, int], pubsub: dict[str, int]
) -> None:
    while True:
        listed = await client.client_list()
        counts = Counter(c.get("name", "") for c in listed)
        subscribed = Counter(c.get("name", "") for c in listed if int(c.get("sub", 0)) > 0)
        for name in names:
            peak[name] = max(peak[name], counts[name])
            pubsub[name] = max(pubsub[name], subscribed[name])
        await asyncio.sleep(0.05)


# -- one client process ----------------------------------------------------------------------
async def child(config: dict[str, Any]) -> dict[str, Any]:
    """One client process: build its clients, say READY, run on "go", report its figures."""
    from asyncsdk import AsyncClient, BatchRunner, Job, RedisGate

    scale = config["scale"]
    limits = limits_for(scale)
    gate = RedisGate.from_url(
        config["redis"], namespace=config["namespace"], client_name=config["name"]
    )
    worker = config["worker"]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(gate.aclose)
        clients = [
            await stack.enter_async_context(
                AsyncClient(
                    token,
                    base_url=config["base_url"],
                    limits=limits,
                    gate=gate,
                    poll_interval=1.0 * scale,
                )
            )
            for token in config["tokens"]
        ]
        jobs = [
            Job(MODEL, f"worker {worker} job {i}", id=f"w{worker}j{i}")
            for i in range(len(clients) * config["jobs"])
        ]
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        generations: list[tuple[str, float, float]] = []
        failures: list[str] = []
        async with LoopLag() as lag:
            started = time.time()
            async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as stream:
                async for result in stream:
                    if result.generation is None:
                        failures.append(f"{type(result.error).__name__}: {result.error}")
                    else:
                        g = result.generation
                        created = g.created_at.timestamp() if g.created_at else 0.0
                        generations.append((result.account or "", created, g.total_time or 0.0))
            ended = time.time()
        calls = dict(gate._runtime().calls)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "calls": calls,
        "cpu": usage.ru_utime + usage.ru_stime,
        "started": started,
        "ended": ended,
        "jobs": len(jobs),
        "generations": generations,
        "failures": failures,
        "lag_p99": lag.p(99),
        "peak_mb": memory()["peak"],
    }


async def _run_child(config: dict[str, Any], ready: asyncio.Event, go: asyncio.Event) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.redis_scale",
        "--child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write((json.dumps(config) + "\n").encode())
    await process.stdin.drain()
    line = await process.stdout.readline()
    if line.strip() != b"READY":
        raise RuntimeError(f"redis_scale child {config['worker']} failed to start")
    ready.set()
    await go.wait()
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    out = await process.stdout.read()
    await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"redis_scale child failed with exit code {process.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


# -- the run ---------------------------------------------------------------------------------
async def _release_row(emu: EmulatorProcess, url: str, token: str, scale: float) -> tuple[int, int]:
    """Scripts run by one list read of ``PAGE`` ended generations: one of them still held by
    this process (nobody watched it), then none held."""
    import redis.asyncio as aioredis

    from asyncsdk import AsyncClient, RedisGate

    gate = RedisGate.from_url(url, namespace="bench-release")
    inspect = aioredis.Redis.from_url(url, decode_responses=True)
    limits = limits_for(scale)
    try:
        async with AsyncClient(
            token, base_url=emu.base_url, limits=limits, gate=gate, poll_interval=scale
        ) as client:
            for i in range(PAGE - 1):
                await client.generate(MODEL, f"release row {i}")  # watched: released at its end
            await client.submit(MODEL, f"release row {PAGE - 1}")  # nobody watches it
            await asyncio.sleep(6.0 * scale)  # it ends (0.5 + 3.5 s +/-10%), still held here
            before = await _script_runs(inspect)
            await client.list_generations(limit=PAGE + 1)
            with_hold = await _script_runs(inspect) - before
            before = await _script_runs(inspect)
            await client.list_generations(limit=PAGE + 1)
            without = await _script_runs(inspect) - before
        return with_hold, without
    finally:
        await gate.aclose()
        await inspect.aclose()


async def run(
    quick: bool,
    accounts: int | None = None,
    processes: int | None = None,
    jobs: int | None = None,
    scale: float | None = None,
) -> list[Table]:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return [_skipped("the redis extra is not installed (pip install 'asyncsdk[redis]')")]
    accounts = accounts or (50 if quick else ACCOUNTS)
    processes = processes or (2 if quick else PROCESSES)
    jobs = jobs or (1 if quick else JOBS_PER_ACCOUNT)
    scale = scale or (0.05 if quick else TIME_SCALE)
    try:
        redis_server = RedisProcess()
        url = redis_server.__enter__()
    except FileNotFoundError:
        return [_skipped("redis-server is not on the PATH")]
    try:
        async with EmulatorProcess(
            accounts=accounts + 1, time_scale=scale, jitter=JITTER, credits=1000
        ) as emu:
            tokens, spare = emu.tokens[:accounts], emu.tokens[accounts]
            inspect = aioredis.Redis.from_url(url, decode_responses=True)
            namespace = "bench" + uuid.uuid4().hex[:8]
            names = [f"bench-w{w}" for w in range(processes)]
            configs = [
                {
                    "worker": w,
                    "name": names[w],
                    "redis": url,
                    "namespace": namespace,
                    "base_url": emu.base_url,
                    "tokens": tokens,
                    "jobs": jobs,
                    "scale": scale,
                }
                for w in range(processes)
            ]
            progress(
                f"redis_scale: {accounts} accounts x {processes} processes x {jobs} jobs, "
                f"time scale {scale:g}"
            )
            readies = [asyncio.Event() for _ in configs]
            go = asyncio.Event()
            peak = dict.fromkeys(names, 0)
            pubsub = dict.fromkeys(names, 0)
            children = [
                asyncio.create_task(_run_child(c, r, go))
                for c, r in zip(configs, readies, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
            sampler = asyncio.create_task(_sample_connections(inspect, names, peak, pubsub))
            scripts_before = await _script_runs(inspect)
            go.set()
            results = await asyncio.gather(*children)
            scripts = await _script_runs(inspect) - scripts_before
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            stats = await emu.stats()
            progress("redis_scale: the release row")
            release = await _release_row(emu, url, spare, scale)
            await inspect.aclose()
    finally:
        redis_server.__exit__()
    return [
        _table(results, stats, peak, pubsub, scripts, release, accounts, processes, jobs, scale)
    ]


def _skipped(why: str) -> Table:
    table = Table("5. RedisGate at scale: not run", ["figure", "measured"])
    table.add("skipped", why)
    return table


def _table(
    results: list[Any],
    stats: Any,
    peak: dict[str, int],
    pubsub: dict[str, int],
    scripts: int,
    release: tuple[int, int],
    accounts: int,
    processes: int,
    jobs: int,
    scale: float,
) -> Table:
    total = sum(r["jobs"] for r in results)
    ok = sum(len(r["generations"]) for r in results)
    failures = [f for r in results for f in r["failures"]]
    elapsed = (max(r["ended"] for r in results) - min(r["started"] for r in results)) / scale
    per_account: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in results:
        for account, created, duration in r["generations"]:
            per_account[account].append((created, duration))
    best = 0.0
    for generations in per_account.values():
        durations = [d for _, d in sorted(generations)]
        best = max(best, bound(durations, 10, 60.0 * scale))
    efficiency = best / scale / elapsed if elapsed else 0.0
    most = max(peak.values(), default=0)
    double = stats.created - ok
    table = Table(
        f"5. RedisGate: {accounts:,} accounts x {processes} processes x {jobs} jobs on one Redis",
        ["figure", "measured", "target", "verdict"],
    )
    table.add(
        "jobs done / failed",
        f"{ok:,} / {len(failures)}",
        f"{total:,} / 0",
        "met" if ok == total else "MISSED",
    )
    table.add(
        "429s served",
        str(stats.served_429s),
        "0",
        "met" if stats.served_429s == 0 else "MISSED",
    )
    table.add(
        "generations created - jobs done (double charges)",
        f"{stats.created:,} - {ok:,} = {double}",
        "0",
        "met" if double == 0 else "MISSED",
    )
    table.add("most generations in progress on an account", str(stats.max_in_progress), "1", "")
    table.add(
        "Redis connections per process (peak)",
        " / ".join(str(peak[name]) for name in peak),
        f"<= {MAX_CONNECTIONS}",
        "met" if 0 < most <= MAX_CONNECTIONS else "MISSED",
    )
    table.add("of them pub/sub", " / ".join(str(pubsub[name]) for name in pubsub), "1", "")
    table.add("Redis scripts per job", f"{scripts / max(total, 1):.1f}", "", "")
    calls: Counter[str] = Counter()
    for r in results:
        calls.update(r["calls"])
    breakdown = ", ".join(
        f"{name} {count / max(total, 1):.2f}" for name, count in calls.most_common()
    )
    table.add(
        f"scripts per list read of {PAGE} ended generations (one held here / none)",
        f"{release[0]} / {release[1]}",
        "<= 1 / 0",
        "met" if release[0] <= 1 and release[1] == 0 else "MISSED",
    )
    table.add(
        "efficiency (bound / measured)",
        f"{efficiency:.3f}",
        f"T* {best / scale:.1f} s, measured {elapsed:.1f} s",
        "",
    )
    table.add(
        "client loop lag p99 (ms)",
        Spread.of([r["lag_p99"] * 1000 for r in results]).fmt(".0f"),
        "",
        "",
    )
    table.add(
        "client CPU per job (ms, all-in)",
        Spread.of([r["cpu"] * 1000 * processes / max(total, 1) for r in results]).fmt(".1f"),
        "",
        "",
    )
    table.add("client peak RSS (MB)", Spread.of([r["peak_mb"] for r in results]).fmt(".0f"), "", "")
    table.notes += [
        f"One run: {processes} client processes (each a RedisGate and {accounts:,} clients "
        f"on the default shared connection pool, one BatchRunner), the emulator in another "
        f"process, one redis-server; time scale {scale:g} (generations of 3.5 s "
        f"+/-{JITTER:.0%}, 10 submissions per 60 s, 1 at a time, all compressed); times in "
        "real (uncompressed) seconds. Spreads are over the processes.",
        "Connections: the peak of CLIENT LIST per client_name, sampled every 50 ms; scripts: "
        "INFO commandstats (EVALSHA calls) over the run, and around each list read.",
        f"Scripts per job by kind (as the processes counted them): {breakdown}.",
    ]
    if failures:
        table.notes.append(f"First failures: {failures[:3]}")
    summary(
        f"{accounts:,} accounts x {processes} processes on one Redis: "
        "429s / double charges / Redis connections per process",
        f"{stats.served_429s} / {double} / {most}",
        "before: account 99 failed (a pub/sub connection per account; default pool of 100)",
        f"0 / 0 / <= {MAX_CONNECTIONS}",
        stats.served_429s == 0 and double == 0 and ok == total and 0 < most <= MAX_CONNECTIONS,
    )
    summary(
        f"RedisGate: scripts per list read of {PAGE} ended generations (held here / none)",
        f"{release[0]} / {release[1]}",
        f"before: one per ended record ({PAGE})",
        "<= 1 / 0",
        release[0] <= 1 and release[1] == 0,
    )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        config = json.loads(sys.stdin.readline())
        print(json.dumps(asyncio.run(child(config))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 accounts")
    parser.add_argument("--accounts", type=int, help=f"default {ACCOUNTS}")
    parser.add_argument("--processes", type=int, help=f"default {PROCESSES}")
    parser.add_argument(
        "--jobs", type=int, help=f"per account and process, default {JOBS_PER_ACCOUNT}"
    )
    parser.add_argument("--time-scale", type=float, help=f"default {TIME_SCALE}")
    args = parser.parse_args(argv)
    tables = run(args.quick, args.accounts, args.processes, args.jobs, args.time_scale)
    for table in asyncio.run(tables):
        print(table.render(), flush=True)
    emit_summaries()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
