"""Start N worker processes that share accounts through Redis, against the embedded emulator.

    python -m examples.workers [--workers 4] [--accounts 2] [--jobs 40] [--redis URL]
    python examples/workers/run.py ...          (the same, with asyncsdk installed)

Redis: ``--redis`` or ``REDIS_URL``; without either, a throwaway ``redis-server`` is started on
a free loopback port (and stopped at the end). The emulator runs in this process with time
compressed (a 2 s window of 10 submissions, generations of about 0.15 s); every worker is a
separate process with its own clients, which only Redis keeps within the accounts' limits.
The summary shows what the emulator saw: no 429s, never more than one generation at a time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import anyio

from asyncsdk.emulator import Emulator

try:
    from .worker import work
except ImportError:  # run as a script: python examples/workers/run.py
    from worker import work  # type: ignore[no-redef, import-not-found]

LIMITS: dict[str, Any] = {
    "submissions": 10,
    "window": 2.0,
    "concurrent": 1,
    "generation_timeout": 5.0,
}
SERVICE: dict[str, Any] = {**LIMITS, "starting_time": 0.05, "processing_time": 0.1}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--accounts", type=int, default=2, help="emulated accounts (2)")
    parser.add_argument("--jobs", type=int, default=40, help="jobs in all (40)")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL"), help="Redis URL")
    args = parser.parse_args(argv)
    with redis_url(args.redis) as url:
        anyio.run(run, url, args.workers, args.accounts, args.jobs)


@contextmanager
def redis_url(given: str | None) -> Iterator[str]:
    """The given URL, or a throwaway redis-server's."""
    if given:
        yield given
        return
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit(
            "no Redis: pass --redis redis://host:port/0, set REDIS_URL, or install redis-server"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        [*argv, "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(500):  # until it answers (at most 5 s)
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(5)


async def run(url: str, workers: int, accounts: int, jobs: int) -> None:
    async with Emulator(accounts=accounts, **SERVICE) as emu:
        prompts = [f"a paper boat on a pond, picture {i}" for i in range(jobs)]
        print(f"{workers} workers, {accounts} accounts, {jobs} jobs, sharing through {url}")
        started = time.monotonic()
        summaries = await anyio.to_thread.run_sync(
            spawn,
            [
                {
                    "redis_url": url,
                    "base_url": emu.base_url,
                    "tokens": emu.tokens,
                    "limits": LIMITS,
                    "poll_interval": 0.05,  # time is compressed: poll at its pace
                    "prompts": prompts[i::workers],
                }
                for i in range(workers)
            ],
        )
        elapsed = time.monotonic() - started
        report(emu, summaries, elapsed)


def spawn(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one process per config (fresh interpreters: nothing shared but Redis)."""
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for config in configs:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(config, sender))
        process.start()
        sender.close()
        pipes.append(receiver)
        processes.append(process)
    summaries = []
    for receiver, process in zip(pipes, processes, strict=True):
        try:
            summaries.append(receiver.recv())
        except EOFError:
            summaries.append({"ok": 0, "failed": 0, "errors": ["the worker died"]})
        process.join()
    return summaries


def _child(config: dict[str, Any], sender: Connection) -> None:
    try:
        sender.send(work(config))
    except Exception as exc:  # report it rather than a bare traceback in the middle of output
        sender.send({"ok": 0, "failed": len(config["prompts"]), "errors": [repr(exc)]})


def report(emu: Emulator, summaries: list[dict[str, Any]], elapsed: float) -> None:
    print(f"\n{'worker':>6}  {'jobs':>4}  {'ok':>4}  {'failed':>6}")
    for i, s in enumerate(summaries, 1):
        print(f"{i:>6}  {s['ok'] + s['failed']:>4}  {s['ok']:>4}  {s['failed']:>6}")
    ok = sum(s["ok"] for s in summaries)
    failed = sum(s["failed"] for s in summaries)
    throttled = sum(sum(emu.stats.throttled[t].values()) for t in emu.tokens)
    most = [emu.stats.max_in_progress[t] for t in emu.tokens]
    print(f"\njobs: {ok + failed}   ok: {ok}   failed: {failed}")
    print(f"429s served by the emulator: {throttled}")
    print(f"max generations in progress, per account: {most} (limit {LIMITS['concurrent']})")
    print(f"elapsed: {elapsed:.1f}s")
    for s in summaries:
        for error in s["errors"][:3]:
            print("  error:", error)


if __name__ == "__main__":
    main()
