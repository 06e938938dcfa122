"""The pytest-asyncio variants of ``babysea_client``: one per loop scope.

Registered by ``asyncsdk.testing``'s ``pytest_configure`` only when pytest-asyncio is active.
pytest-asyncio runs an async fixture in the loop of the fixture's ``loop_scope``, which must be
the loop the test runs in (the client's session belongs to that loop), so the plugin picks the
variant named after the test's loop scope (see ``_client_fixture_name``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest_asyncio

from . import _LOOP_SCOPES, _new_client

if TYPE_CHECKING:
    from .._client import AsyncClient
    from ..emulator import Emulator


def _variant(loop_scope: Any) -> Callable[..., AsyncIterator[AsyncClient]]:
    async def client(
        babysea_emulator: Emulator, babysea_client_options: dict[str, Any]
    ) -> AsyncIterator[AsyncClient]:
        async with _new_client(babysea_emulator, babysea_client_options) as opened:
            yield opened

    fixture: Callable[..., AsyncIterator[AsyncClient]] = pytest_asyncio.fixture(
        client, loop_scope=loop_scope, name=f"_babysea_client_asyncio_{loop_scope}"
    )
    return fixture


for _scope in _LOOP_SCOPES:
    globals()[f"client_{_scope}"] = _variant(_scope)
del _scope
