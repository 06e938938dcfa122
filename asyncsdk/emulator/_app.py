"""The HTTP layer: routes, the one middleware, handlers, image files and webhooks.

Routes (``API = /api/v1``)::

    GET  API/status                          Status Check (adds top-level "message")
    GET  API/data/account                    Account Info
    GET  API/data/list/image?limit=&offset=  List All Images (limit 1-100 = 20, offset >= 0 = 0)
    GET  API/image-generation/{generationId} Check Image Status
    POST API/image-generation/{modelIdentifier:.+}   submission; the identifier keeps its slash
    GET  /files/{generationId}/{n}.png       output image n (1-based) of a succeeded generation
    GET  /files/avatars/{accountId}.png      the account's `pictureUrl`

Files need no authentication (they stand for the service's public storage bucket) and are
addressed from the origin of the request that read the record, so the URLs work whatever host
and port the client used. Outputs are always PNG, whatever `output_format` asked for (the
emulator has no JPEG/WebP encoder); they are rendered on demand and cached.

The middleware wraps every request, matched or not, in this order: count the request in
`stats.requests`; for API routes only, consume the request faults in `_faults`' order (delay,
outage, echoed headers, scripted 500, drop before create: all before authentication); run the
handler; garble a successful read if scripted; render an `ApiError` (or aiohttp's own
404/405/413, or an unexpected exception as INTERNAL_SERVER_ERROR) as the error envelope; strip
the rate-limit hints if scripted; record a submission that created nothing in
`stats.not_created`; finally stamp a fresh uuid4 `X-Request-ID` on the response. Each fault is
decided once, by its ``Faults._take_*`` method, and counted in `stats.faults`.

A submission (POST) runs: authentication (401/404) -> record the arrival in `stats.arrivals`
-> `_inputs.parse_submission` (400s) -> `_inputs.load_images` (400s) -> `State.submit`
(429 window, 429 concurrency, 402 credits, then create). Every POST answer after
authentication carries X-RateLimit-Limit/-Remaining/-Reset as of the moment it is sent; 429s
add Retry-After: for RATE_LIMIT_ERROR the wait until the window frees a place, for
CONCURRENT_GENERATION_ERROR the wait until the soonest in-progress generation ends as scheduled
(both whole seconds rounded up, at least 1). Success is HTTP 200 with
``{"generationId", "status": "starting", "creditCost"}``; `creditCost` is the model's
per-image cost times `output_number`. A dropped submission (fault) closes the transport after
creating the generation, so the client reads end-of-stream instead of a response; a garbled one
answers 200 with an unreadable body (see `_garbled`), rate-limit headers included.

Fault pages: an outage's ``html503`` is a 503 text/html page; an echo is a text/html page (or a
JSON envelope with code INTERNAL_SERVER_ERROR) listing every request header verbatim; a
``timeout`` outage holds the request until the outage ends and then closes the transport.
List All Images hides generations younger than `Faults.list_lag` (its `total` too).

Webhooks (when configured): each generation but those with an unknown status (a fault) gets
one timer at its `ends_at`; it POSTs ``{"id": "evt_...", "type": "generation.completed" |
"generation.failed", "created": <unix>, "data": <the Check Image Status record>}`` to
`webhook_url` with
``X-Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``; the whole
secret string (``whsec_...`` included) is the key. One attempt (10 s timeout); delivery errors
are logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

import aiohttp
from aiohttp import web

from ._errors import ApiError, validation_error
from ._faults import Echo, Endpoint, GarbleKind
from ._inputs import load_images, parse_submission
from ._png import render
from ._state import Account, Generation, Json, State, iso_utc

API: Final = "/api/v1"
UNMATCHED: Final = "<unmatched>"
HTTP_CODES: Final = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}
QUERY_INT: Final = re.compile(r"[0-9]{1,9}")
WEBHOOK_TIMEOUT: Final = aiohttp.ClientTimeout(total=10.0)
SUBMIT_ROUTE: Final = f"{API}/image-generation/{{modelIdentifier}}"
LIST_ROUTE: Final = f"{API}/data/list/image"
STATUS_ROUTE: Final = f"{API}/image-generation/{{generationId}}"
HINT_HEADERS: Final = (
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
)  # fmt: skip
UNAVAILABLE_PAGE: Final = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    "<center><h1>503 Service Temporarily Unavailable</h1></center><hr>"
    "<center>load balancer: no healthy upstream</center></body></html>\n"
)
OK_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>BabySea</title></head><body>"
    "<p>Something went right, but this is not the API answer.</p></body></html>\n"
)

logger = logging.getLogger("asyncsdk.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    state: State, *, webhook_url: str | None = None, webhook_secret: str | None = None
) -> web.Application:
    """An aiohttp application serving `state` (several apps may share one state)."""
    server = _Server(state, webhook_url, webhook_secret)
    settings = state.settings
    # Room for the largest image payload worth answering IMAGE_SIZE_LIMIT_EXCEEDED to:
    # base64 inflates by 4/3, and an over-limit total must still be readable.
    body_cap = (settings.max_total_image_bytes + settings.max_image_bytes) * 4 // 3 + 1024 * 1024
    app = web.Application(middlewares=[server.middleware], client_max_size=body_cap)
    app.cleanup_ctx.append(server.lifetime)
    app.router.add_get(f"{API}/status", server.status)
    app.router.add_get(f"{API}/data/account", server.account)
    app.router.add_get(LIST_ROUTE, server.list_images)
    app.router.add_get(STATUS_ROUTE, server.get_generation)
    app.router.add_post(f"{API}/image-generation/{{modelIdentifier:.+}}", server.submit)
    app.router.add_get("/files/avatars/{accountId}.png", server.avatar)
    app.router.add_get(r"/files/{generationId}/{index:\d+}.png", server.output_image)
    return app


def _ok(data: Json, **top: Any) -> web.Response:
    return web.json_response({"success": True, **top, "data": data})


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


class _Server:
    """Handlers bound to one state; owns the app's client session and webhook timers."""

    def __init__(self, state: State, webhook_url: str | None, webhook_secret: str | None):
        self.state = state
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self._session: aiohttp.ClientSession | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._deliveries: set[asyncio.Task[None]] = set()

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            self._session = session
            yield
            for timer in self._timers.values():
                timer.cancel()
            for task in self._deliveries:
                task.cancel()
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the emulator app is not running")
        return self._session

    # The one middleware.

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        stats = self.state.stats
        stats.requests[(request.method, route)] += 1
        endpoint = _endpoint(request.method, route)
        refusal: str | None = None  # why a submission created nothing
        try:
            early = await self._request_faults(request, endpoint) if endpoint else None
            if early is not None:
                refusal, response = early
            else:
                response = await handler(request)
                if endpoint is not None and endpoint != "submit":
                    response = self._garble_read(endpoint, response)
        except ApiError as exc:
            refusal, response = exc.code, self._error(exc)
        except web.HTTPException as exc:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            code = HTTP_CODES.get(exc.status, "INTERNAL_SERVER_ERROR")
            refusal, response = code, self._error(ApiError(code, headers=allow))
        except Exception:
            logger.exception("emulator bug while handling %s %s", request.method, request.path)
            refusal, response = (
                "INTERNAL_SERVER_ERROR",
                self._error(ApiError("INTERNAL_SERVER_ERROR")),
            )
        if endpoint is not None:
            self._strip_hints(response)
        if endpoint == "submit" and refusal is not None:
            headers = request.headers
            account = self.state.known_account(
                headers.get("Authorization"), headers.get("X-API-Key")
            )
            if account is not None:
                stats.not_created[account.token][refusal] += 1
        response.headers["X-Request-ID"] = str(uuid.uuid4())
        return response

    async def _request_faults(
        self, request: web.Request, endpoint: Endpoint
    ) -> tuple[str, web.StreamResponse] | None:
        """The faults that strike before the handler: (fault name, answer), or None."""
        faults, stats, method = self.state.faults, self.state.stats, request.method
        seconds = faults._take_delay(method)
        if seconds:
            stats.faults["delay"] += 1
            # The request has arrived whole before the wait (a slow back end, not a slow
            # upload): it is handled after the wait even if the client gave up meanwhile.
            await request.read()
            await asyncio.sleep(seconds)
        outage = faults._take_outage(endpoint)
        if outage is not None:
            stats.faults["outage"] += 1
            if outage.kind == "500":
                return "outage", self._error(ApiError("INTERNAL_SERVER_ERROR"))
            if outage.kind == "html503":
                page = web.Response(status=503, text=UNAVAILABLE_PAGE, content_type="text/html")
                return "outage", page
            await asyncio.sleep(faults._remaining(outage))
            return "outage", _hang_up(request)
        echo = faults._take_echo(method)
        if echo is not None:
            stats.faults["echo_headers"] += 1
            return "echo_headers", _echo_page(request, echo)
        code = faults._take_request_failure(endpoint)
        if code is not None:
            stats.faults["fail_submissions" if endpoint == "submit" else "fail_reads"] += 1
            raise ApiError(code)
        if endpoint == "submit" and faults._take_drop_before():
            stats.faults["drop_before_create"] += 1
            return "drop_before_create", _hang_up(request)
        return None

    def _garble_read(self, endpoint: Endpoint, response: web.StreamResponse) -> web.StreamResponse:
        if response.status != 200 or not isinstance(response, web.Response):
            return response
        if not isinstance(response.body, bytes) or response.content_type != "application/json":
            return response
        kind = self.state.faults._take_garbled_read(endpoint)
        if kind is None:
            return response
        self.state.stats.faults["garble_reads"] += 1
        return _garbled(kind, json.loads(response.body), ("generationId", "status"))

    def _strip_hints(self, response: web.StreamResponse) -> None:
        headers = response.headers
        if any(name in headers for name in HINT_HEADERS) and self.state.faults._take_strip():
            self.state.stats.faults["strip_rate_limit_headers"] += 1
            for name in HINT_HEADERS:
                headers.popall(name, None)

    def _error(self, exc: ApiError) -> web.Response:
        self.state.stats.errors[exc.code] += 1
        body = {"success": False, "error": exc.code, "message": exc.message}
        return web.json_response(body, status=exc.status, headers=exc.headers)

    def _authenticate(self, request: web.Request) -> Account:
        headers = request.headers
        return self.state.authenticate(headers.get("Authorization"), headers.get("X-API-Key"))

    # API handlers.

    async def status(self, request: web.Request) -> web.Response:
        account = self._authenticate(request)
        data = {
            "accountId": account.id,
            "apiKeyId": account.key_id,
            "apiKeyName": f"Emulator key {account.number}",
            "timestamp": iso_utc(self.state.wall()),
        }
        return _ok(data, message="API connection successful")

    async def account(self, request: web.Request) -> web.Response:
        account = self._authenticate(request)
        created = iso_utc(account.created)
        return _ok(
            {
                "account": {
                    "id": account.id,
                    "name": f"Emulator Account {account.number}",
                    "email": f"account{account.number}@emulator.babysea.invalid",
                    "isPersonalAccount": True,
                    "pictureUrl": f"{_origin(request)}/files/avatars/{account.id}.png",
                    "createdAt": created,
                },
                "credits": account.credits(),
                "apiKey": {
                    "name": f"Emulator key {account.number}",
                    "prefix": account.token[:12],
                    "createdAt": created,
                },
            }
        )

    async def list_images(self, request: web.Request) -> web.Response:
        account = self._authenticate(request)
        limit = _query_int(request, "limit", default=20, low=1, high=100)
        offset = _query_int(request, "offset", default=0, low=0, high=None)
        lag, now = self.state.faults._visible_after(), self.state.clock()
        generations = [
            generation
            for generation in self.state.newest_first(account)
            if now - generation.created >= lag
        ]
        origin = _origin(request)
        page = [
            self.state.record(generation, origin, listing=True)
            for generation in generations[offset : offset + limit]
        ]
        return _ok(
            {"generations": page, "total": len(generations), "limit": limit, "offset": offset}
        )

    async def get_generation(self, request: web.Request) -> web.Response:
        account = self._authenticate(request)
        generation = self.state.lookup(account, request.match_info["generationId"])
        return _ok(self.state.record(generation, _origin(request)))

    async def submit(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        account = self._authenticate(request)
        state.stats.arrivals[account.token].append(state.wall())
        try:
            submission = parse_submission(
                request.match_info["modelIdentifier"], await request.read(), state.settings
            )
            kinds = await load_images(self.session, submission.image_input, state.settings)
            generation = state.submit(account, submission, kinds)
        except ApiError as exc:
            exc.headers.update(state.rate_headers(account))
            raise
        self._schedule_webhook(generation, _origin(request))
        after = state.faults._take_after_create()
        if after == "drop":
            state.stats.faults["drop_after_create"] += 1
            return _hang_up(request)
        payload: Json = {
            "success": True,
            "data": {
                "generationId": generation.id,
                "status": "starting",
                "creditCost": generation.credit_cost,
            },
        }
        if after is None:
            response = web.json_response(payload)
        else:
            state.stats.faults["garble_submissions"] += 1
            response = _garbled(after, payload, ("generationId",))
        response.headers.update(state.rate_headers(account))
        return response

    # Files.

    async def output_image(self, request: web.Request) -> web.Response:
        found = self.state.image(
            request.match_info["generationId"], int(request.match_info["index"])
        )
        if found is None:
            raise ApiError("NOT_FOUND")
        return _png(render(*found))

    async def avatar(self, request: web.Request) -> web.Response:
        account_id = request.match_info["accountId"]
        if not any(account.id == account_id for account in self.state.accounts.values()):
            raise ApiError("NOT_FOUND")
        return _png(render(f"avatar\x00{account_id}"))

    # Webhooks.

    def _schedule_webhook(self, generation: Generation, origin: str) -> None:
        if self.webhook_url is None or generation.final_status is not None:
            return
        delay = max(0.0, generation.ends_at - self.state.clock())
        loop = asyncio.get_running_loop()
        self._timers[generation.id] = loop.call_later(delay, self._fire, generation, origin)

    def _fire(self, generation: Generation, origin: str) -> None:
        if generation.running(self.state.clock()):
            # The loop's timer may run a hair early relative to the state clock.
            self._timers[generation.id] = asyncio.get_running_loop().call_later(
                0.001, self._fire, generation, origin
            )
            return
        del self._timers[generation.id]
        task = asyncio.get_running_loop().create_task(self._deliver(generation, origin))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, generation: Generation, origin: str) -> None:
        assert self.webhook_url is not None
        record = self.state.record(generation, origin)
        kind = "completed" if record["status"] == "succeeded" else "failed"
        now = int(self.state.wall())
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "type": f"generation.{kind}",
            "created": now,
            "data": record,
        }
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret is not None:
            signed = f"{now}.".encode() + body
            digest = hmac.new(self.webhook_secret.encode(), signed, hashlib.sha256).hexdigest()
            headers["X-Webhook-Signature"] = f"t={now},v1={digest}"
        try:
            async with self.session.post(
                self.webhook_url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT
            ) as reply:
                await reply.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("webhook delivery for %s failed: %r", generation.id, exc)


def _endpoint(method: str, route: str) -> Endpoint | None:
    """What a request to `route` is, for the faults (None: not an API route)."""
    if not route.startswith(API + "/"):
        return None
    if method == "POST":
        return "submit"
    if route == LIST_ROUTE:
        return "list"
    return "status" if route == STATUS_ROUTE else "read"


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection before anything is written: the client reads end-of-stream.

    The response returned only exists to satisfy aiohttp; it is never sent.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def _garbled(kind: GarbleKind, payload: Json, drop: tuple[str, ...]) -> web.Response:
    """A 200 answer carrying `payload` made unreadable as `kind` (see `Faults`).

    ``no_id`` removes the `drop` keys from ``payload["data"]``, or from each record of a list
    page.
    """
    if kind == "truncated":
        raw = json.dumps(payload).encode()
        return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
    if kind == "html":
        return web.Response(text=OK_PAGE, content_type="text/html")
    if kind == "empty":
        return web.Response(body=b"", content_type="application/json")
    data = payload.get("data")
    if isinstance(data, dict):
        records = data.get("generations")
        if isinstance(records, list):
            data["generations"] = [_without(record, drop) for record in records]
        else:
            payload["data"] = _without(data, drop)
    return web.json_response(payload)


def _without(record: Json, keys: tuple[str, ...]) -> Json:
    return {key: value for key, value in record.items() if key not in keys}


def _echo_page(request: web.Request, echo: Echo) -> web.Response:
    """A proxy's debug page printing every request header verbatim, credentials included."""
    lines = [f"{name}: {value}" for name, value in request.headers.items()]
    if echo.kind == "json":
        message = (
            f"Upstream request failed: {request.method} {request.path_qs}. "
            f"Request headers: {'; '.join(lines)}"
        )
        body = {"success": False, "error": "INTERNAL_SERVER_ERROR", "message": message}
        return web.json_response(body, status=echo.status)
    title = f"{echo.status} {_reason(echo.status)}"
    page = (
        f"<html><head><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>Upstream request failed:"
        f" {html.escape(request.method)} {html.escape(request.path_qs)}</p>"
        "<h2>Request headers</h2><pre>"
        + "\n".join(html.escape(line) for line in lines)
        + "</pre></body></html>\n"
    )
    return web.Response(status=echo.status, text=page, content_type="text/html")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _png(body: bytes) -> web.Response:
    # Outputs never change once rendered, like objects in a storage bucket.
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    return web.Response(body=body, content_type="image/png", headers=headers)


def _query_int(request: web.Request, name: str, *, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    bounds = f"{low}-{high}" if high is not None else f">= {low}"
    if not QUERY_INT.fullmatch(raw):
        raise validation_error(name, f"must be an integer {bounds}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise validation_error(name, f"must be an integer {bounds}")
    return value
