"""Webhooks wake watchers: the emulator's signed deliveries, verified by an application
endpoint and handed to ``client.notify(event)``, end ``wait()`` at once; polling is then only
a safety net (about one status read per generation).

The application here is what a user writes: an aiohttp endpoint on 127.0.0.1:0 that verifies
the raw body with :func:`asyncsdk.webhooks.verify` and hands the event to its client.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from aiohttp import web

from asyncsdk import AsyncClient, Generation, Limits, webhooks
from asyncsdk.emulator import Emulator

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"
SECRET = "whsec_notify_integration"
POLL_INTERVAL = 0.05
#: Generations of ~0.3 s, i.e. ~6 poll intervals: without webhooks each would take several reads.
TIMES: dict[str, Any] = {
    "starting_time": 0.02,
    "processing_time": 0.28,
    "window": 2.0,
    "generation_timeout": 3.0,
}
STATUS_READS = ("GET", "/api/v1/image-generation/{generationId}")


@dataclass
class App:
    """The application: its webhook endpoint hands verified deliveries to its client."""

    client: AsyncClient | None = None
    arrivals: dict[str, float] = field(default_factory=dict)  # generation id -> time.time()
    ignore: set[str] = field(default_factory=set)  # generation ids whose delivery is "lost"
    rejected: int = 0

    async def endpoint(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = webhooks.verify(raw, request.headers.get(webhooks.SIGNATURE_HEADER), SECRET)
        except webhooks.WebhookVerificationError:
            self.rejected += 1
            return web.json_response({"received": False}, status=400)
        generation_id = event.generation.generation_id
        self.arrivals[generation_id] = time.time()
        if self.client is not None and generation_id not in self.ignore:
            notify: Any = self.client.notify
            handed = notify(event)
            if inspect.isawaitable(handed):  # whether notify() is a coroutine or not
                await handed
        return web.json_response({"received": True})


@dataclass
class Setup:
    app: App
    emulator: Emulator
    client: AsyncClient

    def reads(self) -> int:
        return self.emulator.stats.requests[STATUS_READS]

    def ended_at(self, generation: Generation) -> float:
        """When the service ended it (its clock is this process's)."""
        assert generation.created_at is not None and generation.total_time is not None
        return generation.created_at.timestamp() + generation.total_time


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    app = App()
    server = web.Application()
    server.router.add_post("/webhooks/babysea", app.endpoint)
    runner = web.AppRunner(server)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with Emulator(
            **TIMES,
            submissions=100,  # the window is not the subject here
            webhook_url=f"http://127.0.0.1:{port}/webhooks/babysea",
            webhook_secret=SECRET,
        ) as emulator:
            s = emulator.settings
            limits = Limits(
                submissions=s.submissions,
                window=s.scaled(s.window),
                concurrent=s.concurrent,
                generation_timeout=s.scaled(s.generation_timeout),
            )
            async with AsyncClient(
                emulator.tokens[0],
                base_url=emulator.base_url,
                limits=limits,
                poll_interval=POLL_INTERVAL,
                backoff_base=0.01,
            ) as client:
                app.client = client
                yield Setup(app, emulator, client)
                app.client = None
    finally:
        await runner.cleanup()


async def test_deliveries_end_wait_at_once_with_about_one_read_per_generation(
    setup: Setup,
) -> None:
    client, app = setup.client, setup.app
    with anyio.fail_after(20):
        for i in range(2):  # the first deliveries: durations learnt, deliveries flowing
            await client.generate(MODEL, f"warm-up {i}")
        before = setup.reads()
        count = 6
        notices = []
        for i in range(count):
            generation = await client.generate(MODEL, f"kite {i}")
            seen = time.time()
            arrived = app.arrivals[generation.generation_id]
            # Seen when the delivery arrived (same process: a wake-up, not another poll) ...
            assert seen - arrived < POLL_INTERVAL / 2
            notices.append(seen - setup.ended_at(generation))
        reads = setup.reads() - before
    assert app.rejected == 0
    assert reads <= 1.5 * count, f"{reads} status reads for {count} generations"
    # ... and the notice delay is about the delivery latency, well under a poll interval.
    assert sum(notices) / count < POLL_INTERVAL


async def test_every_waiter_on_the_generation_wakes(setup: Setup) -> None:
    client, app = setup.client, setup.app
    with anyio.fail_after(20):
        await client.generate(MODEL, "warm-up")
        submission = await client.submit(MODEL, "watched twice")
        seen: list[float] = []

        async def waiter() -> None:
            await client.wait(submission.generation_id)
            seen.append(time.time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(waiter)
    arrived = app.arrivals[submission.generation_id]
    assert len(seen) == 2 and all(t - arrived < POLL_INTERVAL / 2 for t in seen)


async def test_a_lost_delivery_is_caught_by_the_safety_net(setup: Setup) -> None:
    client, app = setup.client, setup.app
    with anyio.fail_after(20):
        for i in range(2):
            await client.generate(MODEL, f"warm-up {i}")
        submission = await client.submit(MODEL, "its delivery is lost")
        app.ignore.add(submission.generation_id)
        before = setup.reads()
        generation = await client.wait(submission.generation_id)
        seen = time.time()
        reads = setup.reads() - before
    assert generation.generation_id in app.arrivals  # delivered, but never handed over
    # Found by a read past the likely end, a few poll intervals late, not 50 s late.
    assert seen - setup.ended_at(generation) < 10 * POLL_INTERVAL
    assert reads <= 4


async def test_without_deliveries_polling_goes_on_as_usual(setup: Setup) -> None:
    client, app = setup.client, setup.app
    app.client = None  # the application does not hand deliveries over
    with anyio.fail_after(20):
        for i in range(3):
            generation = await client.generate(MODEL, f"polled {i}")
            seen = time.time()
            assert seen - setup.ended_at(generation) < 10 * POLL_INTERVAL
