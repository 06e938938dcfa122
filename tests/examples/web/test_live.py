"""The web example under uvicorn on a real loopback port: webhooks delivered by the emulator
to the app's own endpoint, and a client that hangs up on its event stream."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from . import SLOW, WAIT, async_wait_for, need, parse_sse
from .conftest import LiveApp

need("fastapi", "the web example's framework")
need("uvicorn", "the web example's server")
httpx = need("httpx", "the HTTP test client")

pytestmark = pytest.mark.anyio

Live = Callable[..., LiveApp]


async def webhook_for(http: Any, generation_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        events = (await http.get("/webhooks/events")).json()["events"]
        found[:] = [e for e in events if e["generation"]["generation_id"] == generation_id]
        return bool(found)

    await async_wait_for(arrived, f"the webhook of {generation_id}")
    assert len(found) == 1
    return found[0]


async def test_the_emulator_delivers_signed_webhooks_to_the_app(live: Live) -> None:
    app = live()
    async with httpx.AsyncClient(base_url=app.url) as http:
        reply = await http.post("/generations", json={"prompt": "a red kite at dawn"})
        generation_id = reply.json()["generation_id"]
        event = await webhook_for(http, generation_id)
    assert event["type"] == "generation.completed" and event["id"].startswith("evt_")
    assert event["generation"]["status"] == "succeeded"
    assert event["generation"]["output_images"]
    assert event["notified"] is True  # handed to the app's client: its watchers woke
    async with httpx.AsyncClient(base_url=app.url) as http:
        info = (await http.get("/info")).json()
    assert info["webhooks_notified"] >= 1


async def test_a_failed_generation_is_delivered_as_generation_failed(live: Live) -> None:
    app = live(emulator={"processing_time": 100.0, "generation_timeout": 4.0})
    async with httpx.AsyncClient(base_url=app.url) as http:
        reply = await http.post("/generations", json={"prompt": "a slow kite"})
        event = await webhook_for(http, reply.json()["generation_id"])
    assert event["type"] == "generation.failed"
    assert event["generation"]["status"] == "failed"


async def test_a_stream_over_a_real_socket_ends_with_the_final_record(live: Live) -> None:
    app = live()
    async with httpx.AsyncClient(base_url=app.url, timeout=WAIT) as http:
        reply = await http.post("/generations", json={"prompt": "a red kite at dawn"})
        generation_id = reply.json()["generation_id"]
        with anyio.fail_after(WAIT):
            reply = await http.get(f"/generations/{generation_id}/events")
    events = parse_sse(reply.text)
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"


async def test_a_client_that_hangs_up_stops_its_stream(live: Live) -> None:
    app = live(**SLOW)
    async with httpx.AsyncClient(base_url=app.url, timeout=WAIT) as http:
        reply = await http.post("/generations", json={"prompt": "a very slow kite"})
        generation_id = reply.json()["generation_id"]

        async def active_streams() -> int:
            count: int = (await http.get("/info")).json()["active_streams"]
            return count

        with anyio.fail_after(WAIT):
            async with (
                http.stream("GET", f"/generations/{generation_id}/events") as stream,
                # Held until the hang-up: an abandoned line iterator, once garbage-collected,
                # would close the connection at a moment of its own choosing.
                contextlib.aclosing(stream.aiter_lines()) as lines,
            ):
                async for line in lines:
                    if line.startswith("event: status"):
                        break
                assert await active_streams() == 1
            # Leaving the block closes the connection mid-stream.

        async def stopped() -> bool:
            return await active_streams() == 0

        await async_wait_for(stopped, "the stream to stop after the hang-up")
        record = (await http.get(f"/generations/{generation_id}")).json()
        assert record["status"] in ("starting", "processing")
