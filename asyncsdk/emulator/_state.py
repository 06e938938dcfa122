"""Accounts, generations, limits and the lifecycle clock: the emulator's whole server state.

Nothing here touches the network; `_app.py` calls in after parsing a request, and every method
is synchronous, so on one event loop each call is atomic. That is what makes the limits exact:
the sliding window, the concurrency slot and the credit check are all evaluated and the
generation created in one `State.submit()` call, after every ``await`` of the request (body
reading, image fetching) is over.

Lifecycle, computed lazily from timestamps (no task per generation). At creation, on the
emulator's monotonic clock::

    processing_at = created + starting_time
    natural_end   = processing_at + processing_time      (infinity when scripted to stick)
    deadline      = created + generation_timeout
    ends_at       = natural_end if natural_end < deadline else deadline

A generation is `starting` before `processing_at`, `processing` until `ends_at`, then
`succeeded`, or `failed` when scripted to fail or when it reached the deadline (failureReason
"Generation timed out after N seconds and was cancelled", N the effective timeout). A
generation scripted with `Faults.unknown_status` has ``ends_at = processing_at`` and shows its
`final_status` from then on (refunded like a failure, null failure reason and times). A
generation is *in progress* exactly while ``now < ends_at``, so the concurrency check is exact
at any moment. All durations are scaled by `time_scale` (see `_settings.Settings.scaled`).

Credits ledger, per account: the buckets `free, purchased, refunded, redeemed, bonus,
affiliate` only ever grow, `spent` grows by each generation's cost when it is created
(reserved), and `total = sum(buckets) - spent` is the spendable balance. A failed generation's
cost is added to `refunded` once it has ended ("settled"; settlement is lazy too, and runs
before anything reads or spends credits). `set_credits(n)` replaces the ledger with a single
`purchased` grant of `n`. The initial balance of an account is `purchased` as well.

Sliding window: the times of the submissions that created a generation; a submission occupies
its place for `window` seconds (the place is free again at exactly `t + window`).
`X-RateLimit-Reset` is the moment the oldest occupied place frees (when `Remaining` next
grows), or now when the window is empty, as a Unix timestamp rounded up to whole seconds.

Record shape: the contract's field list in the contract's order. While running, `outputImages`
is empty, `failureReason`, `predictTime` and `totalTime` are null, and the counters are 0.
`predictTime` is the time spent in `processing`, `totalTime` the time from creation to the end,
both in seconds (on the emulator's clock) once the generation has ended. `currentImage` is the
number of images available, `deletedImage` always 0 (nothing deletes images), `isPublic`
always false. `modelProvider` is the full model identifier (``google/nano-banana``); `name`
is the request's, or the prompt's first 30 characters when the request had none.
`createdAt` of generation records is UTC *without* a time zone and with microseconds
(``2026-01-20T04:00:40.991032``), as the public samples show; every other timestamp (status
`timestamp`, account and API key `createdAt`) is UTC with milliseconds and a ``Z``.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Final

import attrs

from ._errors import ApiError
from ._faults import Faults
from ._settings import Settings
from ._stats import EmulatorStats

TOKEN_PATTERN: Final = re.compile(r"bye_[0-9a-fA-F]+")
UUID_PATTERN: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
DETAIL_KEYS: Final = (
    "generationId", "status", "name", "prompt", "aspectRatio", "modelProvider", "outputNumber",
    "outputSuccess", "outputFailed", "currentImage", "deletedImage", "outputImages",
    "creditCost", "failureReason", "predictTime", "totalTime", "createdAt", "isPublic",
    "imageInput",
)  # fmt: skip
LIST_KEYS: Final = (
    "generationId", "status", "name", "prompt", "aspectRatio", "modelProvider", "outputNumber",
    "outputSuccess", "outputFailed", "outputImages", "creditCost", "createdAt", "isPublic",
    "predictTime", "totalTime", "imageInput",
)  # fmt: skip
CREDIT_BUCKETS: Final = ("free", "purchased", "refunded", "redeemed", "bonus", "affiliate")

Json = dict[str, Any]


def new_token() -> str:
    """A fresh API token: ``bye_`` and 32 hex digits."""
    return "bye_" + secrets.token_hex(16)


def iso_utc(wall: float) -> str:
    """``2026-01-20T04:00:40.991Z``."""
    moment = datetime.fromtimestamp(wall, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_naive(wall: float) -> str:
    """``2026-01-20T04:00:40.991032`` (UTC, no time zone)."""
    moment = datetime.fromtimestamp(wall, timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


@attrs.frozen(kw_only=True)
class Submission:
    """A validated generation request (see `_inputs.parse_submission`)."""

    model: str
    prompt: str
    name: str | None
    output_number: int
    aspect_ratio: str
    output_format: str
    image_input: tuple[str, ...]
    extra: Json


@attrs.define(kw_only=True, eq=False)
class Generation:
    """One generation; its status is a function of the clock (see the module docstring)."""

    id: str
    token: str
    submission: Submission
    credit_cost: int
    image_input: list[str]
    created: float
    processing_at: float
    ends_at: float
    failure_reason: str | None
    final_status: str | None = None  # a status outside the contract's four (a fault)
    settled: bool = False

    def status(self, now: float) -> str:
        if now >= self.ends_at:
            if self.final_status is not None:
                return self.final_status
            return "failed" if self.failure_reason is not None else "succeeded"
        return "processing" if now >= self.processing_at else "starting"

    def running(self, now: float) -> bool:
        return now < self.ends_at

    @property
    def refunded(self) -> bool:
        """Whether the generation's credits come back once it has ended."""
        return self.failure_reason is not None or self.final_status is not None


@attrs.define(kw_only=True, eq=False)
class Account:
    """One account and its single API token."""

    token: str
    number: int
    created: float  # wall clock
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    key_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    free: int = 0
    purchased: int = 0
    refunded: int = 0
    redeemed: int = 0
    bonus: int = 0
    affiliate: int = 0
    spent: int = 0
    revoked: bool = False
    deleted: bool = False
    generations: list[Generation] = attrs.field(factory=list)  # creation order
    running: list[Generation] = attrs.field(factory=list)  # not yet settled
    window: deque[float] = attrs.field(factory=deque)  # accepted submission times

    @property
    def total(self) -> int:
        return sum(self.buckets().values()) - self.spent

    def buckets(self) -> dict[str, int]:
        return {bucket: int(getattr(self, bucket)) for bucket in CREDIT_BUCKETS}

    def credits(self) -> Json:
        return {"total": self.total} | self.buckets()


class State:
    """The server state shared by every request of one emulator."""

    def __init__(
        self,
        settings: Settings,
        faults: Faults,
        stats: EmulatorStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.faults = faults
        self.stats = stats
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.generations: dict[str, Generation] = {}
        # Wall time is derived from the monotonic clock so both agree on every duration.
        self._wall_offset = time.time() - clock()

    def wall(self, moment: float | None = None) -> float:
        """Unix time of a clock reading (default: now)."""
        return (self.clock() if moment is None else moment) + self._wall_offset

    # Accounts.

    def add_account(self, token: str | None, credits: int) -> Account:
        token = new_token() if token is None else token
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError("a token is 'bye_' followed by hex digits")
        if token in self.accounts:
            raise ValueError("duplicate token")
        if credits < 0:
            raise ValueError("credits must be >= 0")
        account = Account(
            token=token, number=len(self.accounts) + 1, created=self.wall(), purchased=credits
        )
        self.accounts[token] = account
        return account

    def account(self, token: str) -> Account:
        """The account of `token` (settled), for the emulator's own helpers."""
        try:
            account = self.accounts[token]
        except KeyError:
            raise KeyError(f"no account with token {token[:8]}...") from None
        self.settle(account)
        return account

    def set_credits(self, token: str, credits: int) -> None:
        if credits < 0:
            raise ValueError("credits must be >= 0")
        account = self.account(token)
        for bucket in CREDIT_BUCKETS:
            setattr(account, bucket, 0)
        account.purchased, account.spent = credits, 0

    def authenticate(self, authorization: str | None, api_key: str | None) -> Account:
        """The settled account of a request's credentials, or the seed's 401/404 error.

        Authorization wins when both headers are present; surrounding whitespace is ignored.
        """
        token = _credential(authorization, api_key)
        account = self.accounts.get(token) if TOKEN_PATTERN.fullmatch(token) else None
        if account is None:
            raise ApiError("INVALID_API_TOKEN")
        if account.revoked:
            raise ApiError("AUTHENTICATION_FAILED")
        if account.deleted:
            raise ApiError("ACCOUNT_NOT_FOUND")
        self.settle(account)
        return account

    def known_account(self, authorization: str | None, api_key: str | None) -> Account | None:
        """The account the credentials name (revoked or deleted included), or None; no error."""
        try:
            token = _credential(authorization, api_key)
        except ApiError:
            return None
        return self.accounts.get(token)

    # Lifecycle and limits.

    def settle(self, account: Account, now: float | None = None) -> None:
        """Apply what time has done: refund ended failures, free window places."""
        now = self.clock() if now is None else now
        still_running = []
        for generation in account.running:
            if generation.running(now):
                still_running.append(generation)
            else:
                generation.settled = True
                if generation.refunded:
                    account.refunded += generation.credit_cost
        account.running = still_running
        horizon = now - self.settings.scaled(self.settings.window)
        while account.window and account.window[0] <= horizon:
            account.window.popleft()

    def rate_headers(self, account: Account) -> dict[str, str]:
        """X-RateLimit-* for `account` as of now."""
        now = self.clock()
        self.settle(account, now)
        frees_at = (
            account.window[0] + self.settings.scaled(self.settings.window)
            if account.window
            else now
        )
        return {
            "X-RateLimit-Limit": str(self.settings.submissions),
            "X-RateLimit-Remaining": str(max(0, self.settings.submissions - len(account.window))),
            "X-RateLimit-Reset": str(math.ceil(self.wall(frees_at))),
        }

    def submit(
        self, account: Account, submission: Submission, input_kinds: list[str]
    ) -> Generation:
        """Check the limits in order (window, concurrency, credits) and create a generation.

        Only a submission that creates a generation takes a place in the window.
        `input_kinds` are the file extensions of the (already loaded) input images.
        """
        settings, now = self.settings, self.clock()
        self.settle(account, now)
        if len(account.window) >= settings.submissions:
            frees_at = account.window[0] + settings.scaled(settings.window)
            error = ApiError(
                "RATE_LIMIT_ERROR", limit=settings.submissions, period=settings.window_phrase()
            )
            raise self._throttle(account, error, frees_at - now)
        if len(account.running) >= settings.concurrent:
            soonest = min(generation.ends_at for generation in account.running)
            error = ApiError("CONCURRENT_GENERATION_ERROR")
            raise self._throttle(account, error, soonest - now)
        cost = settings.models[submission.model].cost * submission.output_number
        if account.total < cost:
            raise ApiError("INSUFFICIENT_CREDITS", required=cost)

        generation_id = str(uuid.uuid4())
        outcome = self.faults._take_outcome()
        processing_at = now + settings.scaled(settings.starting_time)
        natural_end = (
            math.inf
            if outcome.stuck
            else processing_at + settings.processing_seconds(submission.model, submission.prompt)
        )
        timeout = settings.scaled(settings.generation_timeout)
        if outcome.final_status is not None:
            ends_at, failure_reason = min(processing_at, now + timeout), None
            self.stats.faults["unknown_status"] += 1
        elif natural_end < now + timeout:
            ends_at, failure_reason = natural_end, outcome.failure_reason
        else:
            ends_at = now + timeout
            failure_reason = f"Generation timed out after {timeout:g} seconds and was cancelled"
        generation = Generation(
            id=generation_id,
            token=account.token,
            submission=submission,
            credit_cost=cost,
            image_input=[
                f"input/{generation_id}/user_upload_image_{index}.{kind}"
                for index, kind in enumerate(input_kinds, start=1)
            ],
            created=now,
            processing_at=processing_at,
            ends_at=ends_at,
            failure_reason=failure_reason,
            final_status=outcome.final_status,
        )
        account.spent += cost
        account.window.append(now)
        account.running.append(generation)
        account.generations.append(generation)
        self.generations[generation_id] = generation
        self.stats.created[account.token] += 1
        in_progress = len(account.running)
        if in_progress > self.stats.max_in_progress[account.token]:
            self.stats.max_in_progress[account.token] = in_progress
        return generation

    def _throttle(self, account: Account, error: ApiError, wait: float) -> ApiError:
        self.stats.throttled[account.token][error.code] += 1
        error.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return error

    # Reading.

    def lookup(self, account: Account, generation_id: str) -> Generation:
        if not UUID_PATTERN.fullmatch(generation_id):
            raise ApiError("INVALID_GENERATION_ID")
        generation = self.generations.get(generation_id.lower())
        if generation is None or generation.token != account.token:
            raise ApiError("GENERATION_NOT_FOUND")
        return generation

    def newest_first(self, account: Account) -> Iterator[Generation]:
        return reversed(account.generations)

    def record(self, generation: Generation, origin: str, *, listing: bool = False) -> Json:
        """The wire record of `generation` as of now; `listing` gives the list endpoint's."""
        now = self.clock()
        sub = generation.submission
        ended = not generation.running(now)
        unknown = ended and generation.final_status is not None
        failed = ended and generation.failure_reason is not None
        succeeded = ended and not failed and not unknown
        timed = ended and not unknown
        images = (
            [f"{origin}/files/{generation.id}/{n}.png" for n in range(1, sub.output_number + 1)]
            if succeeded
            else []
        )
        full: Json = {
            "generationId": generation.id,
            "status": generation.status(now),
            "name": sub.name if sub.name is not None else sub.prompt[:30],
            "prompt": sub.prompt,
            "aspectRatio": sub.aspect_ratio,
            "modelProvider": sub.model,
            "outputNumber": sub.output_number,
            "outputSuccess": sub.output_number if succeeded else 0,
            "outputFailed": sub.output_number if failed else 0,
            "currentImage": len(images),
            "deletedImage": 0,
            "outputImages": images,
            "creditCost": generation.credit_cost,
            "failureReason": generation.failure_reason if failed else None,
            "predictTime": (
                round(max(0.0, generation.ends_at - generation.processing_at), 6) if timed else None
            ),
            "totalTime": round(generation.ends_at - generation.created, 6) if timed else None,
            "createdAt": iso_naive(self.wall(generation.created)),
            "isPublic": False,
            "imageInput": list(generation.image_input),
        }
        return {key: full[key] for key in (LIST_KEYS if listing else DETAIL_KEYS)}

    def image(self, generation_id: str, index: int) -> tuple[str, str] | None:
        """(seed, aspect ratio) of a succeeded generation's output `index` (1-based)."""
        generation = self.generations.get(generation_id)
        if generation is None or generation.status(self.clock()) != "succeeded":
            return None
        if not 1 <= index <= generation.submission.output_number:
            return None
        sub = generation.submission
        return f"{sub.prompt}\x00{index}", sub.aspect_ratio


def _credential(authorization: str | None, api_key: str | None) -> str:
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError("INVALID_API_TOKEN")
        if not token.strip():
            raise ApiError("MISSING_API_TOKEN")
        return token.strip()
    if api_key is not None and api_key.strip():
        return api_key.strip()
    raise ApiError("MISSING_API_TOKEN")
