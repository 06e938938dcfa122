"""RedisGate against a real Redis, without the emulator: each RedisGate stands for a process.

The window property and the slot bound under concurrent acquirers from several gates, turns
taken in ticket order, a killed holder's lease and a dead waiter's heartbeat running out,
fencing of an expired lease, keys (namespaced, hashed, expiring), deadlines, cancellation,
server hints, and the clear error when Redis is down.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import pytest
import redis.asyncio as aioredis

from asyncsdk import AsyncClient, AsyncSDKError, Holder, Limits, RateLimitError, RateLimitInfo
from asyncsdk._client import account_key
from asyncsdk._redis import RedisAccountGate, RedisGate, RedisGateError, redact_url
from asyncsdk._redis._scripts import RenewReply

from .conftest import ROOT, RedisServer, free_port

pytestmark = pytest.mark.anyio

MakeGate = Callable[..., RedisGate]


async def until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 3.0) -> None:
    """Poll an async predicate, a bounded number of times: readiness, never a guess at timing."""
    pause = 0.005
    for _ in range(int(timeout / pause)):
        if await predicate():
            return
        await anyio.sleep(pause)
    raise AssertionError(f"not true within {timeout}s")


# -- the guarantees --------------------------------------------------------------------------
async def test_window_and_slots_hold_across_processes(gates: MakeGate) -> None:
    limits = Limits(submissions=3, window=0.3, concurrent=2, generation_timeout=2.0)
    rng = random.Random(7)
    sends: list[float] = []
    running = 0
    most = 0

    async def worker(account: RedisAccountGate, name: str, jobs: int) -> None:
        nonlocal running, most
        for i in range(jobs):
            permit = await account.acquire()
            running += 1
            most = max(most, running)
            sends.append(time.monotonic())
            await anyio.sleep(rng.uniform(0, 0.02))  # the round trip
            await permit.answered(f"{name}-{i}", None)
            await anyio.sleep(rng.uniform(0, 0.03))  # the generation
            running -= 1
            await account.release(f"{name}-{i}")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for g in range(3):
                account = gates().account("acct", limits)
                for t in range(2):
                    tg.start_soon(worker, account, f"g{g}t{t}", 2)
    assert len(sends) == 12
    assert most <= limits.concurrent
    sends.sort()
    for k, sent in enumerate(sends):
        in_window = [s for s in sends[: k + 1] if s > sent - limits.window]
        assert len(in_window) <= limits.submissions, (sent, in_window)
    # 12 submissions at 3 per window need at least three full windows after the first.
    assert sends[-1] - sends[0] >= 3 * limits.window


async def test_processes_take_turns_in_ticket_order(gates: MakeGate) -> None:
    limits = Limits(submissions=100, window=1.0, concurrent=1, generation_timeout=2.0)
    accounts = [gates().account("acct", limits) for _ in range(3)]
    observer = gates().account("acct", limits)
    jobs = 5
    order: list[int] = []

    async def worker(index: int) -> None:
        account = accounts[index]
        for i in range(jobs):
            permit = await account.acquire()
            order.append(index)
            # Hold the slot until every other process with work left has queued (readiness,
            # so that the order below does not depend on scheduling).
            others = sum(1 for g in range(3) if g != index and order.count(g) < jobs)
            await until(functools.partial(_waiting_at_least, observer, others))
            await permit.answered(f"p{index}-{i}", None)
            await account.release(f"p{index}-{i}")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(worker, index)
    # Round robin: a process that was served queues behind the ones already waiting.
    assert sorted(order[:3]) == [0, 1, 2]
    assert order == order[:3] * jobs


async def _waiting_at_least(account: RedisAccountGate, n: int) -> bool:
    return (await account.fetch_statistics()).waiting >= n


async def test_a_killed_holder_frees_the_slot_when_its_lease_expires(
    gates: MakeGate, inspect: aioredis.Redis
) -> None:
    limits = Limits(submissions=10, window=5.0, concurrent=1, generation_timeout=5.0)
    dying, other = gates(lease_ttl=0.3), gates(lease_ttl=0.3)
    await dying.account("acct", limits).acquire()
    await dying.aclose()  # killed: nothing renews its lease any more
    killed = time.monotonic()
    account = other.account("acct", limits)
    with anyio.fail_after(3):
        await account.acquire()
    waited = time.monotonic() - killed
    assert 0.2 <= waited < 1.5
    # The dead holder's in-flight window entry now counts from its lease's end; the new
    # holder's entry is the only one in flight.
    entries = await inspect.zrange(account.keys[0], 0, -1, withscores=True)
    scores = [float(entry[1]) for entry in entries]
    assert len(scores) == 2
    assert sum(math.isinf(s) for s in scores) == 1


async def test_a_dead_waiter_leaves_the_queue_when_its_heartbeat_stops(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    holder = gates(lease_ttl=0.3).account("acct", limits)
    ghost = gates(lease_ttl=0.3).account("acct", limits)
    waiter = gates(lease_ttl=0.3).account("acct", limits)
    permit = await holder.acquire()
    # A process queues once (heartbeat 0.3 s) and is killed: it never comes back.
    reply = await ghost._run("acquire", "ghost", "", 300, ghost._fingerprint, "", "", "interactive")
    assert reply.status == "slot"
    await permit.answered(None, None)  # the slot is free, but the ghost is ahead
    started = time.monotonic()
    with anyio.fail_after(3):
        await waiter.acquire()
    assert time.monotonic() - started >= 0.15


async def test_an_expired_lease_cannot_release_or_renew_the_next_one(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    stalled = gates(lease_ttl=0.3).account("acct", limits)
    fresh = gates(lease_ttl=0.3).account("acct", limits)
    old = await stalled.acquire()
    stalled._held.clear()  # the process stalls: its renewals stop
    with anyio.fail_after(3):
        await fresh.acquire()  # once the stalled lease expired
    member = old.member  # type: ignore[attr-defined]
    reply = await stalled._run("renew", member, "0")
    assert isinstance(reply, RenewReply)
    assert reply.lost == (member,)  # refused: the lease is gone, it is not revived
    await old.abandon()  # compare-and-delete: the new holder's lease is not touched
    stats = await fresh.fetch_statistics()
    assert stats.in_progress == 1


async def test_a_late_answer_on_an_expired_lease_becomes_a_fixed_hold(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    stalled = gates(lease_ttl=0.3).account("acct", limits)
    other = gates(lease_ttl=0.3).account("acct", limits)
    old = await stalled.acquire()
    stalled._held.clear()
    await until(lambda: _in_progress(other, 0))
    await old.answered("gen-late", None)  # its generation runs: everybody must wait for it
    assert (await other.fetch_statistics()).holders == ("gen-late",)
    with anyio.move_on_after(0.5) as scope:
        await other.acquire()
    assert scope.cancelled_caught
    await other.release("gen-late")  # seen ending, by any process
    with anyio.fail_after(2):
        await other.acquire()


async def _in_progress(account: RedisAccountGate, n: int) -> bool:
    return (await account.fetch_statistics()).in_progress == n


async def test_hold_foreign_makes_every_process_wait(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    a, b = gates().account("acct", limits), gates().account("acct", limits)
    await a.hold_foreign("gen-x")
    await a.hold_foreign("gen-x")  # once per generation
    assert (await b.fetch_statistics()).holders == ("gen-x",)
    with anyio.move_on_after(0.3) as scope:
        await b.acquire()
    assert scope.cancelled_caught
    await a.release("gen-x")
    with anyio.fail_after(2):
        await b.acquire()


async def test_the_head_probes_holders_nobody_watches(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    a = gates().account("acct", limits)
    b = gates(probe_interval=0.05).account("acct", limits)
    permit = await a.acquire()
    await permit.answered("gen-unwatched", None)
    probed: list[list[str | None]] = []

    async def probe(holders: Sequence[Holder]) -> None:
        probed.append([h.generation_id for h in holders])
        await b.release("gen-unwatched")  # the poll saw it end

    with anyio.fail_after(3):
        await b.acquire(probe=probe)
    assert probed == [["gen-unwatched"]]


async def test_a_watched_holder_is_not_probed_by_its_own_process(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    gate = gates(probe_interval=0.05)
    account = gate.account("acct", limits)
    permit = await account.acquire()
    await permit.answered("gen-w", None)
    probed: list[object] = []

    async def probe(holders: object) -> None:
        probed.append(holders)

    with account.watching("gen-w"), anyio.move_on_after(0.3):
        await account.acquire(probe=probe)
    assert probed == []


async def test_an_orphaned_slot_is_resolved_by_another_process(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    a = gates().account("acct", limits)
    b = gates(probe_interval=0.05).account("acct", limits)
    permit = await a.acquire()
    await permit.orphan("sdk-0123456789ab", 1000.0)  # its submitter was cancelled mid-request
    probed: list[list[tuple[str | None, str | None, bool]]] = []

    async def probe(holders: Sequence[Holder]) -> None:
        probed.append([(h.generation_id, h.tag, h.orphan) for h in holders])
        if len(probed) == 1:
            (orphan,) = holders
            await b.resolve(orphan.key, "gen-o")  # its tag was found: gen-o holds it
        else:
            await b.release("gen-o")  # ... and then it ended

    with anyio.fail_after(3):
        await b.acquire(probe=probe)
    assert probed == [[(None, "sdk-0123456789ab", True)], [("gen-o", None, False)]]


async def test_an_orphan_whose_generation_is_held_already_is_freed(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=2, generation_timeout=5.0)
    a, b = gates().account("acct", limits), gates().account("acct", limits)
    orphaned = await a.acquire()
    await orphaned.orphan(None, 1000.0)
    await a.hold_foreign("gen-f")
    assert (await b.fetch_statistics()).orphans == 1
    (orphan,) = [h for h in b.holders() if h.orphan]
    await b.resolve(orphan.key, "gen-f")  # already held: not the orphan's
    stats = await b.fetch_statistics()
    assert (stats.holders, stats.orphans) == (("gen-f",), 0)


async def test_an_orphan_with_nothing_created_is_freed(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    a, b = gates().account("acct", limits), gates().account("acct", limits)
    orphaned = await a.acquire()
    await orphaned.orphan("sdk-0123456789ab", 1000.0)
    await b.fetch_statistics()
    (orphan,) = b.holders()
    await b.resolve(orphan.key, None)
    assert (await a.fetch_statistics()).in_progress == 0


# -- keys ------------------------------------------------------------------------------------
async def test_keys_are_namespaced_hashed_and_expire(
    gates: MakeGate, namespace: str, inspect: aioredis.Redis
) -> None:
    api_key = "bye_" + "ab" * 16
    key = account_key(api_key, "https://api.babysea.ai/api/v1")
    limits = Limits(submissions=2, window=0.2, concurrent=1, generation_timeout=0.3)
    account = gates(lease_ttl=0.2).account(key, limits)
    permit = await account.acquire()
    await permit.answered("gen-1", None)
    await account.release("gen-1")
    keys = [str(k) for k in await inspect.keys(f"{namespace}:*")]
    assert keys and all(k.startswith(namespace + ":{") for k in keys)
    assert await inspect.keys(f"*{key}*") == []
    assert await inspect.keys(f"*{api_key}*") == []
    assert key not in account.channel
    retention_ms = (0.2 + 0.3 + limits.margin + 1.0) * 1000
    for k in keys:
        assert 0 < await inspect.pttl(k) <= retention_ms

    async def gone() -> bool:
        return not await inspect.exists(*keys)

    await until(gone)  # nothing is left behind once the account goes quiet


# -- waiting ---------------------------------------------------------------------------------
async def test_a_deadline_before_the_window_frees_fails_at_once(gates: MakeGate) -> None:
    limits = Limits(submissions=1, window=5.0, concurrent=1, generation_timeout=5.0)
    account = gates().account("acct", limits)
    permit = await account.acquire()
    await permit.answered(None, None)  # the slot is free, the window full for 5 s
    started = time.monotonic()
    with pytest.raises(RateLimitError, match="after the deadline"), anyio.fail_after(1):
        await account.acquire()
    assert time.monotonic() - started < 0.5
    assert (await account.fetch_statistics()).waiting == 0  # it left the queue


async def test_a_cancelled_waiter_leaves_the_queue(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    holder, waiter = gates().account("acct", limits), gates().account("acct", limits)
    observer = gates().account("acct", limits)
    await holder.acquire()
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.acquire)
            await until(lambda: _waiting_at_least(observer, 1))
            tg.cancel_scope.cancel()
    assert (await observer.fetch_statistics()).waiting == 0


async def test_the_server_hint_holds_back_the_next_submission(gates: MakeGate) -> None:
    limits = Limits(submissions=10, window=5.0, concurrent=1, generation_timeout=5.0)
    account = gates().account("acct", limits)
    permit = await account.acquire()
    # Another client on the key used the whole window; its oldest place frees in 0.3 s.
    hint = RateLimitInfo(limit=10, remaining=0, reset_at=time.time() + 0.3, retry_after=None)
    await permit.answered("gen-1", hint)
    await account.release("gen-1")
    assert account.statistics().submissions_in_window == 10
    started = time.monotonic()
    with anyio.fail_after(3):
        await account.acquire()
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_statistics_is_the_last_snapshot(gates: MakeGate) -> None:
    limits = Limits(submissions=5, window=1.0, concurrent=1, generation_timeout=5.0)
    account = gates().account("acct", limits)
    assert account.statistics().in_progress == 0
    permit = await account.acquire()
    await permit.answered("gen-s", None)
    stats = account.statistics()
    assert (stats.submissions_in_window, stats.in_progress, stats.holders) == (1, 1, ("gen-s",))
    assert stats.submission_limit == 5
    await permit.discard()  # (not the client's order of calls, but a valid permit call)
    assert (await account.fetch_statistics()).submissions_in_window == 0


async def test_processes_with_different_limits_are_refused(gates: MakeGate) -> None:
    await gates().account("acct", Limits(submissions=10, window=1.0)).acquire()
    other = gates().account("acct", Limits(submissions=5, window=1.0))
    with pytest.raises(ValueError, match="different limits"):
        await other.acquire()


async def test_one_process_cannot_use_an_account_with_two_limits(gates: MakeGate) -> None:
    gate = gates()
    gate.account("acct", Limits(submissions=10))
    with pytest.raises(ValueError, match="different limits"):
        gate.account("acct", Limits(submissions=5))


# -- failures --------------------------------------------------------------------------------
async def test_redis_down_is_a_clear_error_naming_the_url_without_password(
    namespace: str,
) -> None:
    port = free_port()  # nothing listens there
    gate = RedisGate.from_url(f"redis://:hunter2@127.0.0.1:{port}/0", namespace=namespace)
    try:
        # No fallback: the client never reaches its (unreachable) service.
        async with AsyncClient("bye_" + "0" * 32, base_url="http://127.0.0.1:9", gate=gate) as c:
            with anyio.fail_after(10), pytest.raises(RedisGateError) as info:
                await c.submit("google/nano-banana", "a red kite")
        with pytest.raises(RedisGateError):
            await gate.ping()
    finally:
        await gate.aclose()
    error = info.value
    assert isinstance(error, AsyncSDKError)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)  # crosses process boundaries
    assert f"redis://:***@127.0.0.1:{port}/0" in str(error)
    assert "hunter2" not in str(error) and "hunter2" not in repr(gate)
    assert error.url == f"redis://:***@127.0.0.1:{port}/0"


async def test_redis_stopped_mid_run_is_a_clear_error(
    private_redis: RedisServer, namespace: str
) -> None:
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=5.0)
    gate = RedisGate.from_url(private_redis.url, namespace=namespace)
    try:
        account = gate.account("acct", limits)
        permit = await account.acquire()
        private_redis.stop()
        with anyio.fail_after(10):
            with pytest.raises(RedisGateError, match=f"127.0.0.1:{private_redis.port}/0"):
                await permit.answered("gen-1", None)
            with pytest.raises(RedisGateError, match="check that Redis is up"):
                await account.acquire()
    finally:
        await gate.aclose()


def test_urls_are_shown_without_passwords() -> None:
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("rediss://user:pw@h/0") == "rediss://user:***@h/0"
    assert redact_url("redis://h:6379") == "redis://h:6379"
    assert redact_url("unix:///tmp/r.sock?db=1&password=pw") == "unix:///tmp/r.sock"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisGate.from_url("http://localhost:6379")
    with pytest.raises(ValueError, match="lease_ttl"):
        RedisGate.from_url("redis://localhost", lease_ttl=0)
    with pytest.raises(ValueError, match="namespace"):
        RedisGate.from_url("redis://localhost", namespace="a{b}")


def test_without_redis_the_import_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import asyncsdk\n"  # the package itself does not need redis
        "try:\n"
        "    import asyncsdk._redis\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert "pip install 'asyncsdk[redis]'" in out.stdout, out.stderr


async def test_a_client_the_caller_made_is_used_and_left_open(
    redis_server: RedisServer, namespace: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        gate = RedisGate(client, namespace=namespace)
        assert gate.url == f"redis://127.0.0.1:{redis_server.port}/0"
        account = gate.account("acct", Limits(submissions=2, window=1.0))
        permit = await account.acquire()
        await permit.answered("gen-c", None)
        assert account.statistics().holders == ("gen-c",)
        await account.release("gen-c")
        await gate.aclose()
        assert await client.ping()  # not closed by the gate
    finally:
        await client.aclose()


async def test_an_admission_never_settled_frees_its_slot_by_its_cap(gates: MakeGate) -> None:
    # A settlement that never ran (a cancel landing mid-script) must not leave a lease that
    # its live process renews forever: admission caps it at generation_timeout + margin.
    limits = Limits(submissions=10, window=1.0, concurrent=1, generation_timeout=0.6)
    a = gates(lease_ttl=0.15).account("acct", limits)
    b = gates(lease_ttl=0.15, probe_interval=0.05).account("acct", limits)
    await a.acquire()  # admitted; its holder keeps renewing, and never settles
    started = time.monotonic()
    with anyio.fail_after(3):
        await b.acquire()
    assert 0.5 <= time.monotonic() - started <= 1.2
