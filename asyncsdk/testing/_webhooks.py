"""`WebhookReceiver`: an HTTP endpoint that verifies and keeps the emulator's webhook deliveries.

It runs on the emulator's thread (see `_harness`) and verifies each delivery exactly as an
application would, with `asyncsdk.webhooks.verify` on the raw body: a delivery that verifies is
kept in `events` and answered 200, one that does not is kept in `rejected` and answered 400.
A test awaits deliveries with `wait()`, which is woken from the receiver's thread through the
waiting loop's ``call_soon_threadsafe``: no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading

import anyio
from aiohttp import web

from .. import webhooks
from ..webhooks import WebhookEvent, WebhookVerificationError

__all__ = ["WebhookReceiver"]

PATH = "/webhooks/babysea"


class WebhookReceiver:
    """Receives webhook deliveries on 127.0.0.1 and keeps the verified ones.

    The `babysea_webhooks` fixture gives you one, already wired to `babysea_emulator`::

        async def test_completion_is_delivered(babysea_client, babysea_webhooks):
            generation = await babysea_client.generate("google/nano-banana", "a kite")
            [event] = await babysea_webhooks.wait(1)
            assert event.generation.generation_id == generation.generation_id
    """

    def __init__(self, *, host: str = "127.0.0.1", secret: str | None = None) -> None:
        #: The endpoint secret the emulator signs with (``whsec_...``).
        self.secret = secret or "whsec_" + secrets.token_hex(16)
        self._host = host
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._lock = threading.Lock()
        self._events: list[WebhookEvent] = []
        self._rejected: list[WebhookVerificationError] = []
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def url(self) -> str:
        """Where deliveries are POSTed."""
        if self._url is None:
            raise RuntimeError("the WebhookReceiver is not started")
        return self._url

    @property
    def events(self) -> list[WebhookEvent]:
        """The verified deliveries so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def rejected(self) -> list[WebhookVerificationError]:
        """Why each delivery that failed verification was refused, in arrival order."""
        with self._lock:
            return list(self._rejected)

    def for_generation(self, generation_id: str) -> list[WebhookEvent]:
        """The verified deliveries about one generation."""
        return [e for e in self.events if e.generation.generation_id == generation_id]

    async def wait(self, count: int = 1, *, timeout: float = 5.0) -> list[WebhookEvent]:
        """Wait until at least ``count`` verified deliveries arrived; all of them so far.

        :raises TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(timeout):
                while True:
                    with self._lock:
                        if len(self._events) >= count:
                            return list(self._events)
                        arrived = asyncio.Event()
                        self._waiters.append((loop, arrived))
                    await arrived.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{len(self.events)} of {count} webhook deliveries arrived within {timeout:g} s "
                f"({len(self.rejected)} rejected)"
            ) from None

    # Served on the emulator's thread.

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(PATH, self._receive)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, self._host, 0).start()
        port = runner.addresses[0][1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}{PATH}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            header = request.headers.get(webhooks.SIGNATURE_HEADER)
            event = webhooks.verify(body, header, self.secret)
        except WebhookVerificationError as exc:
            with self._lock:
                self._rejected.append(exc)
            self._wake()
            return web.json_response({"error": str(exc)}, status=400)
        with self._lock:
            self._events.append(event)
        self._wake()
        return web.json_response({"received": True})

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, arrived in waiters:
            # RuntimeError: that test's loop is closed, so nobody waits on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(arrived.set)
