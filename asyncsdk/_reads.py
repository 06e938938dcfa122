"""Reads: status, account, list pages and generation records, with the one retry policy.

Every read goes through :meth:`Reader.read`: the gate's read turn (paused when the server
said no reads remain), one request, and on a retryable failure (:func:`asyncsdk._retry.
is_retryable`) backoff's loop with the waits of :func:`~asyncsdk._retry.wait_times`. The loop
is entered only after a first retryable failure, which it replays as its own first try, so a
read that succeeds at once pays nothing for it. :meth:`Reader.read_once` is the same without
retries, for callers with their own loop (the submission protocol's look-ups, ``watch()``).

Every generation record read passes :meth:`Reader.saw`: a terminal one frees its slot in the
gate and teaches the duration model how long the model takes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar
from urllib.parse import quote

from ._errors import AsyncSDKError
from ._limits import AccountGate
from ._models import AccountInfo, ApiStatus, Generation, GenerationPage
from ._polling import DurationModel
from ._retry import is_retryable, retrying
from ._transport import Response, Transport

__all__ = ["Reader"]

T = TypeVar("T")

#: Characters ``quote()`` leaves alone: a path segment made of them needs no quoting.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")

Params = Mapping[str, str | int] | None


Replay = Callable[[str, Params, list[AsyncSDKError], "Reader"], Awaitable[Response]]


async def _replay(
    path: str, params: Params, first: list[AsyncSDKError], reader: Reader
) -> Response:
    if first:
        raise first.pop()
    return await reader.read_once(path, params)


@functools.lru_cache(maxsize=32)
def _retrying_read(max_retries: int, backoff_range: tuple[float, float], hint_cap: float) -> Replay:
    """backoff's loop around :func:`_replay`, one per retry setting (not one per client)."""
    return retrying(max_retries, backoff_range, hint_cap)(_replay)


class Reader:
    """The read side of one client: typed endpoints over :meth:`read`."""

    __slots__ = ("_account", "_gate", "_retry", "_transport", "durations", "max_retries")

    def __init__(
        self,
        transport: Transport,
        gate: Callable[[], AccountGate],
        *,
        max_retries: int,
        backoff_range: tuple[float, float],
        hint_cap: float,
        durations: DurationModel,
        account: str | None = None,
    ) -> None:
        self._transport = transport
        self._gate = gate
        self.max_retries = max_retries
        self.durations = durations
        self._account = account
        self._retry = (max_retries, backoff_range, hint_cap)

    async def read(self, path: str, params: Params = None) -> Response:
        """One read, retried by the one predicate with backoff's loop."""
        try:
            return await self.read_once(path, params)
        except AsyncSDKError as exc:
            if self.max_retries == 0 or not is_retryable(exc):
                raise
            first = [exc]
        return await _retrying_read(*self._retry)(path, params, first, self)

    async def read_once(self, path: str, params: Params = None) -> Response:
        """One request, no retry."""
        gate = self._gate()
        await gate.read_turn()
        response = await self._transport.request("GET", path, params=params)
        if response.rate_limit is not None:
            gate.note_rate_limit(response.rate_limit, submission=False)
        return response

    # -- typed endpoints ---------------------------------------------------------------------
    async def status(self) -> ApiStatus:
        response = await self.read("/status")
        data = response.data
        if isinstance(data, dict):
            data = {**data, "message": response.body.get("message")}
        return response.parse(ApiStatus, data)

    async def account(self) -> AccountInfo:
        return (await self.read("/data/account")).parse(AccountInfo)

    async def list_page(
        self, *, limit: int = 20, offset: int = 0, retry: bool = True
    ) -> GenerationPage:
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        params = {"limit": limit, "offset": offset}
        response = await (self.read if retry else self.read_once)("/data/list/image", params)
        page = response.parse(GenerationPage)
        await self.saw(*page.generations)  # one gate call for the page
        return page

    async def generation(self, generation_id: str, *, retry: bool = True) -> Generation:
        if not isinstance(generation_id, str) or not generation_id.strip():
            raise ValueError(f"generation_id must be a non-empty string, got {generation_id!r}")
        segment = generation_id.strip()
        if not _UNRESERVED.fullmatch(segment):  # ids are UUIDs: quoting them changes nothing
            segment = quote(segment, safe="")
        path = "/image-generation/" + segment
        response = await (self.read if retry else self.read_once)(path)
        generation = response.parse(Generation)
        await self.saw(generation)
        return generation

    async def saw(self, *generations: Generation) -> None:
        """Every record read passes here: ended generations free their slots (one call)."""
        ended = [g for g in generations if g.status.is_terminal]
        for generation in ended:
            self.durations.observe(generation, account=self._account)
        if ended:
            await self._gate().release_many(g.generation_id for g in ended)
