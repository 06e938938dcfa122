"""One worker process: a ``BatchRunner`` over every account, gated through Redis.

This is all a process needs to share accounts with others: the same ``RedisGate`` URL and the
same ``Limits`` everywhere. Each worker here gets its own share of the jobs; in production they
would come from a queue.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio

from asyncsdk import AsyncClient, BatchRunner, Job, Limits, RedisGate

MODEL = "google/nano-banana"


def work(config: dict[str, Any]) -> dict[str, Any]:
    """Run this worker's jobs; a summary ``{"ok", "failed", "errors"}``."""
    return anyio.run(_work, config)


async def _work(config: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"ok": 0, "failed": 0, "errors": []}
    limits = Limits(**config["limits"])
    async with (
        RedisGate.from_url(config["redis_url"]) as gate,
        contextlib.AsyncExitStack() as stack,
    ):
        clients = [
            await stack.enter_async_context(
                AsyncClient(
                    token,
                    base_url=config["base_url"],
                    limits=limits,
                    gate=gate,
                    poll_interval=config["poll_interval"],
                )
            )
            for token in config["tokens"]
        ]
        jobs = [Job(MODEL, prompt) for prompt in config["prompts"]]
        async with contextlib.aclosing(BatchRunner(clients).run(jobs)) as results:
            async for result in results:
                if result.ok:
                    summary["ok"] += 1
                else:
                    summary["failed"] += 1
                    summary["errors"].append(f"{type(result.error).__name__}: {result.error}")
    return summary
