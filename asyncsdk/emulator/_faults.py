"""Scriptable fault injection: queues of misbehaviour consumed as requests arrive.

A test scripts faults on `emulator.faults` and the emulator consumes them, one per matching
request or generation, in arrival order. Every fault has exactly one decision point (a
``_take_*`` method below, called from one place in `_app` or `_state`); `chaos()` draws at the
same decision points, so a random fault behaves exactly like the scripted one of the same name.

Routes (the `route` argument of the read faults and of `outage`): ``"list"`` is List All Images,
``"status"`` is Check Image Status (``GET /image-generation/{id}``, *not* the ``/status`` ping),
``"reads"`` is every API GET (the ping and Account Info included), ``"all"`` is every API
request, submissions included.

What each fault stands for and where it strikes, in the order the emulator checks them:

1. `delay`: a slow network or an overloaded front end. The sleep happens before the request is
   handled, and the request is still handled if the client gave up meanwhile (a real server
   behind a slow network does the same), so a POST that timed out on the client may still
   create a generation.
2. `outage`: a backend down for a while. Until it ends, matching requests are answered
   INTERNAL_SERVER_ERROR, or an HTML 503 page (a load balancer with no healthy backend), or
   held without an answer until the outage ends and then hung up on (a black hole).
3. `echo_headers`: a misconfigured proxy or framework debug page that prints the request's
   headers, credentials included, as an HTML page or inside a JSON error `message`.
4. `fail_reads` / `fail_submissions`: an HTTP 500 answer from the seed's 500 family.
5. `drop_before_create`: the connection is closed without any HTTP response before the
   submission is processed (a proxy or keep-alive race that resets the connection).

   Faults 2-5 strike before authentication and before anything else, so nothing is created
   or charged and a submission takes no place in the sliding window.
6. `drop_after_create`: the generation is created, charged and counted, then the connection is
   closed without any HTTP response (the client sees a disconnect).
7. `garble_submissions`: the generation is created, charged and counted, then the answer is
   an HTTP 200 whose body cannot be read (cut JSON, an HTML page, JSON without
   `generationId`, an empty body): a proxy or a buggy server mangling a successful answer.
8. `garble_reads`: the same for a successful (200) GET answer; a failing read is not garbled.
9. `strip_rate_limit_headers`: answers that would carry `X-RateLimit-*` or `Retry-After` lose
   them, as behind a proxy that strips unknown headers. The limits are enforced as before.
10. `stick` / `fail_generations` / `unknown_status`: scripts for the next generations'
    outcomes, consumed when a generation is created. Each queue is consumed independently; a
    generation with an unknown status ignores `stick` and `fail_generations`, and a stuck
    generation ignores `fail_generations` (the auto-cancel deadline comes first).
11. `list_lag`: List All Images shows a generation only some time after it was created (an
    eventually consistent read replica); Check Image Status sees it at once.

Only API requests (routes under ``/api/v1``) consume request faults; image files and unknown
routes never do, so the emulator fetching its own image URLs cannot eat a scripted fault.
Durations are real seconds (not scaled by `time_scale`). All methods take a lock, so a test
may script faults from another thread.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Literal, TypeVar, get_args

import attrs

from ._errors import SERVER_ERROR_CODES

DEFAULT_FAILURE_REASON: Final = "Prediction failed: the model could not generate an image."

Method = Literal["GET", "POST"]
#: Which API requests a read fault or an outage strikes (see the module docstring).
Route = Literal["list", "status", "reads", "all"]
ReadRoute = Literal["list", "status", "reads"]
OutageKind = Literal["500", "html503", "timeout"]
GarbleKind = Literal["truncated", "html", "no_id", "empty"]
EchoKind = Literal["html", "json"]
#: What the app calls each API request: List All Images, Check Image Status, a submission,
#: or another read (the ping, Account Info).
Endpoint = Literal["list", "status", "submit", "read"]

ROUTES: Final = frozenset(get_args(Route))
READ_ROUTES: Final = frozenset(get_args(ReadRoute))
OUTAGE_KINDS: Final = frozenset(get_args(OutageKind))
GARBLE_KINDS: Final = tuple(get_args(GarbleKind))
ECHO_KINDS: Final = frozenset(get_args(EchoKind))
#: The statuses of the contract; `unknown_status` must name another one.
DOCUMENTED_STATUSES: Final = frozenset({"starting", "processing", "succeeded", "failed"})
#: The failure codes `chaos()` injects: the defaults of `fail_reads` / `fail_submissions`.
CHAOS_READ_CODE: Final = "INTERNAL_SERVER_ERROR"
CHAOS_SUBMIT_CODE: Final = "GENERATION_START_FAILED"
CHAOS_STATUS: Final = "canceled"

_T = TypeVar("_T")


def matches(route: Route, endpoint: Endpoint) -> bool:
    """Whether a fault scripted for `route` strikes a request to `endpoint`."""
    if route == "all":
        return True
    if route == "reads":
        return endpoint != "submit"
    return route == endpoint


@attrs.define
class _Delay:
    seconds: float
    remaining: int | None
    method: Method | None


@attrs.frozen
class Outage:
    """An outage in force: until `until` (time.monotonic), `route` answers `kind`."""

    until: float
    route: Route
    kind: OutageKind


@attrs.define
class Echo:
    """An echoing error page: `remaining` answers of HTTP `status` rendered as `kind`."""

    remaining: int
    status: int
    method: Method | None
    kind: EchoKind


@attrs.frozen
class Outcome:
    """How a generation being created will end (see `Faults._take_outcome`)."""

    stuck: bool = False
    failure_reason: str | None = None
    final_status: str | None = None


@attrs.define
class _Chaos:
    """Per-decision-point probabilities and one seeded generator per decision point.

    One generator per decision point keeps each point's sequence of draws independent of how
    requests of other kinds interleave with it.
    """

    seed: int
    odds: dict[str, float]
    streams: dict[str, random.Random] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.streams = {name: random.Random(f"{self.seed}/{name}") for name in self.odds}

    def hit(self, name: str) -> bool:
        odds = self.odds[name]
        return odds > 0 and self.streams[name].random() < odds

    def pick(self, name: str, options: tuple[_T, ...]) -> _T:
        return self.streams[name].choice(options)


CHAOS_POINTS: Final = (
    "drop_before",
    "drop_after",
    "garble_submission",
    "submit_5xx",
    "read_5xx",
    "garble_read",
    "unknown_status",
)


class Faults:
    """The fault script of one emulator (see the module docstring for the order of checks).

    >>> faults = Faults()
    >>> faults.fail_reads(2, "FETCH_FAILED", route="status")
    >>> faults.delay(0.2, count=1, method="POST")
    >>> faults.outage(1.5, route="list", kind="html503")
    >>> faults.chaos(7, drop_after=0.1, garble_read=0.05)
    >>> faults.clear()
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reads: deque[tuple[ReadRoute, str]] = deque()
        self._submissions: deque[str] = deque()
        self._drops_before = 0
        self._drops_after = 0
        self._garbled_submissions: deque[GarbleKind] = deque()
        self._garbled_reads: deque[tuple[ReadRoute, GarbleKind]] = deque()
        self._outages: list[Outage] = []
        self._echo: Echo | None = None
        self._strip: int | None = 0  # None: until cleared
        self._list_lag = 0.0
        self._sticks = 0
        self._failures: deque[str] = deque()
        self._statuses: deque[str] = deque()
        self._delay: _Delay | None = None
        self._chaos: _Chaos | None = None

    # Request faults.

    def delay(self, seconds: float, count: int | None = None, method: Method | None = None) -> None:
        """Sleep `seconds` before handling the next `count` API requests (None: until cleared).

        A slow network or an overloaded front end. `method` restricts the delay to GET or POST
        requests. A new call replaces the previous delay.
        """
        _check_seconds(seconds)
        if count is not None:
            _check_count(count)
        _check_method(method)
        with self._lock:
            self._delay = _Delay(seconds, count, method)

    def outage(self, seconds: float, *, route: Route = "list", kind: OutageKind = "500") -> None:
        """For `seconds` from now, every API request on `route` fails with `kind`.

        A backend or a read replica down for a while. `kind` is ``"500"`` (the seed's
        INTERNAL_SERVER_ERROR envelope), ``"html503"`` (HTTP 503 with a text/html body, a load
        balancer's page) or ``"timeout"`` (no answer: the request is held until the outage
        ends, then the connection is closed without a response; aiohttp clients resend an
        idempotent request once on such a hang-up, so make a ``"timeout"`` outage longer than
        the client's timeout to make reads time out). Nothing is created by a request that
        meets an outage. Outages on several routes may overlap; the first one scripted wins.
        """
        _check_seconds(seconds)
        _check_choice("route", route, ROUTES)
        _check_choice("kind", kind, OUTAGE_KINDS)
        with self._lock:
            self._outages.append(Outage(self._clock() + seconds, route, kind))

    def echo_headers(
        self,
        count: int,
        *,
        status: int = 502,
        method: Method | None = None,
        kind: EchoKind = "html",
    ) -> None:
        """Answer the next `count` API requests with an error page echoing the request headers.

        A misconfigured proxy's or framework's debug page: it prints every request header,
        ``Authorization: Bearer bye_...`` and ``X-API-Key`` included. `kind` ``"html"`` is a
        text/html page; ``"json"`` is the error envelope (code INTERNAL_SERVER_ERROR) with the
        headers inside its `message`. `status` is the HTTP status (400-599); `method`
        restricts it to GET or POST. Nothing is processed, so nothing is created. A new call
        replaces the previous one.
        """
        _check_count(count)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status 400-599, got {status!r}")
        _check_method(method)
        _check_choice("kind", kind, ECHO_KINDS)
        with self._lock:
            self._echo = Echo(count, status, method, kind)

    def fail_reads(
        self, count: int, code: str = "INTERNAL_SERVER_ERROR", *, route: ReadRoute = "reads"
    ) -> None:
        """Answer the next `count` GET API requests on `route` with the 500-family `code`.

        A flaky backend; a streak on one route (``route="status"``) stands for one failing
        service behind the API.
        """
        _check_count(count)
        _check_code(code)
        _check_choice("route", route, READ_ROUTES)
        with self._lock:
            self._reads.extend([(route, code)] * count)

    def fail_submissions(self, count: int, code: str = "GENERATION_START_FAILED") -> None:
        """Answer the next `count` POSTs with the 500-family `code`; nothing is created."""
        _check_count(count)
        _check_code(code)
        with self._lock:
            self._submissions.extend([code] * count)

    def drop_before_create(self, count: int) -> None:
        """Close the next `count` submissions' connections before processing them.

        A connection reset before the request reached the service: no answer, and nothing
        created, charged or counted in the window.
        """
        _check_count(count)
        with self._lock:
            self._drops_before += count

    def drop_after_create(self, count: int) -> None:
        """Create the next `count` accepted generations, then close without answering.

        A connection lost after the service did the work: the generation exists, is charged
        and took its place in the window, but the client never hears of it.
        """
        _check_count(count)
        with self._lock:
            self._drops_after += count

    def garble_submissions(self, count: int, kind: GarbleKind = "truncated") -> None:
        """Create the next `count` accepted generations, then answer 200 with `kind` of body.

        A proxy or a buggy server mangling a successful answer. `kind`: ``"truncated"`` (the
        real JSON cut in half), ``"html"`` (a text/html page), ``"no_id"`` (the envelope with
        `status` and `creditCost` but no `generationId`), ``"empty"`` (an empty body). The
        generation exists, is charged and took its place in the window.
        """
        _check_count(count)
        _check_choice("kind", kind, frozenset(GARBLE_KINDS))
        with self._lock:
            self._garbled_submissions.extend([kind] * count)

    def garble_reads(
        self, count: int, kind: GarbleKind = "truncated", *, route: ReadRoute = "reads"
    ) -> None:
        """Answer the next `count` successful GETs on `route` with a 200 of `kind` (see above).

        For reads, ``"no_id"`` drops `generationId` and `status` from the record (from every
        record of a list page). Only answers that would have been a 200 are garbled.
        """
        _check_count(count)
        _check_choice("kind", kind, frozenset(GARBLE_KINDS))
        _check_choice("route", route, READ_ROUTES)
        with self._lock:
            self._garbled_reads.extend([(route, kind)] * count)

    def strip_rate_limit_headers(self, count: int | None = None) -> None:
        """Remove `X-RateLimit-*` and `Retry-After` from the next `count` answers that have them.

        A proxy stripping headers it does not know. `count` None strips until `clear()`. The
        limits are still enforced: a 429 is still a 429, only without its hints.
        """
        if count is not None:
            _check_count(count)
        with self._lock:
            if count is None or self._strip is None:
                self._strip = None
            else:
                self._strip += count

    def list_lag(self, seconds: float) -> None:
        """List All Images shows a generation only `seconds` after its creation (0: at once).

        An eventually consistent listing (a read replica behind the writer); Check Image
        Status by id sees a new generation at once.
        """
        _check_seconds(seconds)
        with self._lock:
            self._list_lag = float(seconds)

    # Generation outcomes.

    def stick(self, count: int) -> None:
        """The next `count` generations never finish by themselves (they hit the auto-cancel)."""
        _check_count(count)
        with self._lock:
            self._sticks += count

    def fail_generations(self, count: int, reason: str = DEFAULT_FAILURE_REASON) -> None:
        """The next `count` generations end `failed` with `reason` (credits are refunded)."""
        _check_count(count)
        with self._lock:
            self._failures.extend([reason] * count)

    def unknown_status(self, count: int, status: str = "canceled") -> None:
        """The next `count` generations end in `status`, a status the contract does not list.

        A service that grew a new state (say ``canceled``). Such a generation is `starting`
        for the usual starting time, then shows `status` in Check Image Status and the list
        for ever; from then on it holds no concurrency slot, its credits are refunded, its
        failure reason and times stay null and no webhook is sent.
        """
        _check_count(count)
        if not isinstance(status, str) or not status or status in DOCUMENTED_STATUSES:
            raise ValueError(
                f"status must be a non-empty string other than {sorted(DOCUMENTED_STATUSES)}"
            )
        with self._lock:
            self._statuses.extend([status] * count)

    # Randomized faults.

    def chaos(
        self,
        seed: int,
        *,
        drop_before: float = 0.0,
        drop_after: float = 0.0,
        garble_submission: float = 0.0,
        submit_5xx: float = 0.0,
        read_5xx: float = 0.0,
        garble_read: float = 0.0,
        unknown_status: float = 0.0,
    ) -> None:
        """Strike each request or generation with a fault with the given probability.

        For invariant tests: each argument is the probability that the fault of the same
        name strikes at its decision point (`drop_before_create`, `drop_after_create`,
        `garble_submissions`, `fail_submissions` with GENERATION_START_FAILED, `fail_reads`
        with INTERNAL_SERVER_ERROR on any read, `garble_reads` on any read, `unknown_status`
        with ``canceled``); garble kinds are drawn uniformly. Scripted faults are consumed
        first. Each decision point has its own `random.Random` seeded from `seed`, so the
        same requests meet the same faults on every run. A new call replaces the previous
        chaos; `clear()` ends it.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        odds = {
            "drop_before": drop_before,
            "drop_after": drop_after,
            "garble_submission": garble_submission,
            "submit_5xx": submit_5xx,
            "read_5xx": read_5xx,
            "garble_read": garble_read,
            "unknown_status": unknown_status,
        }
        for name, value in odds.items():
            if isinstance(value, bool) or not (
                isinstance(value, (int, float)) and 0.0 <= value <= 1.0
            ):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        with self._lock:
            self._chaos = _Chaos(seed, {name: float(value) for name, value in odds.items()})

    def clear(self) -> None:
        """Forget every scripted fault, outage, lag and chaos."""
        with self._lock:
            self._reads.clear()
            self._submissions.clear()
            self._drops_before = self._drops_after = self._sticks = 0
            self._garbled_submissions.clear()
            self._garbled_reads.clear()
            self._outages.clear()
            self._echo = None
            self._strip = 0
            self._list_lag = 0.0
            self._failures.clear()
            self._statuses.clear()
            self._delay = None
            self._chaos = None

    # The consuming side, used by the emulator only: one decision point per fault.

    def _take_delay(self, method: str) -> float:
        with self._lock:
            rule = self._delay
            if rule is None or (rule.method is not None and rule.method != method):
                return 0.0
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._delay = None
            return rule.seconds

    def _take_outage(self, endpoint: Endpoint) -> Outage | None:
        with self._lock:
            now = self._clock()
            self._outages = [outage for outage in self._outages if outage.until > now]
            for outage in self._outages:
                if matches(outage.route, endpoint):
                    return outage
            return None

    def _remaining(self, outage: Outage) -> float:
        """Seconds until `outage` ends."""
        return max(0.0, outage.until - self._clock())

    def _take_echo(self, method: str) -> Echo | None:
        with self._lock:
            echo = self._echo
            if echo is None or (echo.method is not None and echo.method != method):
                return None
            echo.remaining -= 1
            if echo.remaining == 0:
                self._echo = None
            return echo

    def _take_request_failure(self, endpoint: Endpoint) -> str | None:
        with self._lock:
            if endpoint == "submit":
                if self._submissions:
                    return self._submissions.popleft()
                return CHAOS_SUBMIT_CODE if self._chance("submit_5xx") else None
            code = _pop_matching(self._reads, endpoint)
            if code is not None:
                return code
            return CHAOS_READ_CODE if self._chance("read_5xx") else None

    def _take_drop_before(self) -> bool:
        with self._lock:
            if self._drops_before:
                self._drops_before -= 1
                return True
            return self._chance("drop_before")

    def _take_after_create(self) -> Literal["drop"] | GarbleKind | None:
        """What becomes of the answer to a submission that created a generation."""
        with self._lock:
            if self._drops_after:
                self._drops_after -= 1
                return "drop"
            if self._garbled_submissions:
                return self._garbled_submissions.popleft()
            if self._chance("drop_after"):
                return "drop"
            if self._chance("garble_submission"):
                return self._pick("garble_submission", GARBLE_KINDS)
            return None

    def _take_garbled_read(self, endpoint: Endpoint) -> GarbleKind | None:
        with self._lock:
            kind = _pop_matching(self._garbled_reads, endpoint)
            if kind is not None:
                return kind
            if self._chance("garble_read"):
                return self._pick("garble_read", GARBLE_KINDS)
            return None

    def _take_strip(self) -> bool:
        with self._lock:
            if self._strip is None:
                return True
            if self._strip:
                self._strip -= 1
                return True
            return False

    def _visible_after(self) -> float:
        """How long after its creation a generation appears in the list (`list_lag`)."""
        with self._lock:
            return self._list_lag

    def _take_outcome(self) -> Outcome:
        """How a generation being created ends: one draw from each outcome script."""
        with self._lock:
            stuck = self._sticks > 0
            if stuck:
                self._sticks -= 1
            failure = self._failures.popleft() if self._failures else None
            if self._statuses:
                status: str | None = self._statuses.popleft()
            else:
                status = CHAOS_STATUS if self._chance("unknown_status") else None
            return Outcome(stuck, failure, status)

    def _chance(self, name: str) -> bool:
        return self._chaos is not None and self._chaos.hit(name)

    def _pick(self, name: str, options: tuple[_T, ...]) -> _T:
        assert self._chaos is not None
        return self._chaos.pick(name, options)


def _pop_matching(queue: deque[tuple[ReadRoute, _T]], endpoint: Endpoint) -> _T | None:
    for index, (route, value) in enumerate(queue):
        if matches(route, endpoint):
            del queue[index]
            return value
    return None


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")


def _check_seconds(seconds: float) -> None:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not (seconds >= 0 and math.isfinite(seconds))
    ):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")


def _check_method(method: str | None) -> None:
    if method not in (None, "GET", "POST"):
        raise ValueError("method must be None, 'GET' or 'POST'")


def _check_choice(name: str, value: object, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def _check_code(code: str) -> None:
    if code not in SERVER_ERROR_CODES:
        raise ValueError(
            f"{code!r} is not one of the 500-family codes {sorted(SERVER_ERROR_CODES)}"
        )
