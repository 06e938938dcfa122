"""The web example's endpoints through httpx's ASGI transport, against the emulator."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from asyncsdk import webhooks
from asyncsdk.emulator import Emulator

from . import SLOW, WAIT, need, parse_sse
from .conftest import AsgiApp, AsgiFactory

need("fastapi", "the web example's framework")
need("httpx", "the ASGI test client")

from examples.web.app import create_app, error_body  # noqa: E402

pytestmark = pytest.mark.anyio

UUID_UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def submit(app: AsgiApp, prompt: str = "a red kite at dawn", **body: Any) -> str:
    reply = await app.http.post("/generations", json={"prompt": prompt, **body})
    assert reply.status_code == 202, reply.text
    generation_id: str = reply.json()["generation_id"]
    assert reply.headers["location"] == f"/generations/{generation_id}"
    return generation_id


async def events_of(app: AsgiApp, generation_id: str) -> list[tuple[str, Any]]:
    with anyio.fail_after(WAIT):
        reply = await app.http.get(f"/generations/{generation_id}/events")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    return parse_sse(reply.text)


# -- the page and the mode ------------------------------------------------------------------------


async def test_the_page_is_served(asgi: AsgiFactory) -> None:
    app = await asgi()
    reply = await app.http.get("/")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    for marker in ('id="prompt"', 'id="status"', 'id="images"', 'id="recent"', "EventSource"):
        assert marker in reply.text


async def test_without_a_key_the_app_runs_the_emulator_and_says_so(
    asgi: AsgiFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="examples.web"):
        app = await asgi()
    assert app.services.emulator is not None
    assert any(
        "emulator" in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records
    )
    info = (await app.http.get("/info")).json()
    assert info["mode"] == "emulator"
    assert "BABYSEA_API_KEY" in info["notice"] and "emulator" in info["notice"]
    assert "google/nano-banana" in info["models"] and info["default_model"] == "google/nano-banana"
    assert info["webhooks"] is True and info["active_streams"] == 0


async def test_with_a_key_the_app_uses_the_service_and_one_client() -> None:
    httpx = need("httpx", "the ASGI test client")
    async with Emulator(time_scale=0.05) as emulator:
        from examples.web.app import Settings

        settings = Settings(api_key=emulator.tokens[0], base_url=emulator.base_url)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            services = app.state.services
            client = services.client
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                info = (await http.get("/info")).json()
                assert info["mode"] == "service" and info["notice"] is None
                assert info["base_url"] == emulator.base_url and info["webhooks"] is False
                for _ in range(3):
                    assert (await http.get("/generations")).status_code == 200
                assert app.state.services.client is client  # one client, not one per request
                # Without a webhook secret the endpoint says so instead of accepting anything.
                reply = await http.post("/webhooks/babysea", content=b"{}")
                assert reply.status_code == 503 and reply.json()["error"] == "WEBHOOKS_DISABLED"
        assert services.emulator is None
        assert "closed" in repr(client)  # closed at shutdown


async def test_settings_from_the_environment() -> None:
    from examples.web.app import Settings

    settings = Settings.from_env(
        {"BABYSEA_API_KEY": " bye_x ", "BABYSEA_BASE_URL": "https://b", "WEB_PORT": "9000"}
    )
    assert (settings.api_key, settings.base_url) == ("bye_x", "https://b")
    assert settings.public_url == "http://127.0.0.1:9000"
    assert Settings.from_env({"BABYSEA_API_KEY": "  "}).api_key is None
    assert Settings.from_env({"WEB_PUBLIC_URL": "https://me"}).public_url == "https://me"


# -- generations -----------------------------------------------------------------------------


async def test_submit_get_and_list(asgi: AsgiFactory) -> None:
    app = await asgi()
    generation_id = await submit(
        app,
        model="bfl/flux-schnell",
        options={"aspect_ratio": "16:9", "output_number": 2, "seed": 7},
    )
    record = (await app.http.get(f"/generations/{generation_id}")).json()
    assert record["generation_id"] == generation_id
    assert record["model_provider"] == "bfl/flux-schnell"
    assert record["aspect_ratio"] == "16:9" and record["output_number"] == 2
    page = (await app.http.get("/generations")).json()
    assert [g["generation_id"] for g in page["generations"]] == [generation_id]
    assert page["total"] == 1
    assert (await app.http.get("/generations", params={"limit": 1})).json()["limit"] == 1


async def test_the_event_stream_follows_a_generation_to_its_final_record(
    asgi: AsgiFactory,
) -> None:
    app = await asgi()
    generation_id = await submit(app, options={"output_number": 2})
    events = await events_of(app, generation_id)
    names = [name for name, _ in events]
    statuses = [data["status"] for name, data in events if name == "status"]
    assert names[-1] == "done" and names.count("done") == 1
    assert statuses[-1] == "succeeded" and "starting" not in statuses[1:]
    assert len(statuses) == len(set(statuses))  # one event per transition
    final = events[-1][1]
    assert final["status"] == "succeeded" and len(final["output_images"]) == 2
    assert app.services.active_streams == 0
    # A finished generation streams its final state at once.
    again = await events_of(app, generation_id)
    assert [name for name, _ in again] == ["status", "done"]


async def test_the_event_stream_of_a_failed_generation(asgi: AsgiFactory) -> None:
    app = await asgi(emulator={"processing_time": 100.0, "generation_timeout": 4.0})
    generation_id = await submit(app)
    name, final = (await events_of(app, generation_id))[-1]
    assert name == "done" and final["status"] == "failed" and final["failure_reason"]


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_a_disconnecting_client_stops_its_stream(
    asgi: AsgiFactory, spec_version: str
) -> None:
    """Hang up after the first event while the generation still runs (raw ASGI calls).

    Servers on ASGI 2.4 also make ``send`` raise ``OSError`` once the client is gone.
    """
    app = await asgi(**SLOW)
    generation_id = await submit(app)
    hung_up = anyio.Event()
    requested = False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if hung_up.is_set() and spec_version == "2.4":
            raise OSError("the client is gone")
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            assert app.services.active_streams == 1
            hung_up.set()

    path = f"/generations/{generation_id}/events"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"accept", b"text/event-stream")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    with anyio.fail_after(WAIT):  # without the hang-up the stream would last ~50 s
        await app.app(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 1 and b"event: status" in bodies[0]["body"]
    assert app.services.active_streams == 0
    record = (await app.http.get(f"/generations/{generation_id}")).json()
    assert record["status"] in ("starting", "processing")  # it was cut, not finished


# -- errors are readable JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({}, 400, "VALIDATION_ERROR", "prompt"),
        ({"prompt": ""}, 400, "VALIDATION_ERROR", "prompt"),
        ({"prompt": "x" * 2001}, 400, "VALIDATION_ERROR", "prompt"),
        ({"prompt": "a kite", "model": "nonsense"}, 400, "VALIDATION_ERROR", "lab/model"),
        ({"prompt": "a kite", "model": "acme/none"}, 400, "VALIDATION_ERROR", None),
        ({"prompt": "a nude kite"}, 400, "NSFW_CONTENT_DETECTED", "policy"),
        ({"prompt": "a", "options": {"aspect_ratio": "7:5"}}, 400, "VALIDATION_ERROR", None),
        ({"prompt": "a", "options": {"images": "/etc/passwd"}}, 400, "VALIDATION_ERROR", "URL"),
        ({"prompt": "a", "options": {"prompt": "b"}}, 400, "VALIDATION_ERROR", "prompt"),
        ({"prompt": "a", "options": {"model": "b/c"}}, 400, "VALIDATION_ERROR", "model"),
    ],
)
async def test_bad_submissions(
    asgi: AsgiFactory, body: dict[str, Any], status: int, code: str, words: str | None
) -> None:
    app = await asgi()
    reply = await app.http.post("/generations", json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()
    assert error["error"] == code and error["message"]
    assert "Traceback" not in reply.text
    if words:
        assert words.lower() in error["message"].lower()


async def test_a_body_that_is_not_json(asgi: AsgiFactory) -> None:
    app = await asgi()
    reply = await app.http.post(
        "/generations", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400 and reply.json()["error"] == "VALIDATION_ERROR"


async def test_insufficient_credits(asgi: AsgiFactory) -> None:
    app = await asgi(emulator={"credits": 0})
    reply = await app.http.post("/generations", json={"prompt": "a kite"})
    assert reply.status_code == 402 and reply.json()["error"] == "INSUFFICIENT_CREDITS"
    assert reply.json()["request_id"]


@pytest.mark.parametrize("suffix", ["", "/events"])
@pytest.mark.parametrize(
    ("generation_id", "code"),
    [(UUID_UNKNOWN, "GENERATION_NOT_FOUND"), ("not-a-uuid", "INVALID_GENERATION_ID")],
)
async def test_unknown_generations(
    asgi: AsgiFactory, generation_id: str, code: str, suffix: str
) -> None:
    app = await asgi()
    reply = await app.http.get(f"/generations/{generation_id}{suffix}")
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"] == code
    assert app.services.active_streams == 0


async def test_unknown_routes_and_methods(asgi: AsgiFactory) -> None:
    app = await asgi()
    reply = await app.http.get("/nowhere")
    assert reply.status_code == 404 and reply.json()["error"] == "NOT_FOUND"
    reply = await app.http.delete("/generations")
    assert reply.status_code == 405 and reply.json()["error"] == "METHOD_NOT_ALLOWED"
    reply = await app.http.get("/generations", params={"limit": 0})
    assert reply.status_code == 400 and reply.json()["error"] == "VALIDATION_ERROR"


async def test_an_unreachable_or_refusing_service_is_a_502() -> None:
    import asyncsdk

    status, body, _ = error_body(asyncsdk.APIConnectionError("connection refused"))
    assert (status, body["error"]) == (502, "UPSTREAM_UNREACHABLE")
    status, body, _ = error_body(asyncsdk.APITimeoutError("slow"))
    assert (status, body["error"]) == (504, "UPSTREAM_TIMEOUT")
    refused = asyncsdk.AuthenticationError("bad key", status=401, code="INVALID_API_TOKEN")
    status, body, _ = error_body(refused)
    assert (status, body["error"]) == (502, "INVALID_API_TOKEN")
    status, body, headers = error_body(
        asyncsdk.RateLimitError("slow down", status=429, code="RATE_LIMIT_ERROR", reset_at=1e12)
    )
    assert status == 429 and int(headers["Retry-After"]) >= 1
    status, body, _ = error_body(RuntimeError("secret internals"))
    assert status == 500 and "secret internals" not in body["message"]


async def test_an_unexpected_error_is_a_readable_500(
    asgi: AsgiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpx = need("httpx", "the ASGI test client")
    app = await asgi()

    async def broken(**_: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.services.client, "list_generations", broken)
    # Starlette re-raises after answering so that the server logs it; httpx may ignore that.
    transport = httpx.ASGITransport(app=app.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        reply = await http.get("/generations")
    assert reply.status_code == 500 and reply.json()["error"] == "INTERNAL_ERROR"
    assert "secret internals" not in reply.text and "Traceback" not in reply.text


# -- webhooks at the app's endpoint -------------------------------------------------------------


async def post_webhook(app: AsgiApp, body: bytes, header: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[webhooks.SIGNATURE_HEADER] = header
    return await app.http.post("/webhooks/babysea", content=body, headers=headers)


async def test_webhook_endpoint_accepts_good_and_rejects_bad_deliveries(
    asgi: AsgiFactory,
) -> None:
    app = await asgi()
    generation_id = await submit(app)
    record = (await app.http.get(f"/generations/{generation_id}")).json()
    event = {
        "id": "evt_a",
        "type": "generation.completed",
        "created": 1750000000,
        "data": {"generationId": generation_id, "status": "succeeded", "prompt": record["prompt"]},
    }
    body = json.dumps(event).encode()
    secret = app.services.webhook_secret
    assert secret is not None and secret.startswith("whsec_")

    cases = [
        (body, webhooks.sign(body, secret), 200, None),
        (body + b" ", webhooks.sign(body, secret), 400, "WEBHOOK_BAD_SIGNATURE"),
        (body, webhooks.sign(body, "whsec_wrong"), 400, "WEBHOOK_BAD_SIGNATURE"),
        (body, webhooks.sign(body, secret, timestamp=1), 400, "WEBHOOK_STALE_TIMESTAMP"),
        (body, None, 400, "WEBHOOK_MALFORMED_SIGNATURE"),
        (body, "t=1", 400, "WEBHOOK_MALFORMED_SIGNATURE"),
        (b"[]", webhooks.sign(b"[]", secret), 400, "WEBHOOK_MALFORMED_PAYLOAD"),
    ]
    for raw, header, status, code in cases:
        reply = await post_webhook(app, raw, header)
        assert reply.status_code == status, (raw, header, reply.text)
        if code:
            assert reply.json()["error"] == code and reply.json()["message"]
    events = (await app.http.get("/webhooks/events")).json()["events"]
    assert len(events) == 1
    assert events[0]["id"] == "evt_a" and events[0]["type"] == "generation.completed"
    assert events[0]["generation"]["generation_id"] == generation_id
    # A repeated delivery of the same event is acknowledged once more but recorded once.
    reply = await post_webhook(app, body, webhooks.sign(body, secret))
    assert reply.json() == {"received": True, "duplicate": True}
    assert len((await app.http.get("/webhooks/events")).json()["events"]) == 1
