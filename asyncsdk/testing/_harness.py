"""The machinery behind the fixtures: an emulator served from a thread, and its helpers.

`EmulatorThread` runs an `Emulator` (and, if asked, a `WebhookReceiver`) on an event loop of its
own in a daemon thread, like httpx's ``serve_in_thread``: the test's loop, whichever plugin runs
it and whatever its scope, talks to a real server on 127.0.0.1:0, and sync tests can use it too.
What runs on that thread, and when::

    test thread                         emulator thread (own asyncio loop)
    ───────────                         ──────────────────────────────────
    EmulatorThread.__enter__ ─ start ─► receiver.start(); Emulator(...); emulator.start()
          ◄────────────── ready (or the exception, re-raised here) ──┘
    client requests over loopback ────► aiohttp handlers
    fill_window / occupy_slot ─ call ─► run on the loop, result handed back
    EmulatorThread.__exit__ ─── stop ─► emulator.aclose(); receiver.aclose(); loop ends; join

`Faults` methods take a lock and may be called from the test at any time. Other emulator
methods (`set_credits`, `revoke`, ...) are plain attribute writes: call them between requests,
or through `EmulatorThread.call` to run them on the emulator's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar

from .._client import AsyncClient
from .._config import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_POLL_INTERVAL, Limits
from ..emulator import Emulator
from ._webhooks import WebhookReceiver

__all__ = [
    "COMPRESSED",
    "DEFAULT_MODEL",
    "NSFW_PROMPT",
    "EmulatorThread",
    "client_for",
    "emulator_options",
    "fill_window",
    "limits_for",
    "occupy_slot",
]

T = TypeVar("T")

#: Emulator durations for tests: a 0.5 s window and a 0.6 s auto-cancel, generations that take
#: 0.15 s. Short enough for a suite to run in seconds, long enough to observe every status.
COMPRESSED: Final[Mapping[str, Any]] = MappingProxyType(
    {"window": 0.5, "starting_time": 0.05, "processing_time": 0.1, "generation_timeout": 0.6}
)
#: A model every emulator knows (2 credits per image).
DEFAULT_MODEL: Final = "google/nano-banana"
#: A prompt the emulator's default word list refuses with NSFW_CONTENT_DETECTED
#: (`asyncsdk.ContentPolicyError`); nothing is created or charged.
NSFW_PROMPT: Final = "a nude figure study in charcoal"
#: The published window the SDK's default timings are tuned for (see `client_for`).
_PUBLISHED_WINDOW: Final = 60.0
#: Bound on starting, stopping and each call into the emulator's thread, in seconds.
_THREAD_TIMEOUT: Final = 10.0

# The thread serving each emulator started here, for the helpers that act on its loop.
_THREADS: weakref.WeakKeyDictionary[Emulator, EmulatorThread] = weakref.WeakKeyDictionary()


def emulator_options(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """`COMPRESSED` overridden by each mapping in turn (later ones win).

    >>> emulator_options({"window": 2.0}, {"accounts": 2})["window"]
    2.0
    """
    options = dict(COMPRESSED)
    for layer in layers:
        options.update(layer)
    return options


def limits_for(emulator: Emulator) -> Limits:
    """The `Limits` the emulator enforces, on its (possibly compressed) clock.

    ``settle_time`` (how long a lost submission is looked for in the list before it is taken
    as never created) is a twelfth of the window, at least 0.1 s: the emulator lists a
    generation at once unless ``faults.list_lag`` says otherwise (then pass a longer one
    through ``babysea_client_options``).
    """
    settings = emulator.settings
    window = settings.scaled(settings.window)
    return Limits(
        submissions=settings.submissions,
        window=window,
        concurrent=settings.concurrent,
        generation_timeout=settings.scaled(settings.generation_timeout),
        settle_time=max(0.1, window / 12),
    )


def client_for(emulator: Emulator, token: str | None = None, **options: Any) -> AsyncClient:
    """An `AsyncClient` for one of the emulator's accounts (default: the first), with its
    limits, and poll and retry timings compressed by the same factor as its window.

    ``options`` are passed to `AsyncClient` and win over these defaults. The client is not
    open: use it with ``async with`` in the test's event loop.
    """
    limits = limits_for(emulator)
    factor = limits.window / _PUBLISHED_WINDOW
    options.setdefault("limits", limits)
    options.setdefault("poll_interval", max(0.01, DEFAULT_POLL_INTERVAL * factor))
    options.setdefault("backoff_base", max(0.005, DEFAULT_BACKOFF_BASE * factor))
    options.setdefault("backoff_max", max(0.05, DEFAULT_BACKOFF_MAX * factor))
    return AsyncClient(token or emulator.tokens[0], base_url=emulator.base_url, **options)


class EmulatorThread:
    """An `Emulator` served from a background thread with its own event loop.

    >>> with EmulatorThread(accounts=2) as served:            # doctest: +SKIP
    ...     print(served.emulator.base_url, served.emulator.tokens)

    :param webhooks: also serve a `WebhookReceiver` on that loop and point the emulator's
        webhooks at it (``webhook_url`` and ``webhook_secret`` are then set for you).
    :param options: `Emulator` keyword arguments, used as given (see `emulator_options` for
        the compressed defaults).
    """

    def __init__(self, *, webhooks: bool = False, **options: Any) -> None:
        self._options = options
        self._want_webhooks = webhooks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._emulator: Emulator | None = None
        #: The receiver of the emulator's webhooks, when started with ``webhooks=True``.
        self.webhooks: WebhookReceiver | None = None

    @property
    def emulator(self) -> Emulator:
        """The running emulator."""
        if self._emulator is None:
            raise RuntimeError("the EmulatorThread is not started")
        return self._emulator

    def start(self) -> Emulator:
        """Start the thread and the emulator; returns once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("an EmulatorThread can be started only once")
        self._thread = threading.Thread(target=self._run, name="asyncsdk-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_THREAD_TIMEOUT):
            raise RuntimeError(f"the emulator did not start within {_THREAD_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join(_THREAD_TIMEOUT)
            raise self._error
        _THREADS[self.emulator] = self
        return self.emulator

    def close(self) -> None:
        """Stop the emulator and the thread (waits for both). Safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or not thread.is_alive() or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has just ended on its own
            loop.call_soon_threadsafe(stop.set)
        thread.join(_THREAD_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"the emulator thread did not stop within {_THREAD_TIMEOUT:g} s")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function()`` on the emulator's loop and return its result (or raise)."""

        async def run() -> T:
            return function()

        return self.run(run())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the emulator's loop and wait for its result (bounded)."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("the EmulatorThread is not running")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("EmulatorThread.run() called from the emulator's own thread")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(_THREAD_TIMEOUT)

    # The emulator's thread.

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test thread, never lost in the thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        options = dict(self._options)
        try:
            if self._want_webhooks:
                self.webhooks = WebhookReceiver(host=options.get("host", "127.0.0.1"))
                await self.webhooks.start()
                options.update(webhook_url=self.webhooks.url, webhook_secret=self.webhooks.secret)
            emulator = Emulator(**options)
            await emulator.start()
            self._emulator = emulator
        except BaseException:
            if self.webhooks is not None:
                await self.webhooks.aclose()
            raise
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await emulator.aclose()
            if self.webhooks is not None:
                await self.webhooks.aclose()


def thread_of(emulator: Emulator) -> EmulatorThread:
    """The `EmulatorThread` serving ``emulator``."""
    served = _THREADS.get(emulator)
    if served is None:
        raise RuntimeError(
            "this emulator is not served by an EmulatorThread: use the babysea_emulator "
            "fixture or `with EmulatorThread(...)`"
        )
    return served


def fill_window(emulator: Emulator, token: str | None = None) -> int:
    """Take every free place of the account's submission window, as submissions made by
    another process would; the next submission is answered 429 RATE_LIMIT_ERROR until the
    window slides (``window`` seconds). Returns how many places were taken.

    The places are taken directly in the emulator's books (no generation is created, nothing
    is charged): with one generation slot, real submissions could not fill a window in time.
    """
    state = emulator._state
    account = state.account(token or emulator.tokens[0])

    def take() -> int:
        state.settle(account)
        free = max(0, state.settings.submissions - len(account.window))
        now = state.clock()
        account.window.extend([now] * free)
        return free

    return thread_of(emulator).call(take)


def occupy_slot(
    emulator: Emulator,
    token: str | None = None,
    *,
    stuck: bool = False,
    model: str = DEFAULT_MODEL,
    prompt: str = "a generation started by another process",
) -> str:
    """Start a generation on the account with a plain HTTP request, as another process
    sharing the key would: while it runs, the next submission is answered 429
    CONCURRENT_GENERATION_ERROR (with one slot). Returns its generation id.

    ``stuck``: the generation never finishes by itself and holds the slot until the
    emulator's auto-cancel (``generation_timeout``); it is the next generation created, so
    call this while no other submission is in flight.

    The request blocks the caller for the few milliseconds of a loopback round trip; the
    emulator answers from its own thread, so this works from sync and async tests alike.
    """
    thread_of(emulator)  # a clear error rather than a deadlock for an emulator in this loop
    if stuck:
        emulator.faults.stick(1)
    request = urllib.request.Request(
        f"{emulator.base_url}/image-generation/{model}",
        data=json.dumps({"prompt": prompt}).encode(),
        headers={
            "Authorization": f"Bearer {token or emulator.tokens[0]}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    # No proxy from the environment: the emulator is on the loopback interface.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post() -> bytes:
        try:
            with opener.open(request, timeout=_THREAD_TIMEOUT) as reply:
                body: bytes = reply.read()
                return body
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"occupy_slot: the emulator answered {exc.code}: {exc.read()[:300]!r}"
            ) from None

    answer = json.loads(post())
    generation_id: str = answer["data"]["generationId"]
    return generation_id
