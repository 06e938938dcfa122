"""One worker process of the multi-process Redis gate tests.

    python tests/redis/worker.py '<json config>'

Config keys: ``redis`` (URL), ``namespace``, ``base_url``, ``tokens`` (the accounts),
``prompts`` (this worker's share of the jobs), ``limits`` (``Limits`` keyword arguments),
``lease_ttl``, ``poll_interval``, ``parallel`` (tasks per account in ``generate`` mode),
``client_name`` (names the gate's Redis connections), ``shared_session`` (one aiohttp session
for every client, as an application with many accounts would) and ``mode``:

- ``generate``: ``client.generate()`` for each job, jobs spread over the accounts;
- ``batch``: one ``BatchRunner`` over one client per account;
- ``hold``: take the first account's slot, print ``HOLDING``, and sleep until killed.

Prints one JSON line: ``{"ok": n, "failed": n, "errors": ["Type: message", ...]}``. A
``RedisGateError`` stops the worker (the gate is the only thing it could report).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import aiohttp
import anyio

from asyncsdk import AsyncClient, AsyncSDKError, Limits, RedisGate, RedisGateError

MODEL = "google/nano-banana"


async def main(config: dict[str, Any]) -> dict[str, Any]:
    limits = Limits(**config["limits"])
    summary: dict[str, Any] = {"ok": 0, "failed": 0, "errors": []}
    async with contextlib.AsyncExitStack() as stack:
        options = {"client_name": config["client_name"]} if "client_name" in config else {}
        gate = RedisGate.from_url(
            config["redis"],
            namespace=config["namespace"],
            lease_ttl=config.get("lease_ttl"),
            **options,
        )
        stack.push_async_callback(gate.aclose)
        session = None
        if config.get("shared_session"):
            connector = aiohttp.TCPConnector(limit=100)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        clients = [
            await stack.enter_async_context(
                AsyncClient(
                    token,
                    base_url=config["base_url"],
                    limits=limits,
                    gate=gate,
                    poll_interval=config.get("poll_interval", 0.02),
                    session=session,
                )
            )
            for token in config["tokens"]
        ]
        mode = config["mode"]
        if mode == "hold":
            await clients[0].gate.acquire()
            print("HOLDING", flush=True)
            await anyio.sleep_forever()
        elif mode == "batch":
            await run_batch(clients, config["prompts"], summary)
        else:
            await run_generate(clients, config["prompts"], config.get("parallel", 2), summary)
    return summary


async def run_generate(
    clients: list[AsyncClient], prompts: list[str], parallel: int, summary: dict[str, Any]
) -> None:
    queues = [prompts[i :: len(clients)] for i in range(len(clients))]

    async def task(client: AsyncClient, queue: list[str], scope: anyio.CancelScope) -> None:
        while queue:
            prompt = queue.pop(0)
            try:
                await client.generate(MODEL, prompt)
            except AsyncSDKError as exc:
                summary["failed"] += 1
                summary["errors"].append(f"{type(exc).__name__}: {exc}")
                if isinstance(exc, RedisGateError):
                    scope.cancel()
                    return
            else:
                summary["ok"] += 1

    async with anyio.create_task_group() as tg:
        for client, queue in zip(clients, queues, strict=True):
            for _ in range(parallel):
                tg.start_soon(task, client, queue, tg.cancel_scope)


async def run_batch(
    clients: list[AsyncClient], prompts: list[str], summary: dict[str, Any]
) -> None:
    from asyncsdk import BatchRunner, Job

    runner = BatchRunner(clients)
    jobs = [Job(MODEL, prompt) for prompt in prompts]
    async with contextlib.aclosing(runner.run(jobs)) as results:
        async for result in results:
            if result.ok:
                summary["ok"] += 1
            else:
                summary["failed"] += 1
                summary["errors"].append(f"{type(result.error).__name__}: {result.error}")


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, json.loads(sys.argv[1]))), flush=True)
