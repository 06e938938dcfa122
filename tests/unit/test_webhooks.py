"""asyncsdk.webhooks: good, tampered, wrong-secret, stale and malformed deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest

import asyncsdk
from asyncsdk import webhooks
from asyncsdk.webhooks import (
    InvalidSignatureError,
    MalformedPayloadError,
    MalformedSignatureError,
    StaleTimestampError,
    WebhookEvent,
    WebhookVerificationError,
    sign,
    verify,
)

SECRET = "whsec_4f1d2c3b4a5968778695a4b3c2d1e0f0"
NOW = 1_750_000_000
RECORD: dict[str, Any] = {
    "generationId": "0b6f2a52-6c55-4b8e-9a8e-3c2f1e0d9b7a",
    "status": "succeeded",
    "name": "kite",
    "prompt": "a red kite at dawn",
    "aspectRatio": "1:1",
    "modelProvider": "google/nano-banana",
    "outputNumber": 1,
    "outputImages": ["https://cdn.example/files/0b6f/1.png"],
    "creditCost": 2,
    "failureReason": None,
    "createdAt": "2025-06-15T12:00:00.123456",
    "isPublic": False,
    "imageInput": [],
    "somethingNew": {"the SDK": "ignores unknown fields"},
}


def event_body(kind: str = "generation.completed", **record: Any) -> bytes:
    event = {"id": "evt_1", "type": kind, "created": NOW, "data": {**RECORD, **record}}
    return json.dumps(event).encode()


def header_for(body: bytes, secret: str = SECRET, t: int = NOW) -> str:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# -- good deliveries ------------------------------------------------------------------------------


def test_a_good_delivery_gives_a_typed_event() -> None:
    body = event_body()
    event = verify(body, header_for(body), SECRET, now=NOW + 5)
    assert isinstance(event, WebhookEvent)
    assert event.type == webhooks.GENERATION_COMPLETED
    assert event.id == "evt_1"
    assert event.created == datetime.fromtimestamp(NOW, tz=timezone.utc)
    generation = event.generation
    assert isinstance(generation, asyncsdk.Generation)
    assert generation.generation_id == RECORD["generationId"]
    assert generation.status is asyncsdk.GenerationStatus.SUCCEEDED
    assert generation.output_images == ("https://cdn.example/files/0b6f/1.png",)
    assert generation.created_at is not None and generation.created_at.tzinfo is not None


def test_a_failed_generation_event() -> None:
    body = event_body(
        "generation.failed", status="failed", outputImages=None, failureReason="timed out"
    )
    event = verify(body, header_for(body), SECRET, now=NOW)
    assert event.type == webhooks.GENERATION_FAILED
    assert event.generation.status is asyncsdk.GenerationStatus.FAILED
    assert event.generation.failure_reason == "timed out"
    assert event.generation.output_images == ()


def test_sign_matches_the_documented_scheme_and_round_trips() -> None:
    body = event_body()
    assert sign(body, SECRET, timestamp=NOW) == header_for(body)
    assert verify(body, sign(body, SECRET), SECRET).id == "evt_1"  # default: now


def test_body_as_str_and_header_spacing_and_case() -> None:
    body = event_body()
    t, v1 = header_for(body).split(",")
    assert verify(body.decode(), f" {t} , {v1.upper().replace('V1=', 'v1=')} ", SECRET, now=NOW)


def test_the_whsec_prefix_is_part_of_the_key() -> None:
    # The contract signs with the secret as shown, prefix included; stripping it must fail.
    body = event_body()
    with pytest.raises(InvalidSignatureError):
        verify(body, header_for(body, secret=SECRET.removeprefix("whsec_")), SECRET, now=NOW)


def test_several_signatures_and_unknown_schemes_during_a_rotation() -> None:
    body = event_body()
    good = header_for(body).split(",")[1]
    old = header_for(body, secret="whsec_old").split(",")[1]
    header = f"t={NOW},v0=deadbeef,{old},{good}"
    assert verify(body, header, SECRET, now=NOW).type == "generation.completed"
    # ...and several secrets on the receiving side.
    assert verify(body, header_for(body), ["whsec_next", SECRET], now=NOW)
    assert verify(body, header_for(body), SECRET.encode(), now=NOW)


def test_timestamp_exactly_at_the_tolerance_is_accepted() -> None:
    body = event_body()
    assert verify(body, header_for(body), SECRET, now=NOW + 300)
    assert verify(body, header_for(body), SECRET, now=NOW - 300)
    assert verify(body, header_for(body), SECRET, now=NOW + 10, tolerance=10)


# -- tampered, wrong secret ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.replace(b"succeeded", b"failed\x20\x20\x20"),
        lambda b: b + b" ",
        lambda b: b.replace(b"https://cdn.example", b"https://evil.example"),
        lambda b: b[:-1],
    ],
    ids=["status", "trailing-space", "image-url", "truncated"],
)
def test_a_tampered_body_is_rejected(tamper: Any) -> None:
    body = event_body()
    with pytest.raises(InvalidSignatureError, match="does not match"):
        verify(tamper(body), header_for(body), SECRET, now=NOW)


def test_the_wrong_secret_is_rejected() -> None:
    body = event_body()
    with pytest.raises(InvalidSignatureError):
        verify(body, header_for(body), "whsec_someone_else", now=NOW)


def test_a_changed_timestamp_is_a_bad_signature_not_a_stale_one() -> None:
    body = event_body()
    forged = header_for(body).replace(f"t={NOW}", f"t={NOW + 3600}")
    with pytest.raises(InvalidSignatureError):
        verify(body, forged, SECRET, now=NOW + 3600)
    # A stale *and* tampered delivery reports the tampering.
    with pytest.raises(InvalidSignatureError):
        verify(body + b" ", header_for(body), SECRET, now=NOW + 10_000)


# -- stale ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "words"), [(NOW + 301, "in the past"), (NOW - 301, "in the future")]
)
def test_a_stale_timestamp_is_rejected_in_both_directions(now: int, words: str) -> None:
    body = event_body()
    with pytest.raises(StaleTimestampError, match=words) as caught:
        verify(body, header_for(body), SECRET, now=now)
    assert caught.value.timestamp == NOW
    assert caught.value.now == now
    assert caught.value.tolerance == 300
    assert pickle.loads(pickle.dumps(caught.value)).timestamp == NOW


def test_tolerance_is_configurable() -> None:
    body = event_body()
    with pytest.raises(StaleTimestampError):
        verify(body, header_for(body), SECRET, now=NOW + 11, tolerance=10)
    assert verify(body, header_for(body), SECRET, now=NOW + 3000, tolerance=3600)


# -- malformed -----------------------------------------------------------------------------------

DIGEST = "a" * 64


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        f"v1={DIGEST}",  # missing t
        f"t={NOW}",  # missing v1
        f"t={NOW},v0={DIGEST}",  # no v1 among the signatures
        "garbage",
        "t=,v1=",
        f"t=yesterday,v1={DIGEST}",
        f"t=-5,v1={DIGEST}",
        f"t=1.5,v1={DIGEST}",
        f"t={NOW},t={NOW},v1={DIGEST}",
        f"t={NOW},v1=not-hex",
        f"t={NOW},v1={DIGEST[:-2]}",
        f"t={NOW};v1={DIGEST}",
        f"t={NOW},v1={DIGEST},junk",
    ],
    ids=repr,
)
def test_a_malformed_header_is_rejected(header: str | None) -> None:
    with pytest.raises(MalformedSignatureError, match="header"):
        verify(event_body(), header, SECRET, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"type": "generation.completed"}',
        b'{"type": "generation.completed", "data": []}',
        b'{"type": 7, "data": {}}',
        b'{"type": "generation.completed", "data": {"status": "succeeded"}}',
    ],
    ids=repr,
)
def test_a_signed_body_that_is_not_an_event_is_rejected(body: bytes) -> None:
    with pytest.raises(MalformedPayloadError):
        verify(body, header_for(body), SECRET, now=NOW)


def test_an_unknown_event_type_or_status_does_not_crash() -> None:
    body = event_body("generation.archived", status="archived")
    event = verify(body, header_for(body), SECRET, now=NOW)
    assert event.type == "generation.archived"
    assert event.generation.status == "archived" and not event.generation.status.is_terminal


# -- the error tree and misuse -------------------------------------------------------------------


def test_the_errors_are_distinct_and_share_one_base() -> None:
    kinds = (MalformedSignatureError, InvalidSignatureError, StaleTimestampError)
    for kind in (*kinds, MalformedPayloadError):
        assert issubclass(kind, WebhookVerificationError)
        assert issubclass(kind, asyncsdk.AsyncSDKError)
        assert kind.__module__ == "asyncsdk.webhooks"
    for a in kinds:
        assert [b for b in kinds if issubclass(a, b)] == [a]  # distinct: none is another
    assert sorted(webhooks.__all__) == webhooks.__all__


def test_messages_never_contain_the_secret() -> None:
    body = event_body()
    for header, now in ((header_for(body, "whsec_x"), NOW), (header_for(body), NOW + 999)):
        with pytest.raises(WebhookVerificationError) as caught:
            verify(body, header, SECRET, now=now)
        assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


@pytest.mark.parametrize("secret", ["", b"", [], ["whsec_ok", ""]])
def test_an_empty_secret_is_misuse(secret: Any) -> None:
    body = event_body()
    with pytest.raises(ValueError, match="secret"):
        verify(body, header_for(body), secret, now=NOW)


def test_bad_arguments_are_misuse() -> None:
    body = event_body()
    with pytest.raises(ValueError, match="tolerance"):
        verify(body, header_for(body), SECRET, tolerance=-1)
    with pytest.raises(TypeError, match="raw_body"):
        verify(json.loads(body), header_for(body), SECRET, now=NOW)


@pytest.mark.parametrize(
    "wrap",
    [bytearray, memoryview, lambda raw: [bytearray(raw)], lambda raw: ("x", memoryview(raw))],
)
def test_a_bytes_like_secret_is_its_bytes_not_a_key_of_zeros(wrap: Any) -> None:
    body = event_body()
    raw = SECRET.encode()
    # Iterated as integers, each byte n of the secret would become bytes(n): a key of zeros.
    zeros = b"".join(bytes(n) for n in raw)
    forged = hmac.new(zeros, f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    with pytest.raises(InvalidSignatureError):
        verify(body, f"t={NOW},v1={forged}", wrap(raw), now=NOW)
    assert verify(body, header_for(body), wrap(raw), now=NOW).type == "generation.completed"


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_sign_takes_a_bytes_like_secret_as_its_bytes(wrap: Any) -> None:
    body = event_body()
    assert sign(body, wrap(SECRET.encode()), timestamp=NOW) == header_for(body)


@pytest.mark.parametrize("secret", [42, [42], ["whsec_ok", 7], None])
def test_a_secret_that_is_not_text_or_bytes_is_refused(secret: Any) -> None:
    body = event_body()
    with pytest.raises(TypeError, match="secret"):
        verify(body, header_for(body), secret, now=NOW)
