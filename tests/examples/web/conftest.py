"""Fixtures for the web example: the app against the emulator, in process or on a real port.

- ``asgi(**settings)``: the app with its lifespan running, and an ``httpx.AsyncClient`` that
  talks to it through httpx's ASGI transport (no sockets between them).
- ``live(**settings)``: the app served by uvicorn on a free loopback port in a thread of its
  own (its own event loop, as in production), for the browser and for what needs a real
  socket: the emulator's webhook deliveries and a client that hangs up.

Both build :class:`examples.web.app.Settings` in emulator mode with a compressed clock
(:data:`FAST`); keyword arguments override it. Nothing here imports FastAPI at import time,
so that without the example's dependencies :func:`need` can skip (or, under CI, fail) the
modules that use them with a message.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from . import FAST, WAIT, wait_for

if TYPE_CHECKING:
    import httpx

    from examples.web.app import Services


def settings_for(public_url: str, **overrides: Any) -> Any:
    from examples.web.app import Settings

    return Settings(**{**FAST, "public_url": public_url, **overrides})


@attrs.define
class AsgiApp:
    app: Any
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


AsgiFactory = Callable[..., Awaitable[AsgiApp]]


@pytest.fixture
async def asgi() -> AsyncIterator[AsgiFactory]:
    import httpx

    from examples.web.app import create_app

    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> AsgiApp:
            # No server listens in these tests: the emulator's webhooks go nowhere unless a
            # test asks for them (the live tests do).
            emulator = {"webhook_url": None, **overrides.pop("emulator", {})}
            settings = settings_for("http://127.0.0.1:9", emulator=emulator, **overrides)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
            return AsgiApp(app, http)

        yield start


@attrs.define
class LiveApp:
    url: str
    app: Any
    server: Any

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(**overrides: Any) -> Iterator[LiveApp]:
    """The app under uvicorn on 127.0.0.1:<free port>, in a thread; stopped on exit."""
    import uvicorn

    from examples.web.app import create_app

    with free_socket() as sock:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(settings_for(url, **overrides))
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_level="warning",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        thread.start()
        try:
            wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start")
            if not server.started:
                raise RuntimeError("the web app did not start; see the log above")
            yield LiveApp(url, app, server)
        finally:
            server.should_exit = True
            thread.join(WAIT)
            assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def live() -> Iterator[Callable[..., LiveApp]]:
    with contextlib.ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(serve(**overrides))
