"""The transport seam against a misbehaving local server: bodies and failures it must survive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import asyncsdk
from asyncsdk import AsyncClient

pytestmark = pytest.mark.anyio
KEY = "bye_" + "5" * 32


async def html_502(request: web.Request) -> web.Response:
    return web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html")


async def not_json(request: web.Request) -> web.Response:
    return web.Response(text="hello", headers={"X-Request-ID": "req-plain"})


async def unsuccessful(request: web.Request) -> web.Response:
    return web.json_response({"success": False, "error": "SOMETHING_NEW", "message": "odd"})


async def wrong_shape(request: web.Request) -> web.Response:
    return web.json_response({"success": True, "data": {"status": "succeeded"}})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.6)  # longer than the client's 0.3 s timeout
    return web.json_response({"success": True, "data": {}})


async def hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    raise ConnectionResetError


STATES = iter(["starting", "queued", "queued", "warming-up", "processing", "succeeded"])


async def evolving(request: web.Request) -> web.Response:
    data = {"generationId": "evolving", "status": next(STATES), "futureField": [1, 2]}
    return web.json_response({"success": True, "data": data})


async def echo_auth(request: web.Request) -> web.Response:
    data = {"accountId": request.headers.get("User-Agent")}
    return web.json_response(
        {"success": True, "message": request.headers["Authorization"], "data": data}
    )


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def trickle(request: web.Request) -> web.StreamResponse:
    """An image sent in pieces for 0.8 s, never idle for more than 0.1 s."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    await response.prepare(request)
    for i in range(0, len(PNG), 9):
        await response.write(PNG[i : i + 9])
        await asyncio.sleep(0.1)
    await response.write_eof()
    return response


async def stall(request: web.Request) -> web.StreamResponse:
    """The first bytes of an image, then nothing."""
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    await response.prepare(request)
    await response.write(PNG[:9])
    await asyncio.sleep(0.9)  # three times the client's idle bound
    return response


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v1/status", echo_auth)
    app.router.add_get("/api/v1/data/account", html_502)
    app.router.add_get("/api/v1/image-generation/plain", not_json)
    app.router.add_get("/api/v1/image-generation/odd", unsuccessful)
    app.router.add_get("/api/v1/image-generation/shape", wrong_shape)
    app.router.add_get("/api/v1/image-generation/slow", slow)
    app.router.add_get("/api/v1/image-generation/hangup", hang_up)
    app.router.add_get("/api/v1/image-generation/evolving", evolving)
    app.router.add_get("/files/trickle.png", trickle)
    app.router.add_get("/files/stall.png", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/api/v1"
    await runner.cleanup()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(KEY, base_url=base_url, max_retries=0, timeout=0.3) as c:
        yield c


async def test_auth_header_and_user_agent(client: AsyncClient) -> None:
    status = await client.status()
    assert status.message == f"Bearer {KEY}"
    assert status.account_id is not None and status.account_id.startswith("asyncsdk/")


async def test_an_html_error_page_is_a_clear_server_error(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.ServerError) as caught:
        await client.account()
    assert caught.value.status == 502 and caught.value.code is None
    assert "text/html" in caught.value.message and "Bad gateway" in caught.value.message


async def test_a_success_status_with_a_body_that_is_not_json(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.APIError) as caught:
        await client.get_generation("plain")
    assert caught.value.status == 200 and caught.value.request_id == "req-plain"
    assert "hello" in caught.value.message


async def test_success_false_with_an_unknown_code(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.APIError) as caught:
        await client.get_generation("odd")
    assert caught.value.code == "SOMETHING_NEW" and caught.value.message == "odd"


async def test_a_record_missing_its_id_is_a_clear_error(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.APIError, match="unexpected response shape for Generation"):
        await client.get_generation("shape")


async def test_timeouts_and_hang_ups(client: AsyncClient) -> None:
    with pytest.raises(asyncsdk.APITimeoutError) as timed_out:
        await client.get_generation("slow")
    assert isinstance(timed_out.value, TimeoutError) and timed_out.value.request_sent
    with pytest.raises(asyncsdk.APIConnectionError) as hung_up:
        await client.get_generation("hangup")
    assert hung_up.value.request_sent is True


async def test_a_session_passed_in_is_not_closed(base_url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with AsyncClient(KEY, base_url=base_url, session=session) as c:
            await c.status()
        assert not session.closed


async def test_unknown_states_do_not_break_the_stream(client: AsyncClient) -> None:
    seen = [g.status.value async for g in client.watch("evolving", poll_interval=0.001)]
    assert seen == ["starting", "queued", "warming-up", "processing", "succeeded"]


def image_at(base_url: str, name: str) -> asyncsdk.Generation:
    origin = base_url.removesuffix("/api/v1")
    return asyncsdk.Generation(
        "g-" + name, asyncsdk.GenerationStatus.SUCCEEDED, output_images=(f"{origin}/files/{name}",)
    )


async def test_a_download_is_bounded_by_idle_time_not_by_its_length(
    client: AsyncClient, base_url: str, tmp_path: Path
) -> None:
    # 0.8 s in all with the client's 0.3 s timeout: bytes keep coming, so it completes.
    (path,) = await client.download(image_at(base_url, "trickle.png"), tmp_path)
    assert path.read_bytes() == PNG
    with pytest.raises(asyncsdk.APITimeoutError) as caught:
        await client.download(image_at(base_url, "stall.png"), tmp_path / "stalled")
    assert "?" not in str(caught.value)
    assert not list((tmp_path / "stalled").iterdir())  # no partial file left behind


async def test_a_timeout_error_of_the_callers_own_code_is_not_the_transports(
    client: AsyncClient, base_url: str
) -> None:
    url = image_at(base_url, "trickle.png").output_images[0]
    with pytest.raises(TimeoutError) as caught:
        async with client._transport.stream(url) as (_, chunks):
            async for _ in chunks:
                raise TimeoutError("the caller's own deadline")
    assert not isinstance(caught.value, asyncsdk.APITimeoutError)
