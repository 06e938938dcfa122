"""``asyncsdk.testing``: a pytest plugin for testing code that uses asyncsdk.

Installed with asyncsdk and registered by entry point (``pytest11``), so the fixtures below are
available in any test suite without a ``conftest.py`` line. Nothing is autouse: a test that
asks for none of them pays nothing (the emulator is imported on first use).

Fixtures (all function-scoped):

``babysea_emulator``
    A running :class:`asyncsdk.emulator.Emulator` on 127.0.0.1 (a free port) with compressed
    time (:data:`COMPRESSED`: a 0.5 s window, a 0.6 s auto-cancel, 0.15 s generations),
    served from a background thread with its own event loop, so it works in sync tests and
    under any async plugin or loop scope. Configure it with a marker, or by overriding
    ``babysea_emulator_options`` (a dict of :class:`Emulator` keyword arguments) in a
    ``conftest.py``; the marker wins::

        @pytest.mark.babysea_emulator(accounts=2, concurrent=2, credits=10)
        async def test_two_accounts(babysea_emulator): ...

``babysea_client``
    An :class:`asyncsdk.AsyncClient` for the emulator's first account, with the emulator's
    limits (:func:`limits_for`) and poll and retry timings compressed alike; closed after the
    test. Pass other ``AsyncClient`` options by overriding ``babysea_client_options``. It lives
    in the test's event loop, so the test must be async and run by anyio's pytest plugin
    (``@pytest.mark.anyio``, with an ``anyio_backend`` fixture returning ``"asyncio"``: aiohttp
    needs asyncio) or by pytest-asyncio >= 0.24 (``@pytest.mark.asyncio``, any ``loop_scope``,
    strict or auto mode).

``babysea_webhooks``
    A :class:`WebhookReceiver` the emulator delivers its signed ``generation.completed`` /
    ``generation.failed`` webhooks to; it verifies each one with
    :func:`asyncsdk.webhooks.verify`, keeps the verified ones in ``.events`` (the others in
    ``.rejected``), and ``await babysea_webhooks.wait(n)`` waits for ``n`` of them. Ask for it
    as a test argument (the emulator is wired to it when it starts).

Faults. The fault script is ``babysea_emulator.faults`` (:class:`asyncsdk.emulator.Faults`);
these methods are the supported, stable API for users' tests (each strikes the next matching
requests or generations, in order; ``faults.clear()`` forgets them all):

==========================  ================================================================
what to provoke             how
==========================  ================================================================
lost answers                ``faults.drop_after_create(n)`` (created and charged, then the
                            connection closes unanswered), ``faults.drop_before_create(n)``
                            (closed unanswered, nothing created)
5xx answers                 ``faults.fail_submissions(n, code)`` (nothing created),
                            ``faults.fail_reads(n, code, route=...)``,
                            ``faults.outage(seconds, route=..., kind=...)``
slow answers                ``faults.delay(seconds, count, method)``
429 RATE_LIMIT_ERROR        :func:`fill_window` (another process used the window)
429 CONCURRENT_GENERATION   :func:`occupy_slot` (another process runs a generation)
429s without headers        ``faults.strip_rate_limit_headers(n)``
stuck generations           ``faults.stick(n)`` (they end at the auto-cancel, refunded)
failed generations          ``faults.fail_generations(n, reason)``
NSFW rejections             submit :data:`NSFW_PROMPT` (400 NSFW_CONTENT_DETECTED)
webhook deliveries          the ``babysea_webhooks`` fixture
==========================  ================================================================

What the emulator saw is in ``babysea_emulator.stats`` (requests, 429s served by kind,
generations created per token, ...) and ``babysea_emulator.generations(token)``.

Example (the README's "Testing your code" shows a whole file)::

    import pytest
    import asyncsdk
    from asyncsdk.testing import NSFW_PROMPT

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend():
        return "asyncio"

    async def test_a_lost_answer_is_paid_once(babysea_client, babysea_emulator):
        babysea_emulator.faults.drop_after_create(1)
        await babysea_client.generate("google/nano-banana", "a red kite")
        assert babysea_emulator.stats.created[babysea_emulator.tokens[0]] == 1

    async def test_nsfw_is_refused(babysea_client):
        with pytest.raises(asyncsdk.ContentPolicyError):
            await babysea_client.generate("google/nano-banana", NSFW_PROMPT)

Outside pytest, :class:`EmulatorThread` is the same machinery as a context manager.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from .._client import AsyncClient
    from ..emulator import Emulator
    from ._harness import COMPRESSED as COMPRESSED
    from ._harness import DEFAULT_MODEL as DEFAULT_MODEL
    from ._harness import NSFW_PROMPT as NSFW_PROMPT
    from ._harness import EmulatorThread as EmulatorThread
    from ._harness import client_for as client_for
    from ._harness import emulator_options as emulator_options
    from ._harness import fill_window as fill_window
    from ._harness import limits_for as limits_for
    from ._harness import occupy_slot as occupy_slot
    from ._webhooks import WebhookReceiver as WebhookReceiver

__all__ = [
    "COMPRESSED",
    "DEFAULT_MODEL",
    "NSFW_PROMPT",
    "SUPPORTED_FAULTS",
    "EmulatorThread",
    "WebhookReceiver",
    "babysea_client",
    "babysea_client_options",
    "babysea_emulator",
    "babysea_emulator_options",
    "babysea_webhooks",
    "client_for",
    "emulator_options",
    "fill_window",
    "limits_for",
    "occupy_slot",
]

#: Public names imported on first use: loading the plugin does not import the emulator.
_LAZY: Final = {
    "COMPRESSED": "._harness",
    "DEFAULT_MODEL": "._harness",
    "NSFW_PROMPT": "._harness",
    "EmulatorThread": "._harness",
    "client_for": "._harness",
    "emulator_options": "._harness",
    "fill_window": "._harness",
    "limits_for": "._harness",
    "occupy_slot": "._harness",
    "WebhookReceiver": "._webhooks",
}
#: The ``emulator.faults`` methods that are supported, stable API for users' tests (the table
#: above). `Faults` has more knobs, for the SDK's own robustness tests, without that promise.
SUPPORTED_FAULTS: Final = (
    "clear",
    "delay",
    "drop_after_create",
    "drop_before_create",
    "fail_generations",
    "fail_reads",
    "fail_submissions",
    "outage",
    "stick",
    "strip_rate_limit_headers",
)
MARKER: Final = "babysea_emulator"
#: The loop scopes of pytest-asyncio; the client is opened in the test's own loop.
_LOOP_SCOPES: Final = ("function", "class", "module", "package", "session")
_ASYNCIO_PART: Final = "asyncsdk.testing._asyncio"


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): Emulator keyword arguments for the babysea_emulator fixture "
        "(over the compressed defaults and babysea_emulator_options)",
    )
    # The pytest-asyncio variants of the client fixture, only when that plugin is active: it
    # is imported by then, and importing it ourselves earlier would keep pytest from
    # rewriting its asserts (a warning, an error under filterwarnings=error).
    if "pytest_asyncio" in sys.modules and not config.pluginmanager.has_plugin(_ASYNCIO_PART):
        from . import _asyncio

        config.pluginmanager.register(_asyncio, _ASYNCIO_PART)


@pytest.fixture
def babysea_emulator_options() -> dict[str, Any]:
    """Override to configure ``babysea_emulator`` (``Emulator`` keyword arguments)."""
    return {}


@pytest.fixture
def babysea_client_options() -> dict[str, Any]:
    """Override to pass ``AsyncClient`` keyword arguments to ``babysea_client``."""
    return {}


@pytest.fixture
def babysea_emulator(
    request: pytest.FixtureRequest, babysea_emulator_options: dict[str, Any]
) -> Iterator[Emulator]:
    """A running emulator with compressed time, served from a background thread."""
    from ._harness import EmulatorThread, emulator_options

    layers = []
    for marker in reversed(list(request.node.iter_markers(MARKER))):  # the closest wins
        if marker.args:
            raise TypeError(f"@pytest.mark.{MARKER} takes keyword arguments only")
        layers.append(marker.kwargs)
    options = emulator_options(babysea_emulator_options, *layers)
    webhooks = "babysea_webhooks" in request.fixturenames and "webhook_url" not in options
    with EmulatorThread(webhooks=webhooks, **options) as served:
        yield served.emulator


@pytest.fixture
def babysea_webhooks(babysea_emulator: Emulator) -> WebhookReceiver:
    """Receives, verifies and keeps the emulator's webhook deliveries."""
    from ._harness import thread_of

    receiver = thread_of(babysea_emulator).webhooks
    if receiver is None:
        raise RuntimeError(
            "babysea_webhooks must be a test argument (not fetched later with "
            "getfixturevalue), and the emulator options must not set webhook_url"
        )
    return receiver


@pytest.fixture
def babysea_client(request: pytest.FixtureRequest, babysea_emulator: Emulator) -> AsyncClient:
    """An AsyncClient wired to ``babysea_emulator``, opened in the test's event loop."""
    client: AsyncClient = request.getfixturevalue(_client_fixture_name(request))
    return client


def _client_fixture_name(request: pytest.FixtureRequest) -> str:
    """Which async fixture opens the client in the loop the test runs in.

    anyio's plugin runs async fixtures of any test that uses ``anyio_backend``; pytest-asyncio
    runs those marked with ``pytest_asyncio.fixture`` in the loop of their ``loop_scope``.
    One function cannot be both (whichever plugin's hook ran first would take it), so there
    is one variant per plugin and loop scope and this picks the test's.
    """
    if "anyio_backend" in request.fixturenames:
        return "_babysea_client_anyio"
    marker = request.node.get_closest_marker("asyncio")
    if marker is not None and "pytest_asyncio" in sys.modules:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
        if scope is None:
            try:
                scope = request.config.getini("asyncio_default_test_loop_scope")
            except ValueError:  # an older pytest-asyncio without that option
                scope = None
        scope = scope or "function"
        if scope not in _LOOP_SCOPES:
            raise ValueError(f"unknown pytest-asyncio loop scope {scope!r}")
        return f"_babysea_client_asyncio_{scope}"
    raise RuntimeError(
        "babysea_client is opened in the test's event loop: make the test async and run it "
        "with anyio's pytest plugin (@pytest.mark.anyio) or pytest-asyncio "
        "(@pytest.mark.asyncio)"
    )


def _new_client(emulator: Emulator, options: dict[str, Any]) -> AsyncClient:
    from ._harness import client_for

    return client_for(emulator, **options)


@pytest.fixture
async def _babysea_client_anyio(
    anyio_backend_name: str, babysea_emulator: Emulator, babysea_client_options: dict[str, Any]
) -> AsyncIterator[AsyncClient]:
    if anyio_backend_name != "asyncio":
        raise RuntimeError(
            f"asyncsdk runs on asyncio (aiohttp), not {anyio_backend_name}: define an "
            "anyio_backend fixture returning 'asyncio'"
        )
    async with _new_client(babysea_emulator, babysea_client_options) as client:
        yield client
