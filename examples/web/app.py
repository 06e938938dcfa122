"""A small FastAPI application over asyncsdk: submit a prompt, watch it live, see the images.

Run it with ``make web`` or ``python -m examples.web`` (``uvicorn examples.web.app:app`` works
too), then open http://127.0.0.1:8000. Settings come from the environment (see
:meth:`Settings.from_env`); without ``BABYSEA_API_KEY`` the app starts the embedded emulator,
says so in its log and on the page, and points the emulator's signed webhooks at itself.

Shape of the application::

    lifespan ──► [Emulator] ──► one AsyncClient ──► app.state.services   (closed at shutdown)

    GET  /                              the page (static/index.html, no build step)
    GET  /info                          mode (emulator or service), notice, models
    POST /generations                   {"prompt", "model", "options"} -> the submission (202)
    GET  /generations                   recent generations, newest first
    GET  /generations/{id}              the record
    GET  /generations/{id}/events       Server-Sent Events: one "status" event per watch()
                                        transition, then "done" with the final record
                                        (or "error"); a client that disconnects stops it
    POST /webhooks/babysea              signed deliveries, checked by asyncsdk.webhooks.verify
    GET  /webhooks/events               the deliveries received, newest first

Every error answers ``{"error": CODE, "message": text}`` (plus ``request_id`` when the
service gave one) with a fitting HTTP status; the page shows the message, never a traceback.
JSON bodies use the SDK's snake_case attribute names.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import anyio
import attrs
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

import asyncsdk
from asyncsdk import webhooks
from asyncsdk.emulator import Emulator

__all__ = ["Services", "Settings", "app", "create_app"]

logger = logging.getLogger("examples.web")

STATIC: Final = Path(__file__).parent / "static"
DEFAULT_MODEL: Final = "google/nano-banana"
#: Models offered on the page when talking to the real service (any other can be typed).
SERVICE_MODELS: Final = ("google/nano-banana", "bfl/flux-schnell", "bfl/flux-1.1-pro")
WEBHOOK_PATH: Final = "/webhooks/babysea"
#: How many webhook deliveries the app remembers (they are only shown, not stored).
WEBHOOK_MEMORY: Final = 50


@dataclass(frozen=True)
class Settings:
    """The app's configuration; :meth:`from_env` reads it from the environment.

    :param api_key: the BabySea API key; ``None`` runs the embedded emulator instead.
    :param base_url: the API root (``None``: the SDK's default, or ``BABYSEA_BASE_URL``).
    :param webhook_secret: the endpoint secret of ``POST /webhooks/babysea`` (``whsec_...``);
        with the emulator a fresh one is generated when not given.
    :param public_url: where this app can be reached; the emulator delivers webhooks there.
    :param model: the model the page proposes first.
    :param time_scale: the emulator's clock compression (0.5: a generation takes ~2 s).
    :param poll_interval: the SDK's first status-poll interval (``None``: 0.1 s with the
        emulator, the SDK's default with the service).
    :param recent: how many generations ``GET /generations`` returns by default.
    :param emulator: extra keyword arguments for :class:`asyncsdk.emulator.Emulator`.
    """

    api_key: str | None = None
    base_url: str | None = None
    webhook_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    model: str = DEFAULT_MODEL
    time_scale: float = 0.5
    poll_interval: float | None = None
    recent: int = 12
    emulator: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """``BABYSEA_API_KEY``, ``BABYSEA_BASE_URL``, ``BABYSEA_WEBHOOK_SECRET``, and
        ``WEB_PUBLIC_URL`` (default ``http://$WEB_HOST:$WEB_PORT``, 127.0.0.1 and 8000)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name, "").strip() or None

        host, port = get("WEB_HOST") or "127.0.0.1", get("WEB_PORT") or "8000"
        return cls(
            api_key=get("BABYSEA_API_KEY"),
            base_url=get("BABYSEA_BASE_URL"),
            webhook_secret=get("BABYSEA_WEBHOOK_SECRET"),
            public_url=get("WEB_PUBLIC_URL") or f"http://{host}:{port}",
        )


@dataclass
class Services:
    """What the lifespan builds and every request uses: one client for the whole app."""

    settings: Settings
    client: asyncsdk.AsyncClient
    models: list[str]
    emulator: Emulator | None = None
    webhook_secret: str | None = None
    notice: str | None = None
    webhook_events: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=WEBHOOK_MEMORY)
    )
    active_streams: int = 0


class AppError(Exception):
    """An error answer of this app: HTTP status, code and a message meant for people."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


class GenerationRequest(BaseModel):
    """The body of ``POST /generations``; ``options`` go to ``AsyncClient.submit``."""

    prompt: str = Field(min_length=1, max_length=2000)
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


# -- serialisation ------------------------------------------------------------------------------


def _plain(_inst: object, _field: object, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def to_json(record: Any) -> dict[str, Any]:
    """An SDK model as JSON-ready data, with the SDK's attribute names."""
    data: dict[str, Any] = attrs.asdict(record, value_serializer=_plain)
    return data


#: What the service refuses because of the request itself: the visitor can fix it.
_REFUSED_REQUEST: Final = (
    asyncsdk.BadRequestError,
    asyncsdk.ContentPolicyError,
    asyncsdk.ImageInputError,
)


def error_body(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, ``{"error", "message"[, "request_id"]}`` and headers for an error."""
    if isinstance(exc, AppError):
        return exc.status, {"error": exc.code, "message": exc.message}, exc.headers
    if isinstance(exc, asyncsdk.APIError):
        headers: dict[str, str] = {}
        if isinstance(exc, asyncsdk.RateLimitError):
            status = 429
            if exc.reset_at is not None:
                headers["Retry-After"] = str(max(1, round(exc.reset_at - time.time())))
        elif isinstance(exc, asyncsdk.AuthenticationError):
            status = 502  # the service refused *this app's* key: not the visitor's fault
        elif isinstance(exc, asyncsdk.NotFoundError):
            status = 404
        elif isinstance(exc, asyncsdk.InsufficientCreditsError):
            status = 402
        elif isinstance(exc, _REFUSED_REQUEST):
            status = 400
        elif exc.status is not None and 400 <= exc.status < 500:
            status = exc.status
        else:
            status = 502
        body: dict[str, Any] = {
            "error": exc.code or type(exc).__name__,
            "message": exc.message,
        }
        if exc.request_id:
            body["request_id"] = exc.request_id
        return status, body, headers
    if isinstance(exc, asyncsdk.APITimeoutError):
        return 504, {"error": "UPSTREAM_TIMEOUT", "message": str(exc)}, {}
    if isinstance(exc, asyncsdk.APIConnectionError):
        return 502, {"error": "UPSTREAM_UNREACHABLE", "message": str(exc)}, {}
    if isinstance(exc, asyncsdk.AsyncSDKError):
        return 502, {"error": type(exc).__name__, "message": str(exc)}, {}
    message = "Something went wrong on the server; its log has the details."
    return 500, {"error": "INTERNAL_ERROR", "message": message}, {}


def _error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = error_body(exc)
    return JSONResponse(body, status_code=status, headers=headers)


# -- Server-Sent Events -------------------------------------------------------------------------


def sse(event: str, data: Any) -> str:
    """One Server-Sent Events frame (the JSON fits on one ``data:`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventStream(Response):
    """A ``text/event-stream`` response that stops as soon as the client disconnects.

    Under an ASGI 2.4 server Starlette's ``StreamingResponse`` notices a disconnect only when
    it next writes, and a generation may not change for many seconds. This one listens for
    ``http.disconnect`` while it streams whatever the server's ASGI version, cancels the
    stream when it comes, and always closes the generator (so ``watch()`` stops polling)
    whether the stream ended, failed or was cut.
    """

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncGenerator[str, None]) -> None:
        self.frames = frames
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                with contextlib.suppress(OSError):  # servers on ASGI 2.4 raise on a dead client
                    await send(
                        {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                    )
                    async for frame in self.frames:
                        message: Message = {
                            "type": "http.response.body",
                            "body": frame.encode(),
                            "more_body": True,
                        }
                        await send(message)
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.frames.aclose()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _generation_frames(
    services: Services,
    first: asyncsdk.Generation,
    events: AsyncGenerator[asyncsdk.Generation, None],
) -> AsyncGenerator[str, None]:
    services.active_streams += 1
    try:
        async with contextlib.aclosing(events):
            last = first
            yield sse("status", to_json(first))
            async for generation in events:
                last = generation
                yield sse("status", to_json(generation))
        yield sse("done", to_json(last))
    except asyncsdk.AsyncSDKError as exc:
        yield sse("error", error_body(exc)[1])
    finally:
        services.active_streams -= 1


# -- the application ----------------------------------------------------------------------------


async def _start(settings: Settings, stack: contextlib.AsyncExitStack) -> Services:
    if settings.api_key is not None:
        kwargs: dict[str, Any] = {"base_url": settings.base_url}
        if settings.poll_interval is not None:
            kwargs["poll_interval"] = settings.poll_interval
        client = await stack.enter_async_context(asyncsdk.AsyncClient(settings.api_key, **kwargs))
        logger.info("using the BabySea API at %s", client.base_url)
        return Services(
            settings, client, list(SERVICE_MODELS), webhook_secret=settings.webhook_secret
        )

    secret = settings.webhook_secret or "whsec_" + secrets.token_hex(24)
    emulator = await stack.enter_async_context(
        Emulator(
            **{
                "time_scale": settings.time_scale,
                "webhook_url": settings.public_url.rstrip("/") + WEBHOOK_PATH,
                "webhook_secret": secret,
                **settings.emulator,
            }
        )
    )
    s = emulator.settings
    limits = asyncsdk.Limits(
        submissions=s.submissions,
        window=s.scaled(s.window),
        concurrent=s.concurrent,
        generation_timeout=s.scaled(s.generation_timeout),
    )
    client = await stack.enter_async_context(
        asyncsdk.AsyncClient(
            emulator.tokens[0],
            base_url=emulator.base_url,
            limits=limits,
            poll_interval=settings.poll_interval or 0.1,
        )
    )
    notice = (
        "BABYSEA_API_KEY is not set, so this app runs against the embedded BabySea emulator "
        f"(synthetic images, clock x{s.time_scale:g}). Set BABYSEA_API_KEY to use the service."
    )
    logger.warning("%s Emulator: %s", notice, emulator.base_url)
    return Services(
        settings,
        client,
        sorted(s.models),
        emulator=emulator,
        webhook_secret=secret,
        notice=notice,
    )


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _submit_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for ``submit()``, refusing what a web visitor must not choose."""
    reserved = sorted(set(options) & {"model", "prompt", "image_input"})
    if reserved:
        raise AppError(400, "VALIDATION_ERROR", f"options may not set {', '.join(reserved)}")
    checked = dict(options)
    images = checked.get("images")
    if images is not None:
        # submit() also reads local paths; from the web only public URLs make sense.
        urls = [images] if isinstance(images, str) else images
        if not isinstance(urls, list) or not all(
            isinstance(url, str) and url.startswith(("http://", "https://")) for url in urls
        ):
            raise AppError(400, "VALIDATION_ERROR", "options.images must be http(s) URLs")
    return checked


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to :meth:`Settings.from_env`."""
    settings = settings if settings is not None else Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.services = await _start(settings, stack)
            try:
                yield
            finally:
                del app.state.services

    app = FastAPI(title="asyncsdk web example", lifespan=lifespan, docs_url="/docs")

    async def handle(_request: Request, exc: Exception) -> Response:
        # For other exceptions Starlette re-raises after this answer, so the server logs them.
        return _error_response(exc)

    async def handle_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse(
            {"error": code, "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def handle_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        message = "; ".join(problems) or "invalid request"
        return JSONResponse({"error": "VALIDATION_ERROR", "message": message}, status_code=400)

    app.add_exception_handler(AppError, handle)
    app.add_exception_handler(asyncsdk.AsyncSDKError, handle)
    app.add_exception_handler(Exception, handle)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(RequestValidationError, handle_validation)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/info")
    async def info(request: Request) -> dict[str, Any]:
        services = _services(request)
        return {
            "mode": "emulator" if services.emulator is not None else "service",
            "notice": services.notice,
            "base_url": services.client.base_url,
            "models": services.models,
            "default_model": services.settings.model,
            "webhooks": services.webhook_secret is not None,
            "active_streams": services.active_streams,
            "webhooks_notified": sum(bool(e["notified"]) for e in services.webhook_events),
        }

    @app.post("/generations", status_code=202)
    async def submit(body: GenerationRequest, request: Request) -> JSONResponse:
        services = _services(request)
        model = (body.model or "").strip() or services.settings.model
        options = _submit_options(body.options)
        try:
            # A visitor waits for this one: it goes before any batch work on the account.
            submission = await services.client.submit(
                model, body.prompt, priority="interactive", **options
            )
        except (ValueError, TypeError) as exc:  # the SDK's own argument checks
            raise AppError(400, "VALIDATION_ERROR", str(exc)) from exc
        location = f"/generations/{submission.generation_id}"
        return JSONResponse(to_json(submission), status_code=202, headers={"Location": location})

    @app.get("/generations")
    async def recent(request: Request, limit: int | None = None) -> dict[str, Any]:
        services = _services(request)
        wanted = limit if limit is not None else services.settings.recent
        if not 1 <= wanted <= 100:
            raise AppError(400, "VALIDATION_ERROR", "limit must be between 1 and 100")
        page = await services.client.list_generations(limit=wanted)
        return to_json(page)

    @app.get("/generations/{generation_id}")
    async def generation(generation_id: str, request: Request) -> dict[str, Any]:
        return to_json(await _services(request).client.get_generation(generation_id))

    @app.get("/generations/{generation_id}/events")
    async def generation_events(generation_id: str, request: Request) -> Response:
        services = _services(request)
        events = services.client.watch(generation_id)
        try:
            # The first record is read before answering, so an unknown id is a plain 404.
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return EventStream(_generation_frames(services, first, events))

    @app.post(WEBHOOK_PATH)
    async def babysea_webhook(request: Request) -> dict[str, Any]:
        services = _services(request)
        if services.webhook_secret is None:
            raise AppError(
                503, "WEBHOOKS_DISABLED", "set BABYSEA_WEBHOOK_SECRET to receive webhooks"
            )
        try:
            event = webhooks.verify(
                await request.body(),
                request.headers.get(webhooks.SIGNATURE_HEADER),
                services.webhook_secret,
            )
        except webhooks.WebhookVerificationError as exc:
            code = {
                webhooks.MalformedSignatureError: "WEBHOOK_MALFORMED_SIGNATURE",
                webhooks.InvalidSignatureError: "WEBHOOK_BAD_SIGNATURE",
                webhooks.StaleTimestampError: "WEBHOOK_STALE_TIMESTAMP",
            }.get(type(exc), "WEBHOOK_MALFORMED_PAYLOAD")
            logger.warning("rejected a webhook delivery: %s", exc)
            raise AppError(400, code, str(exc)) from exc
        if event.id is not None and any(e["id"] == event.id for e in services.webhook_events):
            return {"received": True, "duplicate": True}
        # Every watch() of this generation (the pages' event streams) wakes at once.
        notified = services.client.notify(event)
        services.webhook_events.appendleft(
            {
                "id": event.id,
                "type": event.type,
                "created": event.created.isoformat() if event.created else None,
                "received_at": datetime.now().astimezone().isoformat(),
                "generation": to_json(event.generation),
                "notified": notified,
            }
        )
        logger.info("webhook %s for %s", event.type, event.generation.generation_id)
        return {"received": True, "duplicate": False}

    @app.get("/webhooks/events")
    async def webhook_events(request: Request) -> dict[str, Any]:
        return {"events": list(_services(request).webhook_events)}

    return app


#: The app with settings from the environment: ``uvicorn examples.web.app:app``.
app = create_app()
