"""Verify the service's webhook deliveries and read them as typed events.

The service POSTs an event when a generation ends, ``generation.completed`` or
``generation.failed``, signed in the ``X-Webhook-Signature`` header::

    X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

The HMAC key is the endpoint secret exactly as the service shows it, ``whsec_`` prefix
included. :func:`verify` checks, in this order, and raises a distinct error for each:

1. the header parses: one ``t=`` of digits and at least one ``v1=`` of 64 hex digits
   (several ``v1=`` entries are allowed, for secret rotation; other schemes are ignored)
   -> :class:`MalformedSignatureError`;
2. some ``v1`` is the HMAC of ``"<t>.<raw body>"`` under some given secret, compared in
   constant time -> :class:`InvalidSignatureError`;
3. ``|now - t| <= tolerance`` (300 s by default), checked only once the signature holds, so
   that a forged timestamp is reported as a bad signature -> :class:`StaleTimestampError`;
4. the body is a JSON event whose ``data`` is a generation record
   -> :class:`MalformedPayloadError`.

All four are :class:`WebhookVerificationError`, an :class:`asyncsdk.AsyncSDKError`. Answer
any of them with a 4xx and do not act on the delivery.

Verify the *raw* body: the bytes as received, before any JSON parsing, since re-serialising
changes them. With FastAPI (any framework that gives you the body bytes works the same)::

    from fastapi import FastAPI, HTTPException, Request
    from asyncsdk import webhooks

    app = FastAPI()

    @app.post("/webhooks/babysea")
    async def babysea_webhook(request: Request) -> dict[str, bool]:
        try:
            event = webhooks.verify(
                await request.body(),
                request.headers.get(webhooks.SIGNATURE_HEADER),
                "whsec_...",  # the endpoint secret, e.g. from the environment
            )
        except webhooks.WebhookVerificationError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        if event.type == webhooks.GENERATION_COMPLETED:
            print(event.generation.generation_id, event.generation.output_images)
        return {"received": True}

:func:`sign` builds a header the way the service does, to test such an endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from ._errors import AsyncSDKError
from ._models import Generation
from ._wire import converter

__all__ = [
    "DEFAULT_TOLERANCE",
    "GENERATION_COMPLETED",
    "GENERATION_FAILED",
    "InvalidSignatureError",
    "MalformedPayloadError",
    "MalformedSignatureError",
    "SIGNATURE_HEADER",
    "StaleTimestampError",
    "WebhookEvent",
    "WebhookVerificationError",
    "sign",
    "verify",
]

#: The request header that carries the signature.
SIGNATURE_HEADER: Final = "X-Webhook-Signature"
#: How far (seconds, either direction) a delivery's timestamp may be from now.
DEFAULT_TOLERANCE: Final = 300
#: The event type of a generation that succeeded.
GENERATION_COMPLETED: Final = "generation.completed"
#: The event type of a generation that failed.
GENERATION_FAILED: Final = "generation.failed"

_HEX_DIGEST: Final = re.compile(r"[0-9a-fA-F]{64}")
_DIGITS: Final = re.compile(r"[0-9]{1,12}")

#: An endpoint secret: text (encoded as UTF-8) or any bytes-like object (its bytes).
Secret = str | bytes | bytearray | memoryview
_BYTES_LIKE: Final = (bytes, bytearray, memoryview)


class WebhookVerificationError(AsyncSDKError):
    """A webhook delivery failed verification; do not act on it."""


class MalformedSignatureError(WebhookVerificationError):
    """The signature header is missing or not ``t=<unix>,v1=<hex>``."""


class InvalidSignatureError(WebhookVerificationError):
    """No ``v1`` signature matches the body under the secret: tampered, or the wrong secret."""


class StaleTimestampError(WebhookVerificationError):
    """The signature is genuine but its timestamp is too far from now (a replay, or a skewed
    clock).

    :ivar timestamp: the signed ``t``, Unix seconds.
    :ivar now: the time it was compared with.
    :ivar tolerance: the allowed distance, seconds.
    """

    def __init__(self, timestamp: int, now: float, tolerance: float) -> None:
        self.timestamp = timestamp
        self.now = now
        self.tolerance = tolerance
        age = now - timestamp
        when = f"{age:.0f}s in the past" if age > 0 else f"{-age:.0f}s in the future"
        super().__init__(
            f"webhook timestamp {timestamp} is {when}, beyond the {tolerance:g}s tolerance"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.timestamp, self.now, self.tolerance))


class MalformedPayloadError(WebhookVerificationError):
    """The signature holds but the body is not a JSON event carrying a generation record."""


@attrs.frozen
class WebhookEvent:
    """One verified delivery: a generation that ended.

    :ivar type: ``"generation.completed"`` or ``"generation.failed"`` (:data:`GENERATION_COMPLETED`,
        :data:`GENERATION_FAILED`); another string if the service adds event types.
    :ivar generation: the generation record, as :meth:`asyncsdk.AsyncClient.get_generation`
        returns it.
    :ivar id: the event's id (``evt_...``), when sent: use it to drop duplicate deliveries.
    :ivar created: when the event was created, when sent.
    """

    type: str
    generation: Generation
    id: str | None = None
    created: datetime | None = None


attrs.resolve_types(WebhookEvent)


def _key(secret: object) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, _BYTES_LIKE):
        # Never bytes(n) of something else: an int, or an item of a bytearray, is a length.
        return bytes(secret)
    raise TypeError(f"a webhook secret must be str or bytes, got {type(secret).__name__}")


def _keys(secret: Secret | Sequence[Secret]) -> list[bytes]:
    # One bytes-like secret is one key: iterating it would give integers, not secrets.
    if isinstance(secret, (str, *_BYTES_LIKE)):
        secrets: list[object] = [secret]
    elif isinstance(secret, Iterable):
        secrets = list(secret)
    else:
        raise TypeError(f"a webhook secret must be str or bytes, got {type(secret).__name__}")
    keys = [_key(item) for item in secrets]
    if not keys or not all(keys):
        raise ValueError("the webhook secret must be a non-empty string (whsec_...)")
    return keys


def _body(raw_body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(raw_body, str):
        return raw_body.encode()
    if isinstance(raw_body, (bytes, bytearray, memoryview)):
        return bytes(raw_body)
    raise TypeError(f"raw_body must be bytes or str, got {type(raw_body).__name__}")


def _digest(key: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def _parse_header(header: str | None) -> tuple[int, list[str]]:
    """``t`` and the ``v1`` digests of a signature header."""
    if header is None or not header.strip():
        raise MalformedSignatureError(f"the {SIGNATURE_HEADER} header is missing or empty")
    timestamps: list[str] = []
    digests: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise MalformedSignatureError(
                f"malformed {SIGNATURE_HEADER} header: expected 't=<unix>,v1=<hex>'"
            )
        name, value = name.strip(), value.strip()
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            if not _HEX_DIGEST.fullmatch(value):
                raise MalformedSignatureError(
                    f"malformed {SIGNATURE_HEADER} header: v1 must be 64 hex digits"
                )
            digests.append(value.lower())
        # Other schemes (v0=, a future v2=) are not ours to check.
    if len(timestamps) != 1 or not _DIGITS.fullmatch(timestamps[0]):
        raise MalformedSignatureError(
            f"malformed {SIGNATURE_HEADER} header: expected exactly one t=<unix seconds>"
        )
    if not digests:
        raise MalformedSignatureError(f"malformed {SIGNATURE_HEADER} header: no v1= signature")
    return int(timestamps[0]), digests


def _event(body: bytes) -> WebhookEvent:
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise MalformedPayloadError(f"the webhook body is not JSON: {exc}") from exc
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("type"), str)
        or not isinstance(payload.get("data"), dict)
    ):
        raise MalformedPayloadError(
            "the webhook body is not an event: expected an object with 'type' and 'data'"
        )
    fields: dict[str, Any] = {
        "type": payload["type"],
        "generation": payload["data"],
        "id": payload.get("id"),
        "created": payload.get("created"),
    }
    try:
        event: WebhookEvent = converter.structure(fields, WebhookEvent)
    except Exception as exc:
        raise MalformedPayloadError(
            f"the webhook event has an unexpected shape: {type(exc).__name__}: {exc}"
        ) from exc
    return event


def verify(
    raw_body: bytes | bytearray | memoryview | str,
    signature_header: str | None,
    secret: Secret | Sequence[Secret],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> WebhookEvent:
    """Check a delivery's signature and freshness; the event it carries.

    >>> header = sign(b'{"type": "generation.completed", "data": {"generationId": "g1",'
    ...               b' "status": "succeeded"}}', "whsec_test", timestamp=1_700_000_000)
    >>> event = verify(b'{"type": "generation.completed", "data": {"generationId": "g1",'
    ...                b' "status": "succeeded"}}', header, "whsec_test", now=1_700_000_010)
    >>> event.type, event.generation.generation_id, event.generation.status.value
    ('generation.completed', 'g1', 'succeeded')

    :param raw_body: the request body exactly as received (``str`` is encoded as UTF-8).
    :param signature_header: the ``X-Webhook-Signature`` value; ``None`` when absent.
    :param secret: the endpoint secret (``whsec_...``) as given, ``str`` or bytes-like, or
        several during a rotation.
    :param tolerance: the largest allowed ``|now - t|``, seconds.
    :param now: the current Unix time; default ``time.time()``.
    :raises MalformedSignatureError: the header is missing or unreadable.
    :raises InvalidSignatureError: no signature matches.
    :raises StaleTimestampError: the signed timestamp is too old or too far ahead.
    :raises MalformedPayloadError: the signed body is not an event.
    :raises TypeError: a secret is neither ``str`` nor bytes-like.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    keys = _keys(secret)
    body = _body(raw_body)
    timestamp, digests = _parse_header(signature_header)
    # Check every pair without stopping early: the time taken says nothing about which matched.
    matched = False
    for key in keys:
        expected = _digest(key, timestamp, body)
        for digest in digests:
            matched |= hmac.compare_digest(expected, digest)
    if not matched:
        raise InvalidSignatureError(
            "the webhook signature does not match the body: "
            "the body was altered or the secret is not this endpoint's"
        )
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise StaleTimestampError(timestamp, current, tolerance)
    return _event(body)


def sign(
    raw_body: bytes | bytearray | memoryview | str,
    secret: Secret,
    *,
    timestamp: int | None = None,
) -> str:
    """The ``X-Webhook-Signature`` value the service would send for ``raw_body``.

    For testing webhook endpoints; ``timestamp`` defaults to now.

    >>> sign(b"{}", "whsec_test", timestamp=1_700_000_000)[:15]
    't=1700000000,v1'
    """
    (key,) = _keys(secret)
    moment = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={moment},v1={_digest(key, moment, _body(raw_body))}"
