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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import attrs

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

__all__ = ["Response", "Transport"]

logger = logging.getLogger("asyncsdk")

USER_AGENT = (
    f"asyncsdk/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)


T = TypeVar("T")
_DATA: Any = object()


@attrs.frozen
class Response:
    """A decoded successful response: the body's ``data`` (and top-level extras)."""

    status: int
    body: dict[str, Any]
    request_id: str | None
    rate_limit: RateLimitInfo | None

    @property
    def data(self) -> Any:
        return self.body.get("data")

    def parse(self, cls: type[T], data: Any = _DATA) -> T:
        """``data`` (default: the body's ``data``) as a ``cls``, with this answer's request
        id; a body that does not fit is an :class:`~asyncsdk.APIResponseValidationError`."""
        if data is _DATA:
            data = self.body.get("data")
        try:
            if isinstance(data, dict):
                data = {**data, "requestId": self.request_id}
            return structure(data, cls)
        except Exception as exc:
            raise APIResponseValidationError(
                f"unexpected response shape for {cls.__name__}: {type(exc).__name__}: "
                + redact(str(exc))[:200],
                status=self.status,
                request_id=self.request_id,
            ) from exc


class Transport:
    """One session's worth of HTTP to the service. Open inside a running event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._timeout = timeout
        # Passed on each request too, so that a session handed in gets the client's timeout.
        self._client_timeout = aiohttp.ClientTimeout(total=timeout)
        self._idle_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout, sock_read=timeout
        )
        self._secrets = tuple(
            value.split(" ", 1)[-1] for value in headers.values() if value.startswith("Bearer ")
        )
        self._session = session
        self._owns_session = session is None

    @property
    def timeout(self) -> float:
        """Seconds per request."""
        return self._timeout

    def __repr__(self) -> str:
        return f"<Transport {self.base_url}>"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._client_timeout, raise_for_status=False
            )
        return self._session

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

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
        started = time.monotonic()
        with _translate(method, url, self._timeout, self._secrets):
            async with self.session.request(
                method,
                url,
                params=params,
                data=None if json_body is None else json.dumps(json_body).encode(),
                headers=self._headers if json_body is None else self._json_headers,
                timeout=self._client_timeout,
            ) as resp:
                raw = await resp.read()
                status, headers = resp.status, resp.headers
        request_id = headers.get("X-Request-ID")
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
            RateLimitInfo.from_headers(headers)
            if "X-RateLimit-Remaining" in headers or status == 429
            else None
        )
        body = _decode(raw)
        if status < 300 and body is not None and body.get("success") is not False:
            return Response(status, body, request_id, rate_limit)
        raise self._error(status, body, raw, headers.get("Content-Type"), request_id, rate_limit)

    @contextlib.asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[tuple[str | None, AsyncIterator[bytes]]]:
        """GET ``url`` (no auth headers) and yield its content type and body chunks.

        Only aiohttp's own calls (opening, each chunk) are inside the seam, never the
        caller's code between chunks.
        """
        seam = _translate("GET", url, self._timeout, self._secrets)
        with seam:
            context = self.session.get(
                url, headers={"User-Agent": USER_AGENT}, timeout=self._idle_timeout
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
        if body is not None and isinstance(body.get("error"), str):
            code: str | None = redact(body["error"], *self._secrets)
            message = redact(str(body.get("message") or code), *self._secrets)
        else:
            code = None
            snippet = raw[:200].decode("utf-8", "replace").strip() or "<empty>"
            snippet = redact(snippet, *self._secrets)
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
