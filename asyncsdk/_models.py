"""The service's records as frozen attrs classes: pure data, no I/O, no client references.

Attribute names are the snake_case spelling of the API's camelCase fields; the one converter
in :mod:`asyncsdk._wire` maps between the two. Every field the service may leave out or send
as ``null`` defaults to ``None`` (lists to an empty tuple), so a sparse record never crashes.
``request_id`` is the ``X-Request-ID`` of the response a record came in (not compared).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "AccountDetails",
    "AccountInfo",
    "ApiKeyInfo",
    "ApiStatus",
    "Credits",
    "Generation",
    "GenerationPage",
    "GenerationStatus",
    "RateLimitInfo",
    "Submission",
]


#: How many unknown status strings `GenerationStatus` keeps as cached pseudo-members: a new
#: server-side state is one string, so a few suffice; a server sending endless distinct
#: strings cannot grow the class without bound.
MAX_CACHED_UNKNOWN_STATUSES = 32


class GenerationStatus(str, enum.Enum):
    """Where a generation is in its life: ``starting`` → ``processing`` → a terminal state.

    A status string the SDK does not know becomes a non-terminal pseudo-member instead of
    an error, so a new server-side state never breaks a running stream. Such members compare
    and hash as their string: the same unknown status is equal (and deduplicated by
    :meth:`asyncsdk.AsyncClient.watch`) on every poll. The first
    ``MAX_CACHED_UNKNOWN_STATUSES`` unknown strings are also cached, so that each is one
    object; past that bound each lookup makes a new, equal, pseudo-member.
    """

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """``True`` for ``succeeded`` and ``failed``: the generation will not change again."""
        return self is GenerationStatus.SUCCEEDED or self is GenerationStatus.FAILED

    @classmethod
    def _missing_(cls, value: object) -> GenerationStatus | None:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        cached_unknown = len(cls._value2member_map_) - len(cls._member_map_)
        if cached_unknown >= MAX_CACHED_UNKNOWN_STATUSES:
            return member  # equal to any other member made from the same string
        return cls._value2member_map_.setdefault(value, member)  # type: ignore[return-value]

    def __str__(self) -> str:
        return str(self.value)


_request_id = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class ApiStatus:
    """Answer of ``GET /status``: which account and API key the client is using."""

    message: str | None = None
    account_id: str | None = None
    api_key_id: str | None = None
    api_key_name: str | None = None
    timestamp: datetime | None = None
    request_id: str | None = _request_id


@attrs.frozen
class AccountDetails:
    """The account that owns the API key."""

    id: str | None = None
    name: str | None = None
    email: str | None = None
    is_personal_account: bool | None = None
    picture_url: str | None = None
    created_at: datetime | None = None


@attrs.frozen
class Credits:
    """Credit balance, by where the credits came from; ``total`` is what can be spent."""

    total: int = 0
    free: int = 0
    purchased: int = 0
    refunded: int = 0
    redeemed: int = 0
    bonus: int = 0
    affiliate: int = 0


@attrs.frozen
class ApiKeyInfo:
    """The API key in use (never the key itself: its name and prefix)."""

    name: str | None = None
    prefix: str | None = None
    created_at: datetime | None = None


@attrs.frozen
class AccountInfo:
    """Answer of ``GET /data/account``."""

    account: AccountDetails = attrs.Factory(AccountDetails)
    credits: Credits = attrs.Factory(Credits)
    api_key: ApiKeyInfo = attrs.Factory(ApiKeyInfo)
    request_id: str | None = _request_id


@attrs.frozen
class Generation:
    """One generation record, as ``GET /image-generation/{id}`` and the list return it."""

    generation_id: str
    status: GenerationStatus
    name: str | None = None
    prompt: str | None = None
    aspect_ratio: str | None = None
    model_provider: str | None = None
    output_number: int | None = None
    output_success: int | None = None
    output_failed: int | None = None
    current_image: int | None = None
    deleted_image: int | None = None
    output_images: tuple[str, ...] = ()
    credit_cost: int | None = None
    failure_reason: str | None = None
    predict_time: float | None = None
    total_time: float | None = None
    created_at: datetime | None = None
    is_public: bool | None = None
    image_input: tuple[str, ...] = ()
    request_id: str | None = _request_id


@attrs.frozen
class GenerationPage:
    """One page of ``GET /data/list/image``: newest first, ``total`` over all pages."""

    generations: tuple[Generation, ...] = ()
    total: int = 0
    limit: int = 0
    offset: int = 0
    request_id: str | None = _request_id


@attrs.frozen
class Submission:
    """Answer of a submission: the new generation's id, first status and price.

    ``tag`` is the ``name`` the submission carried, by which it can be found in the list.
    """

    generation_id: str
    status: GenerationStatus = GenerationStatus.STARTING
    credit_cost: int | None = None
    request_id: str | None = _request_id
    tag: str | None = None


@attrs.frozen
class RateLimitInfo:
    """The ``X-RateLimit-*`` (and ``Retry-After``) headers of one response."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # Unix seconds
    retry_after: float | None  # seconds

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimitInfo | None:
        remaining = headers.get("X-RateLimit-Remaining")
        retry_after = headers.get("Retry-After")
        if remaining is None and retry_after is None:
            return None
        return cls(
            limit=_number(headers.get("X-RateLimit-Limit"), int),
            remaining=_number(remaining, int),
            reset_at=_number(headers.get("X-RateLimit-Reset"), float),
            retry_after=_number(retry_after, float),
        )

    def resume_at(self, now: float | None = None) -> float | None:
        """Unix time after which the server admits the next request, from either hint."""
        now = time.time() if now is None else now
        hints = [self.reset_at or 0.0, now + self.retry_after if self.retry_after else 0.0]
        best = max(hints)
        return best if best > 0 else None


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    if text is None:
        return None
    try:
        return kind(float(text)) if kind is int else float(text)
    except ValueError:
        return None  # a malformed hint is no hint


# Resolve the string annotations now, while this module's globals are at hand: `asyncsdk`
# re-labels the public classes as its own (`__module__`), and cattrs reads the types later.
for _cls in (ApiStatus, AccountDetails, Credits, ApiKeyInfo, AccountInfo, Generation,
             GenerationPage, Submission, RateLimitInfo):  # fmt: skip
    attrs.resolve_types(_cls)
del _cls
