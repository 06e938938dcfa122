"""HTTP transport: the only module of the client that touches aiohttp.

:class:`Transport` owns (or borrows) one ``aiohttp.ClientSession``, sends requests with the
authentication headers, decodes JSON bodies, and turns every failure into this SDK's errors at
one seam (:func:`_translate`):

- an HTTP error response → the :class:`~asyncsdk.APIError` subclass for its code or status;
- a 2xx answer whose body cannot be read → :class:`~asyncsdk.APIResponseValidationError`;
- aiohttp's own ``TimeoutError`` → :class:`~asyncsdk.APITimeoutError` (only aiohttp's calls are
  inside the seam: a ``TimeoutError`` of the caller's passes through untouched);
- a connection that could not be opened → :class:`~asyncsdk.APIConnectionError` with
  ``request_sent=False``; any other aiohttp failure → the same with ``request_sent=True``
  (the service may have acted on the request: submissions must reconcile before retrying).

It knows nothing of retries, limits or models; the client builds those on top. The API key
lives only in the headers mapping held here and never reaches a message, repr or log line:
server text (an error's message, a body snippet, which a proxy may have filled with the
request's own headers) is passed through :func:`~asyncsdk._errors.redact` before any error is
built from it, and URLs in messages lose their query strings (a CDN's may be a signature).
Output images are fetched without the authentication headers: they live on a CDN. A download
is bounded by idle time (no byte for ``timeout`` seconds), not by its total duration.

**One connection pool per origin.** Sockets are bounded by concurrency, not by the number of
accounts: the clients of one origin (``https://host:port``) in one event loop share one
:class:`Pool`, an ``aiohttp.ClientSession`` over a connector of ``max_connections``
connections, ref-counted by the transports that use it and closed with the last of them. The
session carries no account's state: each transport sends its own ``Authorization`` with each
request, and the session keeps no cookies (one account's cookies must never ride along with
another's). A request first takes one of the pool's :class:`Slots` (FIFO) and only then enters
aiohttp with its timeout, so the time spent queueing for a connection is never counted
against the request, a request cancelled while queueing has provably not been sent, and a
burst of thousands of requests waits in the queue instead of all being built at once. How
many requests the slots let in flight adapts to the reads' round trips, between a floor and
``max_connections``: when answers come back slower than usual while this event loop runs late
(busy with the answers it already has), fewer are let out; a service that is merely slow is
no reason to send less.
A session handed in (``session=``) is used as it is and never closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import math
import platform
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiohttp

from ._config import DEFAULT_MAX_CONNECTIONS
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    error_for,
    redact,
)
from ._models import RateLimitInfo
from ._version import __version__
from ._wire import structure

__all__ = ["Pool", "Response", "Slots", "Transport"]

logger = logging.getLogger("asyncsdk")

USER_AGENT = (
    f"asyncsdk/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)


T = TypeVar("T")
_DATA: Any = object()


class Response:
    """A decoded successful response: the body's ``data`` (and top-level extras)."""

    __slots__ = ("body", "rate_limit", "request_id", "status")

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        request_id: str | None,
        rate_limit: RateLimitInfo | None,
    ) -> None:
        self.status = status
        self.body = body
        self.request_id = request_id
        self.rate_limit = rate_limit

    def __repr__(self) -> str:
        return f"<Response {self.status} request id {self.request_id}>"

    @property
    def data(self) -> Any:
        return self.body.get("data")

    def parse(self, cls: type[T], data: Any = _DATA) -> T:
        """``data`` (default: the body's ``data``) as a ``cls``, with this answer's request
        id; a body that does not fit is an :class:`~asyncsdk.APIResponseValidationError`."""
        if data is _DATA:
            data = self.body.get("data")
        try:
            if type(data) is dict:
                data["requestId"] = self.request_id  # this answer's own decoded body
            return structure(data, cls)
        except Exception as exc:
            raise APIResponseValidationError(
                f"unexpected response shape for {cls.__name__}: {type(exc).__name__}: "
                + redact(str(exc))[:200],
                status=self.status,
                request_id=self.request_id,
            ) from exc


#: Seconds between two looks at the event loop's lag while requests are in flight.
LAG_PERIOD: Final = 0.01
#: Loop lag (seconds) that makes the loop late: only then do slow answers shrink the limit.
LAG_LIMIT: Final = 0.01
#: Seconds a late look counts for.
LATE_FOR: Final = 1.0
#: Seconds over which the shortest round trip (the base) is remembered, twice over.
BASE_PERIOD: Final = 10.0
#: How much longer than the base a smoothed round trip may be before the limit shrinks.
TOLERANCE: Final = 2.0


class Slots:
    """The requests a pool lets in flight: a FIFO limiter whose limit adapts between
    ``floor`` and ``limit`` (see the module docstring).

    :meth:`acquire` waits for a slot, :meth:`release` hands it to the longest waiter (or frees
    it). A waiter cancelled after it was handed a slot passes it on, so no slot is ever lost.

    The adaptive limit (:attr:`allowed`) follows the requests' round trips, as TCP Vegas and
    the "gradient" concurrency limiters do: the round trip of a read (acquire to release) is
    compared with the shortest one seen lately (the base, over two periods of
    :data:`BASE_PERIOD` seconds). While the smoothed round trip stays within
    :data:`TOLERANCE` times the base and the limit binds, it grows by one per limit's worth of
    answers, up to ``limit``; beyond that, requests are queueing somewhere (the service, or
    this process's own event loop, busy with the answers it already has) and each answer
    takes 2% off the limit, down to ``floor``, but only while the loop itself runs late (a
    look at its lag every :data:`LAG_PERIOD` while requests are in flight found it more than
    :data:`LAG_LIMIT` late within :data:`LATE_FOR`): a loop that has a hundred answers ready at
    once runs late for everyone else, and more requests in flight would only make it later;
    a service that is merely slow, with the loop on time, is no reason to send less.
    """

    __slots__ = (
        "_base",
        "_base_prev",
        "_clock",
        "_due",
        "_late_until",
        "_period_end",
        "_smooth",
        "_ticking",
        "_waiters",
        "allowed",
        "floor",
        "in_use",
        "limit",
    )

    def __init__(
        self, limit: int, *, floor: int = 8, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.floor = min(floor, limit)
        #: The adaptive limit (a float: it moves by fractions of a slot).
        self.allowed = float(limit)
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._clock = clock
        self._smooth = 0.0
        self._base = self._base_prev = math.inf
        self._period_end = clock() + BASE_PERIOD
        self._late_until = -math.inf
        self._ticking = False
        self._due = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits (no await)."""
        if self.in_use < self.allowed and not self._waiters:
            self.in_use += 1
            if not self._ticking:
                self._tick_soon()
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, round_trip: float | None = None) -> None:
        """Give a slot back; ``round_trip``: the seconds a read took, to adapt the limit."""
        self.in_use -= 1
        if round_trip is not None:
            self._observe(round_trip)
        while self._waiters and self.in_use < self.allowed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

    def _observe(self, round_trip: float) -> None:
        now = self._clock()
        if now >= self._period_end:
            self._base_prev, self._base = self._base, math.inf
            self._period_end = now + BASE_PERIOD
        self._base = min(self._base, round_trip)
        base = min(self._base, self._base_prev)
        self._smooth = round_trip if not self._smooth else 0.9 * self._smooth + 0.1 * round_trip
        if self._smooth > TOLERANCE * base:
            if now < self._late_until:  # queueing in this loop, not only at the service
                self.allowed = max(self.floor, self.allowed * 0.98)
        elif self.in_use + 1 >= self.allowed:  # the limit binds: probe for more
            self.allowed = min(self.limit, self.allowed + 1 / self.allowed)

    def observe_lag(self, lag: float) -> None:
        """One look at the event loop: ``lag`` seconds late."""
        if lag > LAG_LIMIT:
            self._late_until = self._clock() + LATE_FOR

    def _tick_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop (tests of the bookkeeping): no looks
            return
        self._ticking = True
        self._due = loop.time() + LAG_PERIOD
        loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.observe_lag(now - self._due)
        if self.in_use or self._waiters:
            self._due = now + LAG_PERIOD
            loop.call_at(self._due, self._tick, loop)
        else:
            self._ticking = False


class Pool:
    """The connections the clients of one origin share in one event loop (see the module
    docstring): one session, one connector of ``limit`` connections, and the slots that
    bound the requests in flight to the connections there are."""

    __slots__ = ("key", "loop", "session", "slots", "users")

    def __init__(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> None:
        limit = key[1]
        self.key = key
        self.loop = loop
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers=_POOL_HEADERS,
            raise_for_status=False,
        )
        self.slots = Slots(limit)
        self.users = 0

    def __repr__(self) -> str:
        return (
            f"<Pool {self.key[0]} users={self.users} "
            f"requests={self.slots.in_use}/{self.slots.allowed:.0f}/{self.key[1]} "
            f"waiting={self.slots.waiting}>"
        )

    @property
    def closed(self) -> bool:
        return self.session.closed

    @classmethod
    def acquire(cls, origin: str, limit: int) -> Pool:
        """The pool of ``origin`` in the running loop (made on first use), counted once more."""
        loop = asyncio.get_running_loop()
        pools = _POOLS.get(loop)
        if pools is None:
            pools = _POOLS[loop] = {}
        key = (origin, limit)
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = cls(key, loop)
        pool.users += 1
        return pool

    def _leave(self) -> bool:
        """Count one user less; ``True`` when it was the last (the pool is forgotten)."""
        self.users -= 1
        if self.users > 0:
            return False
        pools = _POOLS.get(self.loop)
        if pools is not None and pools.get(self.key) is self:
            del pools[self.key]
        return True

    async def release(self) -> None:
        """One user is done; the last one closes the session and its connections."""
        if self._leave():
            await self.session.close()

    def abandon(self) -> None:
        """One user was garbage-collected unclosed: count it out without awaiting, and have
        the loop close the pool if it was the last one."""
        if not self._leave() or self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            self.loop.call_soon_threadsafe(_close_soon, self.session)

    @staticmethod
    def statistics() -> dict[str, int]:
        """Pools open in the running loop and their users, connections and queued requests."""
        pools = _POOLS.get(asyncio.get_running_loop(), {})
        return {
            "pools": len(pools),
            "users": sum(p.users for p in pools.values()),
            "requests": sum(p.slots.in_use for p in pools.values()),
            "allowed": sum(int(p.slots.allowed) for p in pools.values()),
            "waiting": sum(p.slots.waiting for p in pools.values()),
        }


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], Pool]] = (
    weakref.WeakKeyDictionary()
)
_CLOSING: set[asyncio.Task[None]] = set()
#: What a request through a session handed in adds (a pooled session sends it by default).
_OWN_SESSION_HEADERS: Mapping[str, str] = {"User-Agent": USER_AGENT}
_POOL_HEADERS: Mapping[str, str] = {**_OWN_SESSION_HEADERS, "Accept": "application/json"}


def _close_soon(session: aiohttp.ClientSession) -> None:
    task = asyncio.ensure_future(session.close())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


@functools.lru_cache(maxsize=64)
def _timeouts(timeout: float) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
    """A request's timeout and a download's (idle time), shared by clients with equal ones."""
    return (
        aiohttp.ClientTimeout(total=timeout),
        aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
    )


def origin_of(base_url: str) -> str:
    """``https://host:port`` of a URL: what clients share a pool by."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class Transport:
    """One client's HTTP to the service (see the module docstring). Open inside a running
    event loop: the pool (or the session handed in) is taken on first use."""

    __slots__ = (
        "_headers",
        "_limit",
        "_own_session",
        "_pool",
        "_secrets",
        "_session",
        "_slots",
        "base_url",
        "timeout",
    )

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        self.base_url = base_url.rstrip("/")
        #: Seconds per request.
        self.timeout = timeout
        self._secrets = tuple(
            value.split(" ", 1)[-1] for value in headers.values() if value.startswith("Bearer ")
        )
        # A pooled session sends the User-Agent and Accept itself; a session handed in gets
        # them with each request. Either way the client's own header goes with each request.
        self._own_session = session is not None
        self._headers = {**_POOL_HEADERS, **headers} if self._own_session else dict(headers)
        self._session = session
        self._pool: Pool | None = None
        self._slots: Slots | None = None
        self._limit = max_connections

    def __repr__(self) -> str:
        return f"<Transport {self.base_url}>"

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session requests go through: the one handed in, or the origin's pool's."""
        if self._session is None:
            pool = self._pool = Pool.acquire(origin_of(self.base_url), self._limit)
            self._slots = pool.slots
            self._session = pool.session
        return self._session

    @property
    def pool(self) -> Pool | None:
        """The shared pool this transport uses (``None`` with a session handed in)."""
        return self._pool

    @property
    def is_open(self) -> bool:
        if self._pool is not None:
            return True
        return self._session is not None and not self._session.closed

    async def aclose(self) -> None:
        """Leave the pool (the last user closes it); a session handed in is left open."""
        pool, self._pool = self._pool, None
        if pool is not None:
            self._session = self._slots = None
            await pool.release()

    def abandon(self) -> None:
        """Garbage-collected unclosed: leave the pool without awaiting."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.abandon()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Response:
        """Send one request; the decoded success body, or raise the translated error."""
        url = self.base_url + path
        session = self._session or self.session
        if json_body is None:
            data, headers = None, self._headers
        else:
            data = json.dumps(json_body).encode()
            headers = {**self._headers, "Content-Type": "application/json"}
        slots = self._slots
        if slots is not None and not slots.try_acquire():
            await slots.acquire()  # outside the timeout: queueing here sends nothing
        round_trip = None
        try:
            started = time.monotonic()
            with _translate(method, url, self.timeout, self._secrets):
                async with session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=_timeouts(self.timeout)[0],
                ) as resp:
                    raw = await resp.read()
                    status, resp_headers = resp.status, resp.headers
            if method == "GET":  # reads alone: a submission's own time says nothing of queues
                round_trip = time.monotonic() - started
        finally:
            if slots is not None:
                slots.release(round_trip)
        request_id = resp_headers.get("X-Request-ID")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %s in %.3fs (request id %s)",
                method,
                path,
                status,
                time.monotonic() - started,
                request_id,
            )
        rate_limit = (
            RateLimitInfo.from_headers(resp_headers)
            if status == 429 or "X-RateLimit-Remaining" in resp_headers
            else None
        )
        body = _decode(raw)
        if status < 300 and body is not None and body.get("success") is not False:
            return Response(status, body, request_id, rate_limit)
        raise self._error(
            status, body, raw, resp_headers.get("Content-Type"), request_id, rate_limit
        )

    @contextlib.asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[tuple[str | None, AsyncIterator[bytes]]]:
        """GET ``url`` (no auth headers) and yield its content type and body chunks.

        Only aiohttp's own calls (opening, each chunk) are inside the seam, never the
        caller's code between chunks. The download holds one of the pool's slots throughout.
        """
        session = self._session or self.session
        slots = self._slots
        if slots is not None:
            await slots.acquire()
        try:
            seam = _translate("GET", url, self.timeout, self._secrets)
            with seam:
                context = session.get(
                    url,
                    headers=_OWN_SESSION_HEADERS if self._own_session else None,
                    timeout=_timeouts(self.timeout)[1],
                )
                resp = await context.__aenter__()
            try:
                if resp.status >= 300:
                    with seam:
                        body = await resp.read()
                    raise self._error(
                        resp.status,
                        _decode(body),
                        body,
                        resp.content_type,
                        resp.headers.get("X-Request-ID"),
                        None,
                    )
                yield resp.headers.get("Content-Type"), _chunks(resp, seam)
            finally:
                await context.__aexit__(None, None, None)
        finally:
            if slots is not None:
                slots.release()

    def _error(
        self,
        status: int,
        body: dict[str, Any] | None,
        raw: bytes,
        content_type: str | None,
        request_id: str | None,
        rate_limit: RateLimitInfo | None,
    ) -> APIError:
        """The error for an answer that is not a readable success; server text redacted."""
        secrets = self._secrets
        if body is not None and isinstance(body.get("error"), str):
            code: str | None = redact(body["error"], *secrets)
            message = redact(str(body.get("message") or code), *secrets)
        else:
            code = None
            snippet = raw[:200].decode("utf-8", "replace").strip() or "<empty>"
            snippet = redact(snippet, *secrets)
            kind = content_type or "no content type"
            message = f"unexpected response (HTTP {status}, {kind}): {snippet}"
            if status < 300:
                return APIResponseValidationError(message, status=status, request_id=request_id)
        return error_for(status, code, message, request_id=request_id, rate_limit=rate_limit)


async def _chunks(resp: aiohttp.ClientResponse, seam: _translate) -> AsyncIterator[bytes]:
    iterator = resp.content.iter_chunked(1 << 16).__aiter__()
    while True:
        with seam:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
        yield chunk


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        # A UTF-8 object (the service's answers) is decoded first: json.loads() of bytes
        # runs a pure-Python encoding detection on every response.
        body = json.loads(raw.decode() if raw[:1] == b"{" and raw[1:2] != b"\x00" else raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _translate:
    """The seam: aiohttp's exceptions in, this SDK's out (``raise ... from``).

    A class rather than ``@contextmanager``: it wraps every request, and the generator
    version costs ten times as much on the way through.
    """

    __slots__ = ("method", "secrets", "timeout", "url")

    def __init__(self, method: str, url: str, timeout: float, secrets: tuple[str, ...]) -> None:
        self.method, self.url, self.timeout, self.secrets = method, url, timeout, secrets

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # distinct on Python 3.10
            raise APITimeoutError(self._say(f"timed out (timeout {self.timeout:g}s)")) from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise APIConnectionError(
                self._say(f"could not connect ({exc.os_error})"), request_sent=False
            ) from exc
        if isinstance(exc, aiohttp.ClientError):
            raise APIConnectionError(
                self._say(f"connection failed ({type(exc).__name__}: {exc})")
            ) from exc

    def _say(self, what: str) -> str:
        return redact(f"{self.method} {self.url}: {what}", *self.secrets)
