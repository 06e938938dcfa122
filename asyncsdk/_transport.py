"""HTTP transport: the only module of the client that touches aiohttp.

:class:`Transport` owns (or borrows) one ``aiohttp.ClientSession``, sends requests with the
authentication headers, decodes JSON bodies, and turns every failure into this SDK's errors at
one seam (:func:`_translate`):

- an HTTP error response → the :class:`~asyncsdk.APIError` subclass for its code or status;
- ``TimeoutError`` → :class:`~asyncsdk.APITimeoutError`;
- a connection that could not be opened → :class:`~asyncsdk.APIConnectionError` with
  ``request_sent=False``; any other aiohttp failure → the same with ``request_sent=True``
  (the service may have acted on the request: submissions must reconcile before retrying).

It knows nothing of retries, limits or models; the client builds those on top. The API key
lives only in the headers mapping held here and never reaches a message, repr or log line.
Output images are fetched without the authentication headers: they live on a CDN.
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
from typing import Any

import aiohttp
import attrs

from ._errors import APIConnectionError, APIError, APITimeoutError, error_for
from ._models import RateLimitInfo
from ._version import __version__

__all__ = ["Response", "Transport"]

logger = logging.getLogger("asyncsdk")

USER_AGENT = (
    f"asyncsdk/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
)


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
        self._session = session
        self._owns_session = session is None

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
        with _translate(method, url, self._timeout):
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
        raise _api_error(status, body, raw, headers.get("Content-Type"), request_id, rate_limit)

    @contextlib.asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[tuple[str | None, AsyncIterator[bytes]]]:
        """GET ``url`` (no auth headers) and yield its content type and body chunks."""
        with _translate("GET", url, self._timeout):
            async with self.session.get(
                url, headers={"User-Agent": USER_AGENT}, timeout=self._client_timeout
            ) as resp:
                if resp.status >= 300:
                    body = await resp.read()
                    raise _api_error(
                        resp.status,
                        _decode(body),
                        body,
                        resp.content_type,
                        resp.headers.get("X-Request-ID"),
                        None,
                    )
                yield resp.headers.get("Content-Type"), resp.content.iter_chunked(1 << 16)


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        # A UTF-8 object (the service's answers) is decoded first: json.loads() of bytes
        # runs a pure-Python encoding detection on every response.
        body = json.loads(raw.decode() if raw[:1] == b"{" and raw[1:2] != b"\x00" else raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _api_error(
    status: int,
    body: dict[str, Any] | None,
    raw: bytes,
    content_type: str | None,
    request_id: str | None,
    rate_limit: RateLimitInfo | None,
) -> APIError:
    if body is not None and isinstance(body.get("error"), str):
        code: str | None = body["error"]
        message = str(body.get("message") or code)
    else:
        code = None
        snippet = raw[:200].decode("utf-8", "replace").strip() or "<empty>"
        kind = content_type or "no content type"
        message = f"unexpected response (HTTP {status}, {kind}): {snippet}"
    return error_for(status, code, message, request_id=request_id, rate_limit=rate_limit)


class _translate:
    """The seam: aiohttp's exceptions in, this SDK's out (``raise ... from``).

    A class rather than ``@contextmanager``: it wraps every request, and the generator
    version costs ten times as much on the way through.
    """

    __slots__ = ("method", "timeout", "url")

    def __init__(self, method: str, url: str, timeout: float) -> None:
        self.method, self.url, self.timeout = method, url, timeout

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
        method, url = self.method, self.url
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # distinct on Python 3.10
            raise APITimeoutError(f"{method} {url} timed out (timeout {self.timeout:g}s)") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise APIConnectionError(
                f"{method} {url}: could not connect ({exc.os_error})", request_sent=False
            ) from exc
        if isinstance(exc, aiohttp.ClientError):
            raise APIConnectionError(
                f"{method} {url}: connection failed ({type(exc).__name__}: {exc})"
            ) from exc
