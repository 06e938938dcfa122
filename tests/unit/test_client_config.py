"""AsyncClient construction, hygiene and lifecycle, without sockets."""

from __future__ import annotations

import gc
import logging

import pytest

from asyncsdk import AsyncClient, Limits

KEY = "bye_0123456789abcdef0123456789abcdef"
pytestmark = pytest.mark.anyio


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BABYSEA_API_KEY", raising=False)
    with pytest.raises(ValueError, match="BABYSEA_API_KEY"):
        AsyncClient()


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BABYSEA_API_KEY", KEY)
    monkeypatch.setenv("BABYSEA_BASE_URL", "https://example.test/api/v1/")
    client = AsyncClient()
    assert client.base_url == "https://example.test/api/v1"


def test_key_never_in_repr_or_vars_repr() -> None:
    client = AsyncClient(KEY, base_url="https://example.test/api/v1")
    assert KEY not in repr(client) and KEY not in repr(client._transport)
    assert "bye_" not in repr(client)


@pytest.mark.parametrize("url", ["http://example.com/api/v1", "http://10.0.0.5:8080/api/v1"])
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="plain http") as caught:
        AsyncClient(KEY, base_url=url)
    assert KEY not in str(caught.value)
    AsyncClient(KEY, base_url=url, allow_insecure_http=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/api/v1", "http://localhost/api/v1",
                                 "http://[::1]:8080/api/v1"])  # fmt: skip
def test_plain_http_to_loopback_is_fine(url: str) -> None:
    AsyncClient(KEY, base_url=url)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"timeout": 0}, "timeout"), ({"poll_interval": -1}, "poll_interval"),
     ({"max_retries": -1}, "max_retries"), ({"base_url": "ftp://x"}, "http")],
)  # fmt: skip
def test_bad_settings_are_named(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AsyncClient(KEY, **kwargs)  # type: ignore[arg-type]


async def test_closed_client_cannot_be_reused() -> None:
    async with AsyncClient(KEY, base_url="http://127.0.0.1:9/api/v1") as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await client.status()


async def test_bad_arguments_fail_before_sending() -> None:
    async with AsyncClient(KEY, base_url="http://127.0.0.1:9/api/v1", max_retries=0) as client:
        with pytest.raises(ValueError, match="lab/model"):
            await client.submit("no-slash", "a kite")
        with pytest.raises(ValueError, match="prompt"):
            await client.submit("google/nano-banana", "  ")
        with pytest.raises(ValueError, match="limit"):
            await client.list_generations(limit=0)
        with pytest.raises(ValueError, match="generation_id"):
            await client.get_generation("")


async def test_two_clients_on_one_key_share_a_gate() -> None:
    limits = Limits(submissions=3, window=1.0)
    url = "http://127.0.0.1:9/api/v1"
    async with (
        AsyncClient(KEY, base_url=url, limits=limits) as a,
        AsyncClient(KEY, base_url=url, limits=limits) as b,
    ):
        assert a.gate is b.gate
        other = AsyncClient(KEY + "0", base_url=url, limits=limits)
        assert other.gate is not a.gate
        await other.aclose()
        with pytest.raises(ValueError, match="different limits"):
            AsyncClient(KEY, base_url=url, limits=Limits(submissions=4)).gate  # noqa: B018


async def test_unclosed_client_warns(caplog: pytest.LogCaptureFixture) -> None:
    client = AsyncClient(KEY, base_url="http://127.0.0.1:9/api/v1")
    await client.__aenter__()
    client._transport.session  # noqa: B018  (open the session)
    with pytest.warns(ResourceWarning, match="unclosed"):
        client.__del__()
    await client.aclose()
    del client
    gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
