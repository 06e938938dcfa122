"""RedisGate with many accounts: connections, idle gates, release batching, equal limits, lanes.

- One pub/sub connection per event loop, whatever the number of accounts, and at most
  ``MAX_COMMANDS`` connections for scripts: counted by Redis itself (``CLIENT LIST``, grouped by
  the gate's ``client_name``); redis-py's default pool (100) used to fail at account 99.
- A pool that is too small says so, not "Redis is down".
- Idle account gates leave the registry and their channel; a client still holding one keeps the
  very same object (never two gates of one account on a loop).
- Ended generations are released in one script per read, or none when nothing is held for
  them: counted by Redis (``INFO commandstats``) on a Redis of the test's own.
- ``Limits(window=60)`` and ``Limits(window=60.0)`` are the same limits in every process.
- Priority lanes across two processes (two RedisGate instances): interactive first, FIFO in a
  lane, a batch admission after ``BATCH_EVERY`` interactive ones.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from asyncsdk import AsyncClient, Limits, Priority
from asyncsdk._client import account_key
from asyncsdk._limits import BATCH_EVERY
from asyncsdk._redis import MAX_COMMANDS, RedisAccountGate, RedisGate, RedisGateError
from asyncsdk.emulator import Emulator

from .conftest import RedisServer, plain_client

pytestmark = pytest.mark.anyio

MakeGate = Callable[..., RedisGate]
LIMITS = Limits(submissions=50, window=1.0, concurrent=1, generation_timeout=5.0)


@pytest.fixture
async def private(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the test's own Redis (its command counts are the test's alone)."""
    async with plain_client(private_redis.url) as client:
        yield client


async def connections(inspect: aioredis.Redis, name: str) -> list[dict[str, str]]:
    """The connections Redis has open for clients named ``name``."""
    return [c for c in await inspect.client_list() if c.get("name") == name]


async def script_runs(inspect: aioredis.Redis) -> int:
    """Scripts Redis has run (``EVALSHA`` calls), as it counts them."""
    stats = await inspect.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def warm_up(account: RedisAccountGate) -> None:
    """Run the release script once, so that Redis knows it (its first EVALSHA fails)."""
    await account._run("release", "warm-up")


async def until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    pause = 0.005
    for _ in range(int(timeout / pause)):
        if await predicate():
            return
        await anyio.sleep(pause)
    raise AssertionError(f"not true within {timeout}s")


# -- connections -----------------------------------------------------------------------------
async def test_many_accounts_share_one_pubsub_connection(
    gates: MakeGate, inspect: aioredis.Redis, namespace: str
) -> None:
    # 150 accounts, each with a task queued behind a held slot: every account is subscribed.
    gate = gates(client_name=f"{namespace}-p")
    accounts = [gate.account(f"acct-{i}", LIMITS) for i in range(150)]
    admitted = 0

    async def second(account: RedisAccountGate) -> None:
        nonlocal admitted
        permit = await account.acquire()  # waits for the slot: subscribed meanwhile
        admitted += 1
        await permit.answered(None, None)

    async def busy(account: RedisAccountGate) -> None:
        first = await account.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(second, account)
            await until(lambda: _queued(account))
            await first.answered(None, None)  # the slot frees: the waiter is woken

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for account in accounts:
                tg.start_soon(busy, account)
    assert admitted == 150
    mine = await connections(inspect, f"{namespace}-p")
    subscribers = [c for c in mine if int(c["sub"]) > 0]
    assert len(subscribers) == 1 and int(subscribers[0]["sub"]) == 150
    assert len(mine) <= MAX_COMMANDS + 1


async def _queued(account: RedisAccountGate) -> bool:
    return account._queued > 0  # its ticket is in Redis


async def test_a_too_small_pool_is_not_called_redis_down(
    redis_server: RedisServer, namespace: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, max_connections=1)
    try:
        gate = RedisGate(client, namespace=namespace)
        with anyio.fail_after(5), pytest.raises(RedisGateError) as info:
            await gate.account("acct", LIMITS).acquire()  # pub/sub took the one connection
        await gate.aclose()
    finally:
        await client.aclose()
    message = str(info.value)
    assert "MaxConnectionsError" in message
    assert "connection pool is exhausted" in message and "max_connections" in message
    assert "check that Redis is up" not in message


# -- idle gates ------------------------------------------------------------------------------
async def test_idle_gates_are_evicted_and_unsubscribed(
    gates: MakeGate, inspect: aioredis.Redis
) -> None:
    gate = gates(lease_ttl=0.3)  # an idle renewer ends (and lets go of its gate) within 0.1 s
    runtime = gate._runtime()
    busy = gate.account("busy", LIMITS)
    held = await busy.acquire()  # a lease this process holds: never evicted
    for i in range(20):
        permit = await gate.account(f"idle-{i}", LIMITS).acquire()
        await permit.answered(None, None)
    kept = gate.account("idle-0", LIMITS)  # a client holding its gate
    assert len(runtime.accounts) == 21
    assert len(await inspect.pubsub_channels("*")) >= 21

    evicted = await runtime.evict_idle(0.0)
    assert evicted == 20 and list(runtime.accounts) == ["busy"]

    async def unsubscribed() -> bool:
        channels = set(await inspect.pubsub_channels("*"))
        return busy.channel in channels and kept.channel not in channels

    await until(unsubscribed)
    # The same object comes back while it is held, and works (subscribed again).
    assert gate.account("idle-0", LIMITS) is kept
    with anyio.fail_after(3):
        permit = await kept.acquire()
    assert runtime.accounts["idle-0"] is kept and kept.channel in runtime._channels
    await permit.answered(None, None)
    # Nobody holds the other evicted gates: they are gone, and a new one is made on demand.

    async def forgotten() -> bool:
        gc.collect()
        return "idle-5" not in runtime._resting

    await until(forgotten)
    assert gate.account("idle-5", LIMITS) is not None
    await held.answered(None, None)


async def test_an_evicted_gate_in_use_registers_again_without_a_twin(gates: MakeGate) -> None:
    gate = gates()
    runtime = gate._runtime()
    account = gate.account("acct", LIMITS)
    permit = await account.acquire()
    await permit.answered(None, None)
    assert await runtime.evict_idle(0.0) == 1
    # A client keeps using its gate (a watch, then a submission) while another asks for it.
    with account.watching("gen-w"):
        assert runtime.accounts["acct"] is account
        assert gate.account("acct", LIMITS) is account
        assert await runtime.evict_idle(0.0) == 0  # watched: not idle
    assert gate.account("acct", LIMITS) is account


# -- release batching ------------------------------------------------------------------------
async def test_a_page_of_ended_generations_costs_one_script_or_none(
    private_redis: RedisServer, private: aioredis.Redis, namespace: str
) -> None:
    limits = Limits(submissions=20, window=1.0, concurrent=3, generation_timeout=5.0)
    a = RedisGate.from_url(private_redis.url, namespace=namespace, lease_ttl=30.0)
    b = RedisGate.from_url(private_redis.url, namespace=namespace, lease_ttl=30.0)
    try:
        account, other = a.account("acct", limits), b.account("acct", limits)
        await warm_up(account)
        for i in range(2):
            permit = await account.acquire()
            await permit.answered(f"gen-{i}", None)
        await other.hold_foreign("gen-f")  # a generation another process found running
        await account.fetch_statistics()  # this process's last snapshot shows it
        page = [f"old-{i}" for i in range(8)]  # a list page of long-ended generations

        before = await script_runs(private)
        await account.release_many(page)
        assert await script_runs(private) - before == 0  # nothing held for them: no script

        before = await script_runs(private)
        await account.release_many(["gen-0", "gen-1", "gen-f", *page])
        assert await script_runs(private) - before == 1  # one script frees all three
        assert account.statistics().in_progress == 0
        assert account._held == {}
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_hold_taken_elsewhere_since_the_snapshot_is_verified_once_it_is_old(
    private_redis: RedisServer, private: aioredis.Redis, namespace: str
) -> None:
    limits = Limits(submissions=20, window=1.0, concurrent=3, generation_timeout=5.0)
    a = RedisGate.from_url(private_redis.url, namespace=namespace, probe_interval=0.2)
    b = RedisGate.from_url(private_redis.url, namespace=namespace)
    try:
        account, other = a.account("acct", limits), b.account("acct", limits)
        await warm_up(account)
        await account.fetch_statistics()
        await other.hold_foreign("gen-g")  # after this process's snapshot
        before = await script_runs(private)
        await account.release_many(["gen-g"])
        assert await script_runs(private) - before == 0  # the fresh snapshot says: not held
        assert (await other.fetch_statistics()).holders == ("gen-g",)  # the probe's to free
        await anyio.sleep(0.25)  # the snapshot is now older than a probe interval
        before = await script_runs(private)
        await account.release_many(["gen-g"])
        assert await script_runs(private) - before == 1
        assert (await other.fetch_statistics()).in_progress == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_list_page_releases_its_ended_generations_in_one_script(
    private_redis: RedisServer, private: aioredis.Redis, namespace: str
) -> None:
    service = {"concurrent": 3, "starting_time": 0.02, "processing_time": 0.05}
    limits = Limits(submissions=10, window=1.0, concurrent=3, generation_timeout=3.0)
    gate = RedisGate.from_url(private_redis.url, namespace=namespace, lease_ttl=30.0)
    async with Emulator(accounts=1, **service) as emu:
        client = AsyncClient(emu.tokens[0], base_url=emu.base_url, limits=limits, gate=gate)
        try:
            async with client:
                account = client.gate
                assert isinstance(account, RedisAccountGate)
                await warm_up(account)
                ids = []
                for i in range(3):
                    submission = await client.submit("google/nano-banana", f"kite {i}")
                    ids.append(submission.generation_id)
                await anyio.sleep(0.3)  # they end; nobody watched them: still held
                assert (await account.fetch_statistics()).in_progress == 3
                before = await script_runs(private)
                page = await client.list_generations(limit=20)
                after = await script_runs(private)
                assert {g.generation_id for g in page.generations} == set(ids)
                assert all(g.status.is_terminal for g in page.generations)
                assert after - before == 1
                assert client.gate.statistics().in_progress == 0
                before = await script_runs(private)
                await client.list_generations(limit=20)  # nothing held any more
                assert await script_runs(private) - before == 0
        finally:
            await gate.aclose()


async def test_redis_failing_during_a_release_does_not_fail_the_read(
    private_redis: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = {"starting_time": 0.02, "processing_time": 0.05}
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=3.0)
    gate = RedisGate.from_url(private_redis.url, namespace=namespace, lease_ttl=30.0)
    async with Emulator(accounts=1, **service) as emu:
        try:
            async with AsyncClient(
                emu.tokens[0], base_url=emu.base_url, limits=limits, gate=gate
            ) as client:
                submission = await client.submit("google/nano-banana", "a kite")
                await anyio.sleep(0.2)
                private_redis.stop()
                with caplog.at_level(logging.WARNING, logger="asyncsdk"), anyio.fail_after(15):
                    generation = await client.get_generation(submission.generation_id)
                assert generation.status.is_terminal
                assert "could not free the slots" in caplog.text
        finally:
            await gate.aclose()


# -- equal limits ----------------------------------------------------------------------------
async def test_equal_limits_are_equal_across_processes(gates: MakeGate) -> None:
    ints = Limits(submissions=10, window=60, concurrent=1, generation_timeout=50)
    floats = Limits(submissions=10, window=60.0, concurrent=1, generation_timeout=50.0)
    first = await gates().account("acct", ints).acquire()
    with anyio.fail_after(3):
        await first.answered(None, None)
        second = await gates().account("acct", floats).acquire()  # not "different limits"
        await second.answered(None, None)
    sums = Limits(window=0.1 + 0.2, generation_timeout=5.0)  # 0.30000000000000004
    third = await gates().account("sum", Limits(window=0.3, generation_timeout=5.0)).acquire()
    await third.answered(None, None)
    with anyio.fail_after(3):
        await gates().account("sum", sums).acquire()


# -- priority lanes --------------------------------------------------------------------------
async def test_interactive_waiters_of_another_process_go_first_and_batch_is_not_starved(
    gates: MakeGate,
) -> None:
    limits = Limits(submissions=100, window=1.0, concurrent=1, generation_timeout=5.0)
    batch_process = gates().account("acct", limits)
    interactive_process = gates().account("acct", limits)
    observer = gates().account("acct", limits)
    order: list[str] = []
    left = Counter({"B": 3, "I": 6})

    async def queued(n: int) -> bool:
        return (await observer.fetch_statistics()).waiting >= n

    async def job(account: RedisAccountGate, lane: Priority, name: str) -> None:
        permit = await account.acquire(priority=lane)
        order.append(name)
        left[name] -= 1
        # Hold the slot until every lane with work left has its ticket in Redis (one per
        # lane and process), so that the order does not depend on scheduling.
        await until(lambda: queued(sum(1 for n in left.values() if n > 0)))
        await permit.answered(None, None)

    holder = await batch_process.acquire(priority=Priority.BATCH)  # a batch job runs
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(job, batch_process, Priority.BATCH, "B")
            await until(lambda: queued(1))  # batch waiters queued first
            for _ in range(6):
                tg.start_soon(job, interactive_process, Priority.INTERACTIVE, "I")
            await until(lambda: queued(2))
            await holder.answered(None, None)
    assert BATCH_EVERY == 4
    assert "".join(order) == "IIIIBIIBB"


@pytest.mark.parametrize("lane", list(Priority))
async def test_a_dead_waiter_of_either_lane_leaves_by_heartbeat(
    gates: MakeGate, lane: Priority
) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    holder = gates(lease_ttl=0.3).account("acct", limits)
    ghost = gates(lease_ttl=0.3).account("acct", limits)
    waiter = gates(lease_ttl=0.3).account("acct", limits)
    permit = await holder.acquire()
    reply = await ghost._run(
        "acquire", "ghost", "", 300, ghost._fingerprint, "", "", Priority.INTERACTIVE.value
    )
    assert reply.status == "slot"  # an interactive ghost: ahead of anyone
    await permit.answered(None, None)
    started = time.monotonic()
    with anyio.fail_after(3):
        await waiter.acquire(priority=lane)
    assert time.monotonic() - started >= 0.15


async def test_interactive_calls_wait_for_one_generation_while_batches_saturate_the_account(
    gates: MakeGate,
) -> None:
    # Three batch processes keep the account's slot busy with a queue of waiters; a fourth
    # process submits interactively now and then. In ticket order (no lanes) each interactive
    # call would wait behind the three batch processes' waiters (~3 generations).
    service = {"starting_time": 0.02, "processing_time": 0.3, "window": 1.0, "submissions": 50}
    limits = Limits(submissions=50, window=1.0, concurrent=1, generation_timeout=3.0)
    async with Emulator(accounts=1, **service) as emu:
        token = emu.tokens[0]
        options: dict[str, Any] = {"base_url": emu.base_url, "limits": limits}
        batch_clients = [
            AsyncClient(token, gate=gates(), poll_interval=0.02, **options) for _ in range(3)
        ]
        web_client = AsyncClient(token, gate=gates(), **options)
        observer = gates().account(account_key(token, emu.base_url), limits)
        waits: list[float] = []
        done: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            for client in [*batch_clients, web_client]:
                await stack.enter_async_context(client)

            async def batch(client: AsyncClient, name: str) -> None:
                await client.generate("google/nano-banana", name, priority="batch")
                done.append(name)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for p, client in enumerate(batch_clients):
                        for i in range(3):
                            tg.start_soon(batch, client, f"batch {p}-{i}")
                    await until(lambda: _waiting_at_least(observer, 3))  # all three queued
                    for i in range(3):
                        started = time.monotonic()
                        submission = await web_client.submit(
                            "google/nano-banana", f"interactive {i}"
                        )
                        waits.append(time.monotonic() - started)  # the gate's wait, and a POST
                        await web_client.wait(submission.generation_id)
                        await until(lambda: _waiting_at_least(observer, 3))
        assert len(done) == 9  # the batches finished every job
        # Each interactive call waited for at most about the generation running (0.35 s).
        assert max(waits) < 0.6, waits
        assert sum(emu.stats.throttled[token].values()) == 0


async def _waiting_at_least(account: RedisAccountGate, n: int) -> bool:
    return (await account.fetch_statistics()).waiting >= n
