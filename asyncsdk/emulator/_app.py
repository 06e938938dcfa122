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
`stats.requests`; for API routes only, sleep a scripted delay, then answer a scripted 500 if
one is queued for the method (before authentication: see `_faults`); run the handler; render an
`ApiError` (or aiohttp's own 404/405/413, or an unexpected exception as INTERNAL_SERVER_ERROR)
as the error envelope; finally stamp a fresh uuid4 `X-Request-ID` on the response.

A submission (POST) runs: authentication (401/404) -> record the arrival in `stats.arrivals`
-> `_inputs.parse_submission` (400s) -> `_inputs.load_images` (400s) -> `State.submit`
(429 window, 429 concurrency, 402 credits, then create). Every POST answer after
authentication carries X-RateLimit-Limit/-Remaining/-Reset as of the moment it is sent; 429s
add Retry-After: for RATE_LIMIT_ERROR the wait until the window frees a place, for
CONCURRENT_GENERATION_ERROR the wait until the soonest in-progress generation ends as scheduled
(both whole seconds rounded up, at least 1). Success is HTTP 200 with
``{"generationId", "status": "starting", "creditCost"}``; `creditCost` is the model's
per-image cost times `output_number`. A dropped submission (fault) closes the transport after
creating the generation, so the client reads end-of-stream instead of a response.

Webhooks (when configured): each generation gets one timer at its `ends_at`; it POSTs
``{"id": "evt_...", "type": "generation.completed" | "generation.failed", "created": <unix>,
"data": <the Check Image Status record>}`` to `webhook_url` with
``X-Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``; the whole
secret string (``whsec_...`` included) is the key. One attempt (10 s timeout); delivery errors
are logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import aiohttp
from aiohttp import web

from ._errors import ApiError, validation_error
from ._inputs import load_images, parse_submission
from ._png import render
from ._state import Account, Generation, Json, State, iso_utc

API: Final = "/api/v1"
UNMATCHED: Final = "<unmatched>"
HTTP_CODES: Final = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}
QUERY_INT: Final = re.compile(r"[0-9]{1,9}")
WEBHOOK_TIMEOUT: Final = aiohttp.ClientTimeout(total=10.0)

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
    app.router.add_get(f"{API}/data/list/image", server.list_images)
    app.router.add_get(f"{API}/image-generation/{{generationId}}", server.get_generation)
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
        self.state.stats.requests[(request.method, route)] += 1
        try:
            if route.startswith(API + "/"):
                await self._request_faults(request.method)
            response = await handler(request)
        except ApiError as exc:
            response = self._error(exc)
        except web.HTTPException as exc:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            code = HTTP_CODES.get(exc.status, "INTERNAL_SERVER_ERROR")
            response = self._error(ApiError(code, headers=allow))
        except Exception:
            logger.exception("emulator bug while handling %s %s", request.method, request.path)
            response = self._error(ApiError("INTERNAL_SERVER_ERROR"))
        response.headers["X-Request-ID"] = str(uuid.uuid4())
        return response

    async def _request_faults(self, method: str) -> None:
        faults = self.state.faults
        seconds = faults._take_delay(method)
        if seconds:
            await asyncio.sleep(seconds)
        code = faults._take_request_failure(method)
        if code is not None:
            raise ApiError(code)

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
        generations = list(self.state.newest_first(account))
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
        if state.faults._take_drop():
            # Close before anything is written: the client reads EOF instead of a response,
            # and the response below only exists to satisfy aiohttp.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        response = _ok(
            {
                "generationId": generation.id,
                "status": "starting",
                "creditCost": generation.credit_cost,
            }
        )
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
        if self.webhook_url is None:
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
