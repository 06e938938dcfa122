"""A thousand accounts, four worker processes, one redis-server, the emulator counting.

Each worker (``worker.py``, a real process) runs a job on every one of the 1,000 accounts, so
every account is shared by four processes through Redis. The emulator, in this process,
records what was created and served; Redis itself reports the connections of each worker,
named by its gate's ``client_name`` (sampled every 50 ms while they run): 0 429s, every job
paid exactly once, and at most 20 connections per process (one pub/sub connection for its
1,000 account channels, at most 16 for scripts).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from asyncsdk.emulator import Emulator

from .conftest import RedisServer
from .test_workers import SERVICE, config, run_workers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ACCOUNTS = 1000
PROCESSES = 4
JOBS = 1  # per account and process
MAX_CONNECTIONS = 20


async def sample_connections(
    url: str, names: list[str], peak: dict[str, int], subscribers: dict[str, int]
) -> None:
    """Record the most connections (and pub/sub connections) Redis had open per name."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        while True:
            listed = await client.client_list()
            counts = Counter(c.get("name", "") for c in listed)
            subs = Counter(c.get("name", "") for c in listed if int(c.get("sub", 0)) > 0)
            for name in names:
                peak[name] = max(peak[name], counts[name])
                subscribers[name] = max(subscribers[name], subs[name])
            await anyio.sleep(0.05)
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


async def test_a_thousand_accounts_four_processes_one_redis(
    redis_server: RedisServer, namespace: str
) -> None:
    async with Emulator(accounts=ACCOUNTS, credits=100, **SERVICE) as emu:
        names = [f"{namespace}-w{w}" for w in range(PROCESSES)]
        configs: list[dict[str, Any]] = [
            config(
                emu,
                redis_server.url,
                namespace,
                # prompt k goes to account k % 1000: each account gets JOBS from each worker
                prompts=[f"worker {w} job {k}" for k in range(ACCOUNTS * JOBS)],
                parallel=1,
                client_name=names[w],
                shared_session=True,
                poll_interval=0.05,
            )
            for w in range(PROCESSES)
        ]
        peak = dict.fromkeys(names, 0)
        subscribers = dict.fromkeys(names, 0)
        summaries: list[dict[str, Any]] = []
        with anyio.fail_after(240):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample_connections, redis_server.url, names, peak, subscribers)
                summaries = await run_workers(configs)
                tg.cancel_scope.cancel()

        print(f"peak connections per process: {peak}; pub/sub: {subscribers}")
        assert [s["errors"] for s in summaries] == [[]] * PROCESSES
        assert [s["ok"] for s in summaries] == [ACCOUNTS * JOBS] * PROCESSES
        records = [g for token in emu.tokens for g in emu.generations(token)]
        per_prompt = Counter(g["prompt"] for g in records)
        expected = {p for c in configs for p in c["prompts"]}
        assert set(per_prompt) == expected and max(per_prompt.values()) == 1  # paid once each
        assert sum(sum(emu.stats.throttled[t].values()) for t in emu.tokens) == 0  # 0 429s
        assert max(emu.stats.max_in_progress[t] for t in emu.tokens) == 1
        assert all(len(emu.stats.arrivals[t]) == PROCESSES * JOBS for t in emu.tokens)
        assert all(2 <= peak[name] <= MAX_CONNECTIONS for name in names), peak
        assert all(subscribers[name] == 1 for name in names), subscribers
