"""One connection pool per origin: sockets bounded by concurrency, not by accounts.

Sockets are counted by the operating system (``/proc/net/tcp``: established connections whose
remote end is the emulator's port), sampled while the clients run.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from asyncsdk import AsyncClient
from asyncsdk._transport import Pool

from .conftest import Serve

pytestmark = pytest.mark.anyio
PROC_TCP = Path("/proc/net/tcp")
ESTABLISHED = "01"


def connections_to(port: int) -> int:
    """Established TCP connections (of any process) whose remote port is ``port``."""
    count = 0
    for line in PROC_TCP.read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


class Sampler:
    """The largest ``connections_to(port)`` seen while the block runs (every 5 ms)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, await anyio.to_thread.run_sync(connections_to, self.port))
            await anyio.sleep(0.005)


needs_proc = pytest.mark.skipif(not PROC_TCP.exists(), reason="counts sockets in /proc/net/tcp")


@needs_proc
async def test_300_accounts_reading_at_once_share_a_bounded_pool(serve: Serve) -> None:
    emu, _ = await serve(accounts=300)
    limit = 16
    clients = [
        AsyncClient(token, base_url=emu.base_url, max_connections=limit) for token in emu.tokens
    ]
    sampler = Sampler(emu.port)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)

            async def reads(client: AsyncClient) -> None:
                for _ in range(3):
                    status = await client.status()
                    assert status.account_id is not None

            async with anyio.create_task_group() as readers:
                for client in clients:
                    readers.start_soon(reads, client)
            stats = Pool.statistics()
            assert stats["pools"] == 1 and stats["users"] == 300
            tg.cancel_scope.cancel()
    assert 0 < sampler.peak <= limit, sampler.peak
    assert {c._transport.pool for c in clients} == {clients[0]._transport.pool}
    pool = clients[0]._transport.pool
    assert pool is not None
    for client in clients[:-1]:
        await client.aclose()
    assert not pool.closed
    assert (await clients[-1].status()).account_id is not None  # the last one still reads
    await clients[-1].aclose()
    assert pool.closed and Pool.statistics()["pools"] == 0
    with anyio.fail_after(5):
        while connections_to(emu.port):  # every socket was closed with the pool  # noqa: ASYNC110
            await anyio.sleep(0.01)


@needs_proc
async def test_by_default_a_hundred_connections_for_any_number_of_accounts(serve: Serve) -> None:
    emu, _ = await serve(accounts=400)
    sampler = Sampler(emu.port)
    clients = [AsyncClient(token, base_url=emu.base_url) for token in emu.tokens]
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler.run)
                async with anyio.create_task_group() as readers:
                    for client in clients:
                        readers.start_soon(client.account)
                tg.cancel_scope.cancel()
    finally:
        for client in clients:
            await client.aclose()
    assert 0 < sampler.peak <= 100, sampler.peak


@pytest.fixture
async def slow_url() -> AsyncIterator[str]:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.15)
        return web.json_response({"success": True, "data": {"accountId": "a"}})

    app = web.Application()
    app.router.add_get("/api/v1/status", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
    await runner.cleanup()


async def test_waiting_for_a_connection_is_not_counted_against_the_timeout(slow_url: str) -> None:
    # Four 0.15 s requests through one connection take 0.6 s: each within its 0.3 s timeout.
    options: dict[str, Any] = {
        "base_url": slow_url,
        "max_connections": 1,
        "timeout": 0.3,
        "max_retries": 0,
    }
    async with (
        AsyncClient("bye_" + "1" * 32, **options) as a,
        AsyncClient("bye_" + "2" * 32, **options) as b,
    ):
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for client in (a, b, a, b):
                    tg.start_soon(client.status)


async def test_a_request_cancelled_while_queued_gives_its_place_back(slow_url: str) -> None:
    async with AsyncClient("bye_" + "1" * 32, base_url=slow_url, max_connections=1) as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.status)
                await anyio.sleep(0.02)
                with anyio.move_on_after(0.02):
                    await client.status()  # queued behind the first, then cancelled
            assert (await client.status()).account_id == "a"
            assert Pool.statistics()["requests"] == 0


async def test_a_session_passed_in_is_used_and_never_closed(slow_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with AsyncClient("bye_" + "1" * 32, base_url=slow_url, session=session) as client:
            await client.status()
            assert client._transport.pool is None and Pool.statistics()["pools"] == 0
        assert not session.closed


async def test_an_unclosed_client_warns_and_does_not_keep_the_pool_open(slow_url: str) -> None:
    kept = AsyncClient("bye_" + "1" * 32, base_url=slow_url)
    dropped = AsyncClient("bye_" + "2" * 32, base_url=slow_url)
    await kept.status()
    await dropped.status()
    pool = kept._transport.pool
    assert pool is not None and pool.users == 2
    with pytest.warns(ResourceWarning, match="unclosed"):
        del dropped
        gc.collect()
    assert pool.users == 1 and not pool.closed
    await kept.aclose()
    assert pool.closed
