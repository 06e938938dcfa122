"""A batch run in its own process, for the kill -9 tests (see test_batch.py).

Usage: python -m tests.integration.batch_child BASE_URL JOURNAL JOBS [--die-at-submitted N]
with the tokens, one per line, on standard input. Prints one JSON line per result.
``--die-at-submitted N`` makes the process SIGKILL itself while recording its N-th
submission: after the service accepted it, before the journal has its generation id.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import anyio

import asyncsdk
from asyncsdk._journal import Journal


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("journal")
    parser.add_argument("jobs", type=int)
    parser.add_argument("--die-at-submitted", type=int, default=0)
    parser.add_argument("--window", type=float, default=1.0)
    args = parser.parse_args()
    tokens = sys.stdin.read().split()

    if args.die_at_submitted:
        calls = 0
        original = Journal.submitted

        async def submitted(self: Journal, job_id: str, generation_id: str) -> None:
            nonlocal calls
            calls += 1
            if calls == args.die_at_submitted:
                os.kill(os.getpid(), signal.SIGKILL)
            await original(self, job_id, generation_id)

        Journal.submitted = submitted  # type: ignore[method-assign]

    limits = asyncsdk.Limits(submissions=10, window=args.window, generation_timeout=3.0)
    clients = [
        asyncsdk.AsyncClient(t, base_url=args.base_url, limits=limits, poll_interval=0.02)
        for t in tokens
    ]
    jobs = [asyncsdk.Job("google/nano-banana", f"kite number {i}") for i in range(args.jobs)]
    runner = asyncsdk.BatchRunner(clients, journal=args.journal)
    try:
        async for result in runner.run(jobs):
            line = {"job": result.job.id, "ok": result.ok, "journal": result.from_journal}
            print(json.dumps(line), flush=True)
    finally:
        for client in clients:
            await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
