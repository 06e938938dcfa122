"""The submission protocol without sockets: a scripted transport and list, a real gate.

Each test scripts what the "service" answers to the POST and to the list reads, and checks
the outcome the protocol reaches, what it sent, and what the gate holds afterwards.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import asyncsdk
from asyncsdk import Generation, GenerationPage, GenerationStatus, Limits
from asyncsdk._errors import APIConnectionError, APIResponseValidationError, error_for
from asyncsdk._limits import LocalAccountGate
from asyncsdk._models import RateLimitInfo
from asyncsdk._request import build_request
from asyncsdk._submission import Request, Submitter, make_label, tag_digits
from asyncsdk._transport import Response

pytestmark = pytest.mark.anyio

LIMITS = Limits(submissions=5, window=1.0, concurrent=1, generation_timeout=2.0, settle_time=0.1)
_ids = itertools.count(1)


def created_answer() -> Response:
    gid = f"gen-{next(_ids)}"
    return Response(
        200, {"success": True, "data": {"generationId": gid, "creditCost": 2}}, "r", None
    )


def record(name: str, gid: str, status: str = "processing") -> Generation:
    return Generation(gid, GenerationStatus(status), name=name, prompt="a kite")


class Service:
    """What the fake service answers: a script for POSTs, one for list reads."""

    def __init__(self, posts: list[object], lists: list[object] | None = None) -> None:
        self.posts = posts
        self.lists = lists or []
        self.sent: list[dict[str, Any]] = []
        self.list_reads = 0
        self.timeout = 1.0
        self.listing: list[Generation] = []

    async def request(self, method: str, path: str, *, json_body: Any = None, **_: Any) -> Any:
        assert method == "POST"
        self.sent.append(dict(json_body))
        answer = self.posts.pop(0)
        if callable(answer):
            answer = answer(json_body)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def list_page(self, *, limit: int, offset: int) -> GenerationPage:
        self.list_reads += 1
        answer = self.lists.pop(0) if self.lists else self.listing
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, list)
        page = answer[offset : offset + limit]
        return GenerationPage(tuple(page), total=len(answer), limit=limit, offset=offset)


async def read_generation(generation_id: str) -> Generation:
    raise AssertionError("not expected")


def submitter(service: Service, gate: LocalAccountGate | None = None, **kw: Any) -> Submitter:
    return Submitter(
        service,  # type: ignore[arg-type]
        gate or LocalAccountGate(LIMITS, probe_interval=0.02),
        service.list_page,
        kw.pop("read_generation", read_generation),
        kw.pop("limits", LIMITS),
        kw.pop("max_retries", 3),
        (0.001, 0.01),
    )


async def request(**kw: Any) -> Request:
    return await build_request("google/nano-banana", "a kite", **kw)


def lost(exc: BaseException | None = None) -> Callable[[Any], BaseException]:
    """The service creates the generation, and the answer never comes back."""

    def answer(body: Any) -> BaseException:
        SERVICE.listing.insert(0, record(body["name"], f"gen-{next(_ids)}"))
        return exc or APIConnectionError("connection reset")

    return answer


SERVICE: Service


@pytest.fixture(autouse=True)
def _reset() -> None:
    global SERVICE
    SERVICE = Service([])


async def test_a_created_answer_holds_the_slot_under_its_generation() -> None:
    SERVICE.posts = [created_answer()]
    sub = submitter(SERVICE)
    result = await sub.submit(await request())
    assert result.tag == SERVICE.sent[0]["name"]
    assert result.tag is not None and result.tag.startswith("sdk-")
    assert sub.gate.statistics().holders == (result.generation_id,)


async def test_a_request_that_never_left_costs_no_window_place() -> None:
    SERVICE.posts = [APIConnectionError("refused", request_sent=False), created_answer()]
    sub = submitter(SERVICE)
    await sub.submit(await request())
    assert len(SERVICE.sent) == 2 and SERVICE.list_reads == 0
    assert sub.gate.statistics().submissions_in_window == 1  # only the one that left


async def test_a_5xx_that_promises_nothing_is_resent_without_looking() -> None:
    failed = error_for(500, "GENERATION_START_FAILED", "no")
    SERVICE.posts = [failed, created_answer()]
    await submitter(SERVICE).submit(await request())
    assert len(SERVICE.sent) == 2 and SERVICE.list_reads == 0


@pytest.mark.parametrize(
    "cause",
    [
        APIConnectionError("reset"),
        APIResponseValidationError("truncated", status=200),
        error_for(502, None, "bad gateway"),
    ],
)
async def test_an_unknown_outcome_is_adopted_when_the_list_shows_it(cause: Exception) -> None:
    SERVICE.posts = [lost(cause)]
    sub = submitter(SERVICE)
    result = await sub.submit(await request())
    assert len(SERVICE.sent) == 1
    assert result.generation_id == SERVICE.listing[0].generation_id
    assert sub.gate.statistics().holders == (result.generation_id,)


async def test_could_not_look_is_never_not_there() -> None:
    SERVICE.posts = [lost()]
    SERVICE.lists = [error_for(503, None, "<html>down</html>")] * 5
    result = await submitter(SERVICE).submit(await request())
    assert len(SERVICE.sent) == 1 and SERVICE.list_reads == 6
    assert result.generation_id == SERVICE.listing[0].generation_id


async def test_looked_too_early_is_never_not_there() -> None:
    hidden: list[Generation] = []

    def lost_behind_a_lag(body: Any) -> BaseException:
        hidden.append(record(body["name"], "gen-late"))
        return APIConnectionError("reset")

    SERVICE.posts = [lost_behind_a_lag]
    SERVICE.lists = [[], []]  # two reads inside the settle time show nothing yet
    SERVICE.listing = hidden
    result = await submitter(SERVICE).submit(await request())
    assert result.generation_id == "gen-late" and len(SERVICE.sent) == 1


async def test_a_settled_absence_sends_again_once() -> None:
    SERVICE.posts = [APIConnectionError("reset"), created_answer()]  # nothing was created
    started = time.monotonic()
    await submitter(SERVICE).submit(await request())
    assert len(SERVICE.sent) == 2
    assert SERVICE.sent[0]["name"] == SERVICE.sent[1]["name"]  # the same request, resent
    assert time.monotonic() - started >= LIMITS.settle_time


async def test_the_callers_deadline_ends_it_with_submission_unknown_and_an_orphan() -> None:
    SERVICE.posts = [lost()]
    SERVICE.lists = [error_for(500, "INTERNAL_SERVER_ERROR", "down")] * 1000
    sub = submitter(SERVICE)
    with pytest.raises(asyncsdk.SubmissionUnknownError) as caught, anyio.fail_after(0.3):
        await sub.submit(await request())
    assert caught.value.tag == SERVICE.sent[0]["name"]
    (holder,) = sub.gate.holders()
    assert (holder.orphan, holder.tag) == (True, caught.value.tag)
    assert "bye_" not in str(caught.value)


async def test_a_4xx_is_raised_and_frees_the_slot() -> None:
    SERVICE.posts = [error_for(400, "VALIDATION_ERROR", "bad")]
    sub = submitter(SERVICE)
    with pytest.raises(asyncsdk.BadRequestError):
        await sub.submit(await request())
    assert sub.gate.statistics().in_progress == 0


async def test_a_headerless_rate_429_fills_the_window() -> None:
    SERVICE.posts = [error_for(429, "RATE_LIMIT_ERROR", "slow down")]
    sub = submitter(SERVICE)
    with pytest.raises(asyncsdk.RateLimitError), anyio.fail_after(0.5):
        await sub.submit(await request())  # the retry would wait a window: past the deadline
    assert sub.gate.statistics().submissions_in_window == LIMITS.submissions


async def test_a_rate_429_with_headers_resyncs_from_them() -> None:
    info = RateLimitInfo(limit=5, remaining=2, reset_at=None, retry_after=None)
    SERVICE.posts = [error_for(429, "RATE_LIMIT_ERROR", "slow", rate_limit=info), created_answer()]
    sub = submitter(SERVICE)
    await sub.submit(await request())
    assert sub.gate.statistics().submissions_in_window == 5 - 2 + 1


async def test_a_concurrent_429_keeps_the_slot_for_what_runs() -> None:
    SERVICE.listing = [record("elsewhere", "gen-foreign")]
    SERVICE.posts = [error_for(429, "CONCURRENT_GENERATION_ERROR", "busy")]
    polled: list[str] = []

    async def still_running(generation_id: str) -> Generation:
        polled.append(generation_id)
        return record("elsewhere", generation_id)

    sub = submitter(SERVICE, read_generation=still_running)
    with anyio.move_on_after(0.3):  # the retry waits in the gate while it runs
        await sub.submit(await request())
    assert sub.gate.statistics().holders == ("gen-foreign",)  # found and held at once
    assert len(SERVICE.sent) == 1 and set(polled) == {"gen-foreign"}  # no second 429


async def test_an_idempotency_key_makes_the_tag_and_recovery_adopts() -> None:
    first = await request(idempotency_key="order-7")
    again = await request(idempotency_key="order-7")
    assert first.tag == again.tag
    assert first.tag != (await request(idempotency_key="order-8")).tag
    SERVICE.listing = [record(first.tag, "gen-earlier", "succeeded")]
    sub = submitter(SERVICE)
    result = await sub.submit(again, recover_since=time.time() - 60)
    assert result.generation_id == "gen-earlier" and SERVICE.sent == []
    assert sub.gate.statistics().in_progress == 0  # it had ended: nothing to hold


async def test_a_reused_key_with_another_prompt_is_refused() -> None:
    req = await build_request("google/nano-banana", "another prompt", idempotency_key="k")
    SERVICE.listing = [record(req.tag, "gen-earlier")]
    with pytest.raises(ValueError, match="idempotency key"):
        await submitter(SERVICE).submit(req, recover_since=time.time() - 60)


async def test_tags_are_unique_whatever_the_name() -> None:
    a, b = await request(name="kite"), await request(name="kite")
    assert a.tag != b.tag and a.tag.startswith("kite~") and b.tag.startswith("kite~")
    assert len(make_label("x" * 30, "0" * 12)) == 30


async def test_a_misspelled_parameter_is_a_type_error_before_anything() -> None:
    with pytest.raises(TypeError, match="did you mean 'aspect_ratio'"):
        await build_request("google/nano-banana", "a kite", extra={"aspect_ratoi": "1:1"})
    ok = await build_request("google/nano-banana", "a kite", extra={"seed": 1, "go_fast": True})
    assert ok.body["seed"] == 1


async def test_a_reservation_gives_back_what_it_did_not_use() -> None:
    sub = submitter(SERVICE)
    async with sub.reserve() as reservation:
        assert reservation.open
    stats = sub.gate.statistics()
    assert (stats.in_progress, stats.submissions_in_window) == (0, 0)


def test_tag_digits_differ_in_a_forked_child_and_ignore_the_application_seed() -> None:
    """A forked worker does not repeat its parent's tags (it would adopt the parent's
    generation), and ``random.seed()`` in the application does not make tags repeat across
    runs."""
    random.seed(7)
    first = tag_digits(None)
    random.seed(7)
    assert tag_digits(None) != first
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only reports its tag
        os.write(write, tag_digits(None).encode())
        os._exit(0)
    os.close(write)
    try:
        theirs = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(child, 0)
    ours = tag_digits(None)
    assert len(theirs) == len(ours) == 12
    assert theirs != ours
