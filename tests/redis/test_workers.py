"""Worker processes sharing accounts through Redis, against the embedded emulator.

Each worker is a separate Python process (``worker.py``) with its own ``AsyncClient`` and
``RedisGate``; the emulator runs in the test process and counts what they did. Time is
compressed: a 1 s window of 10 submissions, generations of about 0.07 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from asyncsdk import Limits, RedisGate
from asyncsdk._client import account_key
from asyncsdk.emulator import Emulator

from .conftest import ROOT, RedisServer

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("worker.py")
LIMITS: dict[str, Any] = {
    "submissions": 10,
    "window": 1.0,
    "concurrent": 1,
    "generation_timeout": 3.0,
}
SERVICE: dict[str, Any] = {**LIMITS, "starting_time": 0.02, "processing_time": 0.05}
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def config(emu: Emulator, redis_url: str, namespace: str, **overrides: Any) -> dict[str, Any]:
    return {
        "redis": redis_url,
        "namespace": namespace,
        "base_url": emu.base_url,
        "tokens": emu.tokens,
        "limits": LIMITS,
        "poll_interval": 0.02,
        "parallel": 2,
        "mode": "generate",
        **overrides,
    }


def shares(prompts: list[str], workers: int) -> list[list[str]]:
    return [prompts[i::workers] for i in range(workers)]


async def run_workers(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the workers concurrently (the emulator keeps serving); their JSON summaries."""
    summaries: list[dict[str, Any]] = [{} for _ in configs]

    async def one(index: int) -> None:
        done = await anyio.run_process(
            [sys.executable, str(WORKER), json.dumps(configs[index])], check=False, env=ENV
        )
        assert done.returncode == 0, done.stderr.decode()
        summaries[index] = json.loads(done.stdout.decode().strip().splitlines()[-1])

    async with anyio.create_task_group() as tg:
        for index in range(len(configs)):
            tg.start_soon(one, index)
    return summaries


def assert_served_cleanly(emu: Emulator, token: str) -> None:
    """No 429 served, at most one generation in progress, no window over the limit."""
    assert sum(emu.stats.throttled[token].values()) == 0, emu.stats.throttled[token]
    assert emu.stats.max_in_progress[token] <= 1
    arrivals = sorted(emu.stats.arrivals[token])
    for k, arrived in enumerate(arrivals):
        in_window = [a for a in arrivals[: k + 1] if a > arrived - LIMITS["window"]]
        assert len(in_window) <= LIMITS["submissions"]


async def test_four_processes_share_one_account(redis_server: RedisServer, namespace: str) -> None:
    async with Emulator(accounts=1, **SERVICE) as emu:
        prompts = [f"a red kite, picture {i}" for i in range(30)]
        configs = [
            config(emu, redis_server.url, namespace, prompts=share) for share in shares(prompts, 4)
        ]
        with anyio.fail_after(60):
            summaries = await run_workers(configs)
        token = emu.tokens[0]
        assert [s["errors"] for s in summaries] == [[]] * 4
        assert sum(s["ok"] for s in summaries) == 30
        assert emu.stats.created[token] == 30
        assert_served_cleanly(emu, token)
        assert len(emu.stats.arrivals[token]) == 30  # not one submission refused


async def test_four_processes_run_batches_over_three_accounts(
    redis_server: RedisServer, namespace: str
) -> None:
    async with Emulator(accounts=3, **SERVICE) as emu:
        prompts = [f"a blue heron, picture {i}" for i in range(30)]
        configs = [
            config(emu, redis_server.url, namespace, mode="batch", prompts=share)
            for share in shares(prompts, 4)
        ]
        with anyio.fail_after(60):
            summaries = await run_workers(configs)
        assert [s["errors"] for s in summaries] == [[]] * 4
        assert sum(s["ok"] for s in summaries) == 30
        assert sum(emu.stats.created[token] for token in emu.tokens) == 30
        for token in emu.tokens:
            assert_served_cleanly(emu, token)


async def test_a_worker_killed_holding_the_slot_blocks_only_until_its_lease_expires(
    redis_server: RedisServer, namespace: str
) -> None:
    async with Emulator(accounts=1, **SERVICE) as emu:
        token = emu.tokens[0]
        base = config(emu, redis_server.url, namespace, lease_ttl=0.5, parallel=1)
        observer_gate = RedisGate.from_url(redis_server.url, namespace=namespace)
        observer = observer_gate.account(account_key(token, emu.base_url), Limits(**LIMITS))
        with anyio.fail_after(30):
            async with await anyio.open_process(
                [sys.executable, str(WORKER), json.dumps({**base, "mode": "hold"})], env=ENV
            ) as holder:
                await read_until(holder, b"HOLDING")
                async with anyio.create_task_group() as tg:
                    summaries: list[dict[str, Any]] = []

                    async def others() -> None:
                        prompts = [f"a green frog, picture {i}" for i in range(6)]
                        configs = [{**base, "prompts": share} for share in shares(prompts, 2)]
                        summaries.extend(await run_workers(configs))

                    tg.start_soon(others)
                    for _ in range(2000):  # both other workers are queued behind the holder
                        if (await observer.fetch_statistics()).waiting >= 2:
                            break
                        await anyio.sleep(0.005)
                    assert emu.stats.created[token] == 0  # nobody got past the held slot
                    holder.send_signal(signal.SIGKILL)
                    await holder.wait()
        await observer_gate.aclose()
        assert holder.returncode == -signal.SIGKILL
        assert sum(s["ok"] for s in summaries) == 6
        assert [s["errors"] for s in summaries] == [[], []]
        assert_served_cleanly(emu, token)


async def read_until(process: Process, marker: bytes) -> None:
    assert process.stdout is not None
    seen = b""
    async for chunk in process.stdout:
        seen += chunk
        if marker in seen:
            return
    raise AssertionError(f"the worker ended before printing {marker!r}")


async def test_redis_stopped_mid_run_stops_the_workers_with_a_clear_error(
    private_redis: RedisServer, namespace: str
) -> None:
    async with Emulator(accounts=1, **SERVICE) as emu:
        token = emu.tokens[0]
        prompts = [f"a grey owl, picture {i}" for i in range(40)]
        configs = [
            config(emu, private_redis.url, namespace, prompts=share, parallel=1)
            for share in shares(prompts, 2)
        ]
        summaries: list[dict[str, Any]] = []

        async def workers() -> None:
            summaries.extend(await run_workers(configs))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(workers)
                for _ in range(2000):
                    if emu.stats.created[token] >= 3:
                        break
                    await anyio.sleep(0.005)
                private_redis.stop()
        assert sum(s["ok"] for s in summaries) < 40
        for summary in summaries:
            assert summary["errors"], summary
            last = summary["errors"][-1]
            assert last.startswith("RedisGateError: ")
            assert f"redis://127.0.0.1:{private_redis.port}/0" in last
        assert_served_cleanly(emu, token)
