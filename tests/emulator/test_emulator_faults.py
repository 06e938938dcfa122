"""Fault injection, image inputs, webhooks, stats, every seed code and the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import asyncsdk
from asyncsdk.emulator import Faults

if TYPE_CHECKING:
    from .conftest import Serve

pytestmark = pytest.mark.anyio

ROOT = Path(asyncsdk.__file__).resolve().parent.parent
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)

#: Every code of the seed reference with its HTTP status, copied from the seed.
SEED_CODES = {
    "AUTHENTICATION_FAILED": 401, "MISSING_API_TOKEN": 401, "INVALID_API_TOKEN": 401,
    "FAILED_TO_VALIDATE_TOKEN": 500, "INVALID_JSON": 400, "VALIDATION_ERROR": 400,
    "INVALID_GENERATION_ID": 404, "NSFW_CONTENT_DETECTED": 400,
    "IMAGE_SIZE_LIMIT_EXCEEDED": 400, "IMAGE_DOWNLOAD_FAILED": 400, "INSUFFICIENT_CREDITS": 402,
    "ACCOUNT_NOT_FOUND": 404, "GENERATION_NOT_FOUND": 404, "RATE_LIMIT_ERROR": 429,
    "CONCURRENT_GENERATION_ERROR": 429, "FETCH_FAILED": 500, "IMAGE_UPLOAD_FAILED": 500,
    "GENERATION_UPDATE_FAILED": 500, "GENERATION_INIT_FAILED": 500,
    "CREDIT_PROCESSING_FAILED": 500, "GENERATION_START_FAILED": 500,
    "INTERNAL_SERVER_ERROR": 500,
}  # fmt: skip
READ_FAILURES = [
    "FAILED_TO_VALIDATE_TOKEN", "FETCH_FAILED", "IMAGE_UPLOAD_FAILED",
    "GENERATION_UPDATE_FAILED", "INTERNAL_SERVER_ERROR",
]  # fmt: skip
SUBMISSION_FAILURES = [
    "GENERATION_INIT_FAILED", "CREDIT_PROCESSING_FAILED", "GENERATION_START_FAILED",
    "INTERNAL_SERVER_ERROR",
]  # fmt: skip


def data_uri(payload: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(payload).decode()


@pytest.fixture
async def images() -> AsyncIterator[str]:
    """A local image host: /ok.png, /photo.jpg, /page.html, /big.png, /slow.png, 404s."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=FAKE_PNG, content_type="image/png")

    async def jpeg(request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8\xff\xe0" + bytes(50), content_type="image/jpeg")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>not an image</html>", content_type="image/png")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=FAKE_PNG + bytes(3000), content_type="image/png")

    async def slow(request: web.Request) -> web.Response:
        await anyio.sleep(0.3)
        return web.Response(body=FAKE_PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/ok.png", ok)
    app.router.add_get("/photo.jpg", jpeg)
    app.router.add_get("/page.html", page)
    app.router.add_get("/big.png", big)
    app.router.add_get("/slow.png", slow)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


# Request faults.


@pytest.mark.parametrize("code", READ_FAILURES)
async def test_fail_reads(serve: Serve, code: str) -> None:
    emulator, api = await serve()
    emulator.faults.fail_reads(2, code)
    for path in ("/status", "/data/list/image"):
        reply = await api.get(path)
        assert (reply.status, reply.error) == (500, code)
        assert reply.body["success"] is False and reply.body["message"]
    assert (await api.get("/status")).status == 200
    assert emulator.stats.errors[code] == 2


async def test_fail_reads_leaves_submissions_and_files_alone(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.fail_reads(1)
    generation_id = (await api.submit()).data["generationId"]
    reply = await api.get(f"/image-generation/{generation_id}")
    assert (reply.status, reply.error) == (500, "INTERNAL_SERVER_ERROR")
    assert reply.body["message"] == (
        "An unexpected error occurred. Please try again or contact support if the issue persists."
    )
    record = await api.wait_for(generation_id, "succeeded")
    emulator.faults.fail_reads(1)
    assert (await api.get(record["outputImages"][0], headers={})).status == 200
    assert (await api.get("/status")).status == 500


@pytest.mark.parametrize("code", SUBMISSION_FAILURES)
async def test_fail_submissions_creates_and_charges_nothing(serve: Serve, code: str) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.fail_submissions(1, code)
    reply = await api.submit()
    assert (reply.status, reply.error) == (500, code)
    assert emulator.generations(api.token) == []
    assert emulator.credits(api.token)["total"] == 10
    assert (await api.get("/status")).status == 200  # reads are not affected
    accepted = await api.submit()
    assert accepted.status == 200
    assert accepted.headers["X-RateLimit-Remaining"] == "9"  # the 500 took no place


async def test_generation_start_failed_has_the_seed_message(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.fail_submissions(1)
    reply = await api.submit()
    assert reply.body == {
        "success": False,
        "error": "GENERATION_START_FAILED",
        "message": "Failed to start image generation. Your credits have been refunded. "
        "Please try again.",
    }


async def test_drop_after_create(serve: Serve) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.drop_after_create(1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.submit()
    [record] = emulator.generations(api.token)
    assert emulator.credits(api.token)["total"] == 8
    assert emulator.stats.created[api.token] == 1
    # The generation really exists for the client too, and runs to completion.
    listing = (await api.get("/data/list/image")).data
    assert [g["generationId"] for g in listing["generations"]] == [record["generationId"]]
    await api.wait_for(record["generationId"], "succeeded")
    assert (await api.submit()).status == 200  # only one drop was scripted


async def test_delay(serve: Serve) -> None:
    emulator, api = await serve(concurrent=5)

    async def timed(call: Any) -> float:
        start = time.monotonic()
        await call
        return time.monotonic() - start

    emulator.faults.delay(0.25, count=1, method="POST")
    assert await timed(api.get("/status")) < 0.2
    assert await timed(api.submit()) >= 0.25
    assert await timed(api.submit()) < 0.2
    emulator.faults.delay(0.15)  # every method, until cleared
    assert await timed(api.get("/status")) >= 0.15
    assert await timed(api.submit()) >= 0.15
    emulator.faults.clear()
    assert await timed(api.get("/status")) < 0.15


async def test_a_client_timeout_during_a_delay(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.delay(0.3, count=1)
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):  # distinct on Python 3.10
        await api.get("/status", timeout=aiohttp.ClientTimeout(total=0.05))
    assert (await api.get("/status")).status == 200


async def test_clear_forgets_every_fault(serve: Serve) -> None:
    emulator, api = await serve()
    faults = emulator.faults
    faults.fail_reads(3)
    faults.fail_submissions(3)
    faults.drop_after_create(3)
    faults.stick(3)
    faults.fail_generations(3)
    faults.delay(5.0)
    faults.clear()
    assert (await api.get("/status")).status == 200
    generation_id = (await api.submit()).data["generationId"]
    await api.wait_for(generation_id, "succeeded")


def test_fault_arguments_are_checked() -> None:
    faults = Faults()
    for bad in (
        lambda: faults.fail_reads(0),
        lambda: faults.fail_reads(1, "VALIDATION_ERROR"),
        lambda: faults.fail_submissions(1, "RATE_LIMIT_ERROR"),
        lambda: faults.drop_after_create(-1),
        lambda: faults.stick(True),
        lambda: faults.delay(-1.0),
        lambda: faults.delay(1.0, method="PUT"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            bad()


# Image inputs.


async def test_url_images_are_fetched(serve: Serve, images: str) -> None:
    _, api = await serve(concurrent=2)
    body = {"prompt": "blend them", "image_input": [f"{images}/ok.png", f"{images}/photo.jpg"]}
    reply = await api.submit(json=body)
    assert reply.status == 200, reply.body
    record = await api.wait_for(reply.data["generationId"], "succeeded")
    generation_id = record["generationId"]
    assert record["imageInput"] == [
        f"input/{generation_id}/user_upload_image_1.png",
        f"input/{generation_id}/user_upload_image_2.jpg",
    ]
    # The emulator's own output URLs are valid inputs too.
    again = await api.submit(json={"prompt": "again", "image_input": record["outputImages"]})
    assert again.status == 200, again.body


@pytest.mark.parametrize("path", ["/missing.png", "/page.html", "/slow.png", "unreachable"])
async def test_image_download_failures(serve: Serve, images: str, path: str) -> None:
    emulator, api = await serve(image_fetch_timeout=0.1)
    if path == "unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.png"
    else:
        url = images + path
    reply = await api.submit(json={"prompt": "from a url", "image_input": [url]})
    assert (reply.status, reply.error) == (400, "IMAGE_DOWNLOAD_FAILED")
    assert reply.body["message"].startswith("Could not download image from the provided URL.")
    assert emulator.generations(api.token) == []


async def test_a_data_uri_that_is_not_an_image(serve: Serve) -> None:
    _, api = await serve()
    reply = await api.submit(json={"prompt": "p", "image_input": [data_uri(b"plain text")]})
    assert reply.error == "IMAGE_DOWNLOAD_FAILED"


async def test_image_size_limits(serve: Serve, images: str) -> None:
    emulator, api = await serve(max_image_bytes=2048, max_total_image_bytes=4096, credits=10)
    just_fits = FAKE_PNG + bytes(2048 - len(FAKE_PNG))
    reply = await api.submit(json={"prompt": "p", "image_input": [data_uri(just_fits)] * 2})
    assert reply.status == 200, reply.body
    await api.wait_for(reply.data["generationId"], "succeeded")

    one_over = data_uri(just_fits + b"!")
    reply = await api.submit(json={"prompt": "p", "image_input": [one_over]})
    assert (reply.status, reply.error) == (400, "IMAGE_SIZE_LIMIT_EXCEEDED")
    assert reply.body["message"] == "Image 1 size exceeds 0.00195312MB limit. Current size: 0.00MB."

    reply = await api.submit(json={"prompt": "p", "image_input": [data_uri(just_fits)] * 3})
    assert reply.error == "IMAGE_SIZE_LIMIT_EXCEEDED"
    assert reply.body["message"].startswith("Total image size exceeds")

    reply = await api.submit(json={"prompt": "p", "image_input": [f"{images}/big.png"]})
    assert reply.error == "IMAGE_SIZE_LIMIT_EXCEEDED"
    assert reply.body["message"].startswith("Image 1 size exceeds")
    assert emulator.credits(api.token)["total"] == 8  # only the first was charged


async def test_size_messages_in_megabytes(serve: Serve) -> None:
    _, api = await serve()

    async def submit_large(images: list[str]) -> str:
        # A stream, because aiohttp warns about sending megabytes of raw bytes at once.
        body = io.BytesIO(json.dumps({"prompt": "p", "image_input": images}).encode())
        headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
        reply = await api.call("POST", "/image-generation/bfl/flux-dev", data=body, headers=headers)
        assert reply.error == "IMAGE_SIZE_LIMIT_EXCEEDED"
        message: str = reply.body["message"]
        return message

    image = data_uri(FAKE_PNG[:8] + bytes(int(10.5 * 1024 * 1024) - 8))
    assert await submit_large([image]) == (
        "Image 1 size exceeds 10MB limit. Current size: 10.50MB."
    )
    part = data_uri(FAKE_PNG[:8] + bytes(7 * 1024 * 1024 - 8))
    assert await submit_large([part] * 3) == (
        "Total image size exceeds 20MB limit. Current total: 21.00MB."
    )


# Webhooks, stats, every code, CLI.


async def test_webhooks_are_signed(serve: Serve) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = anyio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Webhook-Signature"]))
        if len(received) == 2:
            arrived.set()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with TestServer(app) as receiver:
        secret = "whsec_" + "ab" * 16
        emulator, api = await serve(
            concurrent=2, webhook_url=str(receiver.make_url("/hook")), webhook_secret=secret
        )
        emulator.faults.fail_generations(1, reason="no")
        failing = (await api.submit()).data["generationId"]
        succeeding = (await api.submit()).data["generationId"]
        with anyio.fail_after(3):
            await arrived.wait()
    events = {}
    for body, header in received:
        fields = dict(part.split("=", 1) for part in header.split(","))
        expected = hmac.new(
            secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(fields["v1"], expected)
        assert abs(int(fields["t"]) - time.time()) < 5
        event = json.loads(body)
        events[event["data"]["generationId"]] = event
    assert events[failing]["type"] == "generation.failed"
    assert events[failing]["data"]["failureReason"] == "no"
    assert events[succeeding]["type"] == "generation.completed"
    assert events[succeeding]["data"]["status"] == "succeeded"


async def test_stats(serve: Serve) -> None:
    emulator, api = await serve(accounts=2, submissions=2, concurrent=5)
    other = emulator.tokens[1]
    before = time.time()
    for _ in range(3):
        await api.submit()
    await api.get("/status")
    await api.get("/status", token=other)
    await api.get("/nowhere")
    stats = emulator.stats
    assert stats.requests[("POST", "/api/v1/image-generation/{modelIdentifier}")] == 3
    assert stats.requests[("GET", "/api/v1/status")] == 2
    assert stats.requests[("GET", "<unmatched>")] == 1
    assert stats.created == {api.token: 2}
    assert stats.throttled[api.token] == {"RATE_LIMIT_ERROR": 1}
    assert stats.max_in_progress[api.token] == 2
    arrivals = stats.arrivals[api.token]
    assert len(arrivals) == 3 and arrivals == sorted(arrivals)
    assert before <= arrivals[0] <= time.time()
    assert stats.errors == {"RATE_LIMIT_ERROR": 1, "NOT_FOUND": 1}
    stats.reset()
    assert stats.created == {} and stats.requests == {}


async def test_every_seed_code_by_its_real_cause(serve: Serve, images: str) -> None:
    emulator, api = await serve(
        accounts=4, credits=3, submissions=2, concurrent=1, processing_time=0.3,
        max_image_bytes=1024,
    )  # fmt: skip
    _, revoked, deleted, busy = emulator.tokens
    emulator.revoke(revoked)
    emulator.delete_account(deleted)
    post = f"/image-generation/{'google/nano-banana'}"
    auth = {"Authorization": f"Bearer {api.token}"}
    replies = [
        await api.get("/status", token=revoked),
        await api.get("/status", headers={}),
        await api.get("/status", token="bye_zz"),
        await api.call("POST", post, data=b"{", headers=auth),
        await api.submit(json={"prompt": ""}),
        await api.get("/image-generation/not-a-uuid"),
        await api.submit(json={"prompt": "nude"}),
        await api.submit(json={"prompt": "p", "image_input": [data_uri(FAKE_PNG + bytes(2000))]}),
        await api.submit(json={"prompt": "p", "image_input": [f"{images}/missing.png"]}),
        await api.submit(json={"prompt": "p", "output_number": 2}),
        await api.get("/status", token=deleted),
        await api.get("/image-generation/00000000-0000-4000-8000-000000000000"),
    ]
    await api.submit(token=busy)
    replies.append(await api.submit(token=busy))  # concurrency
    emulator.set_credits(busy, 100)
    await anyio.sleep(0.4)
    await api.submit(token=busy)
    replies.append(await api.submit(token=busy))  # window (2 per window)
    for code in READ_FAILURES:
        emulator.faults.fail_reads(1, code)
        replies.append(await api.get("/data/account"))
    for code in SUBMISSION_FAILURES:
        emulator.faults.fail_submissions(1, code)
        replies.append(await api.submit())
    seen = {reply.error: reply.status for reply in replies}
    assert seen == SEED_CODES
    assert set(emulator.stats.errors) == set(SEED_CODES)


async def test_command_line() -> None:
    token = "bye_" + "c0ffee" * 5 + "00"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    command = [sys.executable, "-m", "asyncsdk.emulator", "--port", "0", "--token", token]
    command += ["--accounts", "2", "--time-scale", "0.1"]
    async with await anyio.open_process(command, env=env) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(10):
            while b"Ctrl-C" not in output:
                output += await process.stdout.receive()
        lines = output.decode().splitlines()
        base_url = lines[0].split()[-1]
        tokens = [line.split()[-1] for line in lines if line.strip().startswith("token")]
        assert tokens[0] == token and len(tokens) == 2
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base_url}/status", headers={"X-API-Key": token}) as response,
        ):
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(5):
            assert await process.wait() == 0
