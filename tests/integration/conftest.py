"""Shared fixtures for integration tests: emulators on real sockets.

`serve(**overrides)` starts an `Emulator` on 127.0.0.1:0 with compressed durations (`FAST`,
the testing plugin's `COMPRESSED`) on the plugin's machinery (`asyncsdk.testing.EmulatorThread`:
its own thread and event loop, as users' `babysea_emulator` runs), and returns it with a
plain-aiohttp `Api` helper bound to its first token; both are closed when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from multidict import CIMultiDictProxy

from asyncsdk.emulator import Emulator
from asyncsdk.testing import COMPRESSED, EmulatorThread, emulator_options

#: Durations short enough for the whole suite to run in seconds, long enough to observe
#: every lifecycle state with a few milliseconds of scheduling noise.
FAST: Mapping[str, Any] = COMPRESSED


@attrs.frozen
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def data(self) -> Any:
        return self.body["data"]


@attrs.define
class Api:
    """Plain aiohttp calls against one emulator, authenticated with `token` by default."""

    session: aiohttp.ClientSession
    base_url: str
    token: str

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        if headers is None:
            headers = {"Authorization": f"Bearer {token or self.token}"}
        url = path if path.startswith("http") else self.base_url + path
        async with self.session.request(method, url, headers=headers, **kwargs) as response:
            raw = await response.read()
            is_json = response.content_type == "application/json"
            body = await response.json() if is_json else raw
            return Reply(response.status, response.headers, body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def submit(self, model: str = "google/nano-banana", **kwargs: Any) -> Reply:
        body = kwargs.pop("json", None) or {"prompt": "a red kite over the sea"}
        return await self.call("POST", f"/image-generation/{model}", json=body, **kwargs)

    async def generation(self, generation_id: str, **kwargs: Any) -> dict[str, Any]:
        reply = await self.get(f"/image-generation/{generation_id}", **kwargs)
        assert reply.status == 200, reply.body
        data: dict[str, Any] = reply.data
        return data

    async def wait_for(self, generation_id: str, status: str) -> dict[str, Any]:
        """Poll until the generation reaches `status` (at most 3 seconds)."""
        with anyio.fail_after(3):
            while True:
                record = await self.generation(generation_id)
                if record["status"] == status:
                    return record
                await anyio.sleep(0.01)


Serve = Callable[..., Awaitable[tuple[Emulator, Api]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> tuple[Emulator, Api]:
            served = EmulatorThread(**emulator_options(overrides))
            emulator = await anyio.to_thread.run_sync(served.start)
            stack.push_async_callback(anyio.to_thread.run_sync, served.close)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            return emulator, Api(session, emulator.base_url, emulator.tokens[0])

        yield start
