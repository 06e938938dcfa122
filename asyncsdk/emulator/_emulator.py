"""`Emulator`: configuration, accounts and the server lifecycle around `_state` and `_app`.

The emulator is an aiohttp `AppRunner` + `TCPSite` on a loopback port (0 picks a free one),
opened by ``async with`` (or `start()`/`aclose()`) because aiohttp needs a running loop. It can
be started once. `emu.app` is the application `start()` serves and may instead be handed to
aiohttp's test utilities; `make_app()` builds another application over the same state.
Accounts: `tokens` are used first, then fresh ``bye_`` + 32-hex tokens are generated until
there are `accounts` of them; each starts with `credits` credits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from ._app import API, make_app
from ._faults import Faults
from ._settings import DEFAULT_MODELS, DEFAULT_NSFW_WORDS, MB, ModelSpec, ProcessingTime, Settings
from ._state import State
from ._stats import EmulatorStats

# How long closing waits for requests still being handled before cancelling them.
SHUTDOWN_TIMEOUT = 1.0


class Emulator:
    """An embedded BabySea v1 API server for tests and demos.

    Every limit and duration is an argument; `time_scale` multiplies every duration (window,
    generation timeout, starting and processing times) to compress time.

    >>> async def demo() -> None:
    ...     async with Emulator(time_scale=0.05) as emu:
    ...         print(emu.base_url, emu.tokens[0])
    """

    def __init__(
        self,
        *,
        accounts: int = 1,
        tokens: Iterable[str] | None = None,
        credits: int = 1000,
        submissions: int = 10,
        window: float = 60.0,
        concurrent: int = 1,
        generation_timeout: float = 50.0,
        starting_time: float = 0.5,
        processing_time: ProcessingTime = 3.0,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        models: Mapping[str, ModelSpec] = DEFAULT_MODELS,
        nsfw_words: Iterable[str] = DEFAULT_NSFW_WORDS,
        max_image_bytes: int = 10 * MB,
        max_total_image_bytes: int = 20 * MB,
        image_fetch_timeout: float = 10.0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.settings = Settings(
            submissions=submissions,
            window=window,
            concurrent=concurrent,
            generation_timeout=generation_timeout,
            starting_time=starting_time,
            processing_time=processing_time,
            time_scale=time_scale,
            max_image_bytes=max_image_bytes,
            max_total_image_bytes=max_total_image_bytes,
            image_fetch_timeout=image_fetch_timeout,
            models=dict(models),
            nsfw_words=frozenset(word.lower() for word in nsfw_words),
        )
        #: The fault script (see `Faults`).
        self.faults = Faults()
        #: What the emulator observed (see `EmulatorStats`).
        self.stats = EmulatorStats()
        self._state = State(self.settings, self.faults, self.stats)
        self._credits = credits
        self._webhook = {"webhook_url": webhook_url, "webhook_secret": webhook_secret}
        given = list(tokens or ())
        for token in given:
            self._state.add_account(token, credits)
        for _ in range(accounts - len(given)):
            self._state.add_account(None, credits)
        self.host, self.port = host, port
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False

    # Lifecycle.

    @property
    def app(self) -> web.Application:
        """The application `start()` serves."""
        if self._app is None:
            self._app = self.make_app()
        return self._app

    def make_app(self) -> web.Application:
        """A new aiohttp application over this emulator's state, faults and stats."""
        return make_app(self._state, **self._webhook)

    async def start(self) -> None:
        if self._runner is not None or self._closed:
            raise RuntimeError("an Emulator can be started only once")
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await self.aclose()
            raise
        self.port = runner.addresses[0][1]

    async def aclose(self) -> None:
        self._closed = True
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def url(self) -> str:
        """The server's origin, ``http://127.0.0.1:54321`` (image files live under it)."""
        if self._runner is None:
            raise RuntimeError("the emulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://127.0.0.1:54321/api/v1``."""
        return self.url + API

    # Accounts.

    @property
    def tokens(self) -> list[str]:
        """Every account's token, in creation order."""
        return list(self._state.accounts)

    def add_account(self, token: str | None = None, credits: int | None = None) -> str:
        """Create an account (a fresh token when None); returns its token."""
        credits = self._credits if credits is None else credits
        return self._state.add_account(token, credits).token

    def revoke(self, token: str) -> None:
        """Revoke `token`: its requests get 401 AUTHENTICATION_FAILED."""
        self._state.account(token).revoked = True

    def delete_account(self, token: str) -> None:
        """Delete the account of `token`: its requests get 404 ACCOUNT_NOT_FOUND."""
        self._state.account(token).deleted = True

    def set_credits(self, token: str, credits: int) -> None:
        """Make the balance exactly `credits` (one `purchased` grant; see `_state`)."""
        self._state.set_credits(token, credits)

    def credits(self, token: str) -> dict[str, int]:
        """The account's credits object, as `GET /data/account` would show it now."""
        return dict(self._state.account(token).credits())

    def generations(self, token: str) -> list[dict[str, Any]]:
        """The account's generation records (Check Image Status shape), oldest first.

        The server's own record of what it created, whatever the client heard: every
        generation, dropped or garbled answers included, with `name` as sent (the prompt's
        first 30 characters when none was), `createdAt` and the status now (final once ended).
        """
        account = self._state.account(token)
        origin = self.url if self._runner is not None else f"http://{self.host}:{self.port}"
        return [self._state.record(generation, origin) for generation in account.generations]
