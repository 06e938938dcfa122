"""The hostile-server faults of issue 10, checked against the emulator's own records.

Each test drives a real emulator on 127.0.0.1:0 with plain aiohttp and asserts what the server
did (created or not, charged or not, window place taken or not), not what a client believes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import anyio
import attrs
import pytest
from multidict import CIMultiDictProxy

from asyncsdk.emulator import Emulator, Faults

if TYPE_CHECKING:
    from .conftest import Api, Reply, Serve

pytestmark = pytest.mark.anyio

SUBMIT = "/image-generation/google/nano-banana"
HINTS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")
DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@attrs.frozen
class Raw:
    status: int
    content_type: str
    body: bytes
    headers: CIMultiDictProxy[str]


async def raw(api: Api, method: str, path: str, **kwargs: Any) -> Raw:
    """One request whose body is kept as bytes (garbled answers are not JSON)."""
    headers = kwargs.pop("headers", {"Authorization": f"Bearer {api.token}"})
    url = api.base_url + path
    async with api.session.request(method, url, headers=headers, **kwargs) as response:
        body = await response.read()
        return Raw(response.status, response.content_type, body, response.headers)


async def submit_raw(api: Api, **kwargs: Any) -> Raw:
    return await raw(api, "POST", SUBMIT, json={"prompt": "a red kite over the sea"}, **kwargs)


async def poll_until(call: Callable[[], Awaitable[Reply]], done: Callable[[Reply], bool]) -> Reply:
    """Repeat `call` until its reply is `done` (at most 2 seconds)."""
    with anyio.fail_after(2):
        while True:
            reply = await call()
            if done(reply):
                return reply
            await anyio.sleep(0.02)


def remaining(emulator: Emulator, token: str) -> int:
    """Places left in the sliding window, read from the server's own state."""
    account = emulator._state.account(token)
    return emulator.settings.submissions - len(account.window)


# 1. Lost answers on both sides of the create.


async def test_drop_before_create_creates_nothing(serve: Serve) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.drop_before_create(1)
    with pytest.raises(DROPPED):
        await api.submit()
    assert emulator.generations(api.token) == []
    assert emulator.credits(api.token)["total"] == 10
    assert remaining(emulator, api.token) == 10
    stats = emulator.stats
    assert stats.created[api.token] == 0
    assert stats.not_created[api.token] == {"drop_before_create": 1}
    assert stats.faults == {"drop_before_create": 1}
    accepted = await api.submit()  # only one drop was scripted
    assert accepted.status == 200
    assert accepted.headers["X-RateLimit-Remaining"] == "9"


async def test_a_delayed_submission_is_created_after_its_client_gave_up(serve: Serve) -> None:
    # A slow back end: the request arrived whole, the client stopped waiting, and the
    # service still acts on it (a lost answer, not a request that never arrived).
    emulator, api = await serve()
    emulator.faults.delay(0.3, count=1, method="POST")
    with pytest.raises(asyncio.TimeoutError):
        await api.submit(timeout=aiohttp.ClientTimeout(total=0.1))
    for _ in range(150):  # at most 3 s: it is created once the delay is over
        if emulator.generations(api.token):
            break
        await anyio.sleep(0.02)
    assert emulator.stats.created[api.token] == 1


async def test_drop_before_create_leaves_reads_alone(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.drop_before_create(1)
    assert (await api.get("/data/list/image")).status == 200
    with pytest.raises(DROPPED):
        await api.submit()


async def test_drop_after_create_is_recorded_as_created(serve: Serve) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.drop_after_create(1)
    with pytest.raises(DROPPED):
        await api.submit()
    assert remaining(emulator, api.token) == 9
    assert emulator.stats.not_created[api.token] == {}
    assert emulator.stats.faults == {"drop_after_create": 1}


# 2. Outages for a duration.


@pytest.mark.parametrize("kind", ["500", "html503"])
async def test_a_list_outage_answers_its_kind_then_ends(serve: Serve, kind: str) -> None:
    emulator, api = await serve()
    generation_id = (await api.submit()).data["generationId"]
    started = time.monotonic()
    emulator.faults.outage(0.3, kind=kind)  # type: ignore[arg-type]
    reply = await raw(api, "GET", "/data/list/image")
    if kind == "500":
        assert (reply.status, reply.content_type) == (500, "application/json")
        assert json.loads(reply.body)["error"] == "INTERNAL_SERVER_ERROR"
    else:
        assert (reply.status, reply.content_type) == (503, "text/html")
        assert b"503" in reply.body
    # Other routes are up; the outage is not consumed by requests.
    assert (await api.get(f"/image-generation/{generation_id}")).status == 200
    assert (await api.get("/status")).status == 200
    assert (await raw(api, "GET", "/data/list/image")).status == reply.status
    await poll_until(lambda: api.get("/data/list/image"), lambda reply: reply.status == 200)
    assert time.monotonic() - started >= 0.3
    assert emulator.stats.faults["outage"] >= 2


async def test_a_timeout_outage_holds_then_hangs_up(serve: Serve) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.outage(0.3, route="all", kind="timeout")
    started = time.monotonic()
    with pytest.raises(DROPPED):
        await api.submit()
    assert 0.25 <= time.monotonic() - started < 1.0  # held for the rest of the outage, no more
    assert emulator.generations(api.token) == []
    assert emulator.credits(api.token)["total"] == 10
    assert emulator.stats.not_created[api.token] == {"outage": 1}
    assert (await api.submit()).status == 200


async def test_a_get_held_by_a_timeout_outage_is_resent_by_aiohttp(serve: Serve) -> None:
    # aiohttp resends an idempotent request once when the server hangs up, so a GET held to
    # the end of the outage is answered by its resend: an outage shorter than the client's
    # timeout is only latency for an aiohttp client.
    emulator, api = await serve()
    emulator.faults.outage(0.3, kind="timeout")
    started = time.monotonic()
    assert (await api.get("/data/list/image")).status == 200
    assert time.monotonic() - started >= 0.25
    assert emulator.stats.requests[("GET", "/api/v1/data/list/image")] == 2


async def test_a_timeout_outage_makes_a_client_give_up(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.outage(0.2, kind="timeout")
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await api.get("/data/list/image", timeout=aiohttp.ClientTimeout(total=0.05))
    await anyio.sleep(0.2)
    assert (await api.get("/data/list/image")).status == 200


@pytest.mark.parametrize(
    ("route", "down"),
    [
        ("list", {"list"}),
        ("status", {"status"}),
        ("reads", {"list", "status", "ping", "account"}),
        ("all", {"list", "status", "ping", "account", "submit"}),
    ],
)
async def test_outage_routes(serve: Serve, route: str, down: set[str]) -> None:
    emulator, api = await serve(credits=10)
    generation_id = (await api.submit()).data["generationId"]
    await api.wait_for(generation_id, "succeeded")
    emulator.faults.outage(5.0, route=route)  # type: ignore[arg-type]
    paths = {
        "list": "/data/list/image",
        "status": f"/image-generation/{generation_id}",
        "ping": "/status",
        "account": "/data/account",
    }
    failing = {name for name, path in paths.items() if (await api.get(path)).status == 500}
    submitted = await api.submit()
    if submitted.status == 500:
        failing.add("submit")
    assert failing == down
    created = 1 if "submit" in down else 2
    assert len(emulator.generations(api.token)) == created
    assert emulator.credits(api.token)["total"] == 10 - 2 * created
    if "submit" in down:
        assert emulator.stats.not_created[api.token] == {"outage": 1}
        assert remaining(emulator, api.token) == 9


# 3. List lag.


async def test_list_lag_hides_new_generations_for_a_while(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.list_lag(0.3)
    created = time.monotonic()
    generation_id = (await api.submit()).data["generationId"]
    listing = (await api.get("/data/list/image")).data
    assert (listing["generations"], listing["total"]) == ([], 0)
    assert (await api.generation(generation_id))["generationId"] == generation_id
    await poll_until(lambda: api.get("/data/list/image"), lambda reply: reply.data["total"] == 1)
    assert time.monotonic() - created >= 0.3
    emulator.faults.list_lag(0)
    await api.wait_for(generation_id, "succeeded")
    newest = (await api.submit()).data["generationId"]
    listing = (await api.get("/data/list/image")).data
    assert listing["generations"][0]["generationId"] == newest and listing["total"] == 2


# 4. Unreadable 2xx answers.


@pytest.mark.parametrize("kind", ["truncated", "html", "no_id", "empty"])
async def test_garbled_submissions_still_create(serve: Serve, kind: str) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.garble_submissions(1, kind)  # type: ignore[arg-type]
    reply = await submit_raw(api)
    assert reply.status == 200
    assert reply.headers["X-RateLimit-Remaining"] == "9"
    if kind == "truncated":
        assert reply.content_type == "application/json" and reply.body.startswith(b'{"success"')
        with pytest.raises(ValueError):
            json.loads(reply.body)
    elif kind == "html":
        assert reply.content_type == "text/html" and reply.body.startswith(b"<!DOCTYPE html>")
    elif kind == "no_id":
        assert json.loads(reply.body) == {
            "success": True,
            "data": {"status": "starting", "creditCost": 2},
        }
    else:
        assert reply.body == b""
    [record] = emulator.generations(api.token)
    assert emulator.credits(api.token)["total"] == 8
    assert remaining(emulator, api.token) == 9
    assert emulator.stats.not_created[api.token] == {}
    assert emulator.stats.faults == {"garble_submissions": 1}
    await api.wait_for(record["generationId"], "succeeded")
    assert (await api.submit()).status == 200  # only one garble was scripted


@pytest.mark.parametrize("kind", ["truncated", "html", "no_id", "empty"])
async def test_garbled_reads(serve: Serve, kind: str) -> None:
    emulator, api = await serve()
    generation_id = (await api.submit()).data["generationId"]
    emulator.faults.garble_reads(2, kind, route="status")  # type: ignore[arg-type]
    missing = "/image-generation/00000000-0000-4000-8000-000000000000"
    assert (await api.get(missing)).status == 404  # a failing read is not garbled
    assert (await api.get("/data/list/image")).status == 200  # another route
    reply = await raw(api, "GET", f"/image-generation/{generation_id}")
    assert reply.status == 200
    if kind == "truncated":
        with pytest.raises(ValueError):
            json.loads(reply.body)
    elif kind == "html":
        assert reply.content_type == "text/html"
    elif kind == "no_id":
        data = json.loads(reply.body)["data"]
        assert "generationId" not in data and "status" not in data and data["prompt"]
    else:
        assert reply.body == b""
    assert (await raw(api, "GET", f"/image-generation/{generation_id}")).body == reply.body
    assert (await api.get(f"/image-generation/{generation_id}")).status == 200  # two only
    assert emulator.stats.faults == {"garble_reads": 2}


async def test_a_garbled_list_without_ids(serve: Serve) -> None:
    emulator, api = await serve(concurrent=2)
    await api.submit()
    await api.submit()
    emulator.faults.garble_reads(1, "no_id", route="list")
    data = (await api.get("/data/list/image")).data
    assert data["total"] == 2 and len(data["generations"]) == 2
    for record in data["generations"]:
        assert "generationId" not in record and "status" not in record and record["name"]


# 5. Error pages that echo the request headers.


@pytest.mark.parametrize("kind", ["html", "json"])
async def test_echo_headers_prints_the_key(serve: Serve, kind: str) -> None:
    emulator, api = await serve(credits=10)
    emulator.faults.echo_headers(1, status=502, method="POST", kind=kind)  # type: ignore[arg-type]
    assert (await api.get("/status")).status == 200  # method filter
    headers = {"Authorization": f"Bearer {api.token}", "X-API-Key": api.token}
    reply = await submit_raw(api, headers=headers)
    assert reply.status == 502
    text = reply.body.decode()
    if kind == "html":
        assert reply.content_type == "text/html"
        assert f"Authorization: Bearer {api.token}" in text
    else:
        body = json.loads(text)
        assert body["success"] is False and body["error"] == "INTERNAL_SERVER_ERROR"
        assert f"Authorization: Bearer {api.token}" in body["message"]
    assert f"X-API-Key: {api.token}" in text
    assert emulator.generations(api.token) == []
    assert emulator.credits(api.token)["total"] == 10
    assert remaining(emulator, api.token) == 10
    assert emulator.stats.not_created[api.token] == {"echo_headers": 1}
    assert (await api.submit()).status == 200


async def test_echo_headers_on_reads(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.echo_headers(2, status=500)
    for _ in range(2):
        reply = await raw(api, "GET", "/data/list/image")
        assert reply.status == 500 and api.token.encode() in reply.body
    assert (await api.get("/data/list/image")).status == 200


# 6. Headerless 429s.


async def test_strip_rate_limit_headers_once(serve: Serve) -> None:
    emulator, api = await serve()
    emulator.faults.strip_rate_limit_headers(1)
    assert (await api.get("/status")).status == 200  # no hints to strip: not consumed
    stripped = await api.submit()
    assert stripped.status == 200
    assert not any(name in stripped.headers for name in HINTS)
    assert emulator.stats.faults == {"strip_rate_limit_headers": 1}
    await api.wait_for(stripped.data["generationId"], "succeeded")
    assert (await api.submit()).headers["X-RateLimit-Remaining"] == "8"


async def test_stripped_429s_are_still_429s(serve: Serve) -> None:
    emulator, api = await serve(submissions=2, concurrent=1, processing_time=0.3)
    emulator.faults.strip_rate_limit_headers()
    first = await api.submit()
    busy = await api.submit()
    assert (busy.status, busy.error) == (429, "CONCURRENT_GENERATION_ERROR")
    await api.wait_for(first.data["generationId"], "succeeded")
    await api.submit()
    full = await api.submit()
    assert (full.status, full.error) == (429, "RATE_LIMIT_ERROR")
    for reply in (first, busy, full):
        assert not any(name in reply.headers for name in HINTS), reply.headers
    assert emulator.stats.throttled[api.token] == {
        "CONCURRENT_GENERATION_ERROR": 1,
        "RATE_LIMIT_ERROR": 1,
    }
    assert emulator.stats.not_created[api.token] == {
        "CONCURRENT_GENERATION_ERROR": 1,
        "RATE_LIMIT_ERROR": 1,
    }
    emulator.faults.clear()
    again = await api.submit()
    assert again.status == 429 and "Retry-After" in again.headers


# 7. A status outside the documented four.


async def test_unknown_status_ends_for_ever_and_frees_the_slot(serve: Serve) -> None:
    emulator, api = await serve(credits=10, concurrent=1)
    emulator.faults.unknown_status(1, "canceled")
    started = time.monotonic()
    generation_id = (await api.submit()).data["generationId"]
    assert emulator.credits(api.token)["total"] == 8
    record = await api.wait_for(generation_id, "canceled")
    # From the end of `starting` on, long before the auto-cancel deadline.
    assert time.monotonic() - started < emulator.settings.generation_timeout / 2
    assert record["failureReason"] is None and record["outputImages"] == []
    listed = (await api.get("/data/list/image")).data["generations"]
    assert [(g["generationId"], g["status"]) for g in listed] == [(generation_id, "canceled")]
    # No slot held on the server and the credits came back, long before the auto-cancel.
    second = await api.submit()
    assert second.status == 200, second.body
    assert emulator.credits(api.token)["total"] == 8
    await api.wait_for(second.data["generationId"], "succeeded")
    await anyio.sleep(emulator.settings.generation_timeout)
    assert (await api.generation(generation_id))["status"] == "canceled"
    assert emulator.stats.faults == {"unknown_status": 1}


# 8. Streaks on one read route.


async def test_fail_reads_on_one_route(serve: Serve) -> None:
    emulator, api = await serve()
    generation_id = (await api.submit()).data["generationId"]
    emulator.faults.fail_reads(2, "FETCH_FAILED", route="status")
    assert (await api.get("/data/list/image")).status == 200
    assert (await api.get("/status")).status == 200
    for _ in range(2):
        reply = await api.get(f"/image-generation/{generation_id}")
        assert (reply.status, reply.error) == (500, "FETCH_FAILED")
    assert (await api.get(f"/image-generation/{generation_id}")).status == 200


async def test_fail_reads_queues_keep_their_order_per_route(serve: Serve) -> None:
    emulator, api = await serve()
    generation_id = (await api.submit()).data["generationId"]
    emulator.faults.fail_reads(1, "FETCH_FAILED", route="list")
    emulator.faults.fail_reads(1, "IMAGE_UPLOAD_FAILED", route="reads")
    assert (await api.get(f"/image-generation/{generation_id}")).error == "IMAGE_UPLOAD_FAILED"
    assert (await api.get("/data/list/image")).error == "FETCH_FAILED"
    assert (await api.get("/data/list/image")).status == 200


# 9. Chaos.


def readable(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "unreadable"
    inner = data.get("data") or {}
    records = inner.get("generations", [inner])
    return "ok" if all("generationId" in record for record in records) else "no_id"


async def chaos_run(seed: int) -> tuple[list[str], dict[str, int]]:
    """40 sequential submissions and reads under chaos; what each request met."""
    async with Emulator(concurrent=100, submissions=1000, time_scale=0.01) as emulator:
        emulator.faults.chaos(
            seed,
            drop_before=0.1,
            drop_after=0.1,
            garble_submission=0.1,
            submit_5xx=0.1,
            read_5xx=0.2,
            garble_read=0.2,
            unknown_status=0.2,
        )
        seen: list[str] = []
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {emulator.tokens[0]}"}
            for _ in range(40):
                for method, path in (("POST", SUBMIT), ("GET", "/data/list/image")):
                    try:
                        async with session.request(
                            method,
                            emulator.base_url + path,
                            headers=headers,
                            json={"prompt": "p"} if method == "POST" else None,
                        ) as response:
                            seen.append(
                                f"{method} {response.status} {readable(await response.read())}"
                            )
                    except DROPPED:
                        seen.append(f"{method} dropped")
        await anyio.sleep(0.05)
        statuses = [record["status"] for record in emulator.generations(emulator.tokens[0])]
        seen.append(",".join(statuses))
        return seen, dict(emulator.stats.faults)


async def test_chaos_is_reproducible() -> None:
    first, faults = await chaos_run(7)
    again, faults_again = await chaos_run(7)
    other, _ = await chaos_run(8)
    assert first == again and faults == faults_again
    assert first != other
    # Every fault of the mix struck at least once in 40 rounds.
    assert set(faults) == {
        "drop_before_create", "drop_after_create", "garble_submissions", "fail_submissions",
        "fail_reads", "garble_reads", "unknown_status",
    }  # fmt: skip


async def test_chaos_records_match_the_server(serve: Serve) -> None:
    emulator, api = await serve(concurrent=100, submissions=1000)
    emulator.faults.chaos(3, drop_before=0.3, submit_5xx=0.3)
    outcomes = []
    for _ in range(30):
        try:
            outcomes.append((await api.submit()).status)
        except DROPPED:
            outcomes.append(0)
    stats = emulator.stats
    assert len(emulator.generations(api.token)) == outcomes.count(200) == stats.created[api.token]
    assert stats.not_created[api.token] == {
        "drop_before_create": outcomes.count(0),
        "GENERATION_START_FAILED": outcomes.count(500),
    }
    emulator.faults.clear()
    assert all([(await api.submit()).status == 200 for _ in range(5)])


# Records and arguments.


async def test_generations_record_the_name_as_sent(serve: Serve) -> None:
    emulator, api = await serve(concurrent=3)
    before = time.time()
    tagged = await api.submit(json={"prompt": "a kite", "name": "job-1 #a1b2c3d4e5"})
    untagged = await api.submit(json={"prompt": "an untagged kite over the long sea shore"})
    emulator.faults.unknown_status(1)
    odd = await api.submit(json={"prompt": "a kite", "name": "odd"})
    records = {r["generationId"]: r for r in emulator.generations(api.token)}
    assert records[tagged.data["generationId"]]["name"] == "job-1 #a1b2c3d4e5"
    assert records[untagged.data["generationId"]]["name"] == "an untagged kite over the long"
    for record in records.values():
        created = datetime.fromisoformat(record["createdAt"]).replace(tzinfo=timezone.utc)
        assert before <= created.timestamp() <= time.time()
    await api.wait_for(tagged.data["generationId"], "succeeded")
    await api.wait_for(odd.data["generationId"], "canceled")


def test_new_fault_arguments_are_checked() -> None:
    faults = Faults()
    for bad in (
        lambda: faults.drop_before_create(0),
        lambda: faults.outage(-1.0),
        lambda: faults.outage(float("inf")),
        lambda: faults.outage(1.0, route="submit"),  # type: ignore[arg-type]
        lambda: faults.outage(1.0, kind="502"),  # type: ignore[arg-type]
        lambda: faults.list_lag(-0.1),
        lambda: faults.garble_submissions(1, "gzip"),  # type: ignore[arg-type]
        lambda: faults.garble_reads(1, route="all"),  # type: ignore[arg-type]
        lambda: faults.echo_headers(1, status=200),
        lambda: faults.echo_headers(1, kind="xml"),  # type: ignore[arg-type]
        lambda: faults.echo_headers(1, method="PUT"),  # type: ignore[arg-type]
        lambda: faults.strip_rate_limit_headers(0),
        lambda: faults.unknown_status(1, "failed"),
        lambda: faults.unknown_status(1, ""),
        lambda: faults.fail_reads(1, route="list-all"),  # type: ignore[arg-type]
        lambda: faults.chaos(1, drop_after=1.5),
        lambda: faults.chaos(1, read_5xx=-0.1),
        lambda: faults.chaos("seed"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            bad()


async def test_clear_forgets_the_new_faults(serve: Serve) -> None:
    emulator, api = await serve()
    faults = emulator.faults
    faults.drop_before_create(3)
    faults.outage(5.0, route="all")
    faults.list_lag(5.0)
    faults.garble_submissions(3)
    faults.garble_reads(3)
    faults.echo_headers(3)
    faults.strip_rate_limit_headers()
    faults.unknown_status(3)
    faults.chaos(1, drop_before=1.0, read_5xx=1.0)
    faults.clear()
    reply = await api.submit()
    assert reply.status == 200 and "X-RateLimit-Remaining" in reply.headers
    assert len((await api.get("/data/list/image")).data["generations"]) == 1
    await api.wait_for(reply.data["generationId"], "succeeded")
    assert emulator.stats.faults == {}
