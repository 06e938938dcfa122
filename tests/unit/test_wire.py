"""The one converter: camelCase, nulls, datetimes, the status enum, unknown fields."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from asyncsdk import AccountInfo, ApiStatus, Generation, GenerationPage, GenerationStatus
from asyncsdk._wire import converter, parse_datetime, to_camel

RECORD = {
    "generationId": "9b2f7f0e-2b1c-4a53-9d0f-4c1d2e3f4a5b",
    "status": "succeeded",
    "name": "kite",
    "prompt": "a red kite",
    "aspectRatio": "16:9",
    "modelProvider": "google",
    "outputNumber": 2,
    "outputSuccess": 2,
    "outputFailed": 0,
    "currentImage": 0,
    "deletedImage": 0,
    "outputImages": ["https://cdn.example/1.png", "https://cdn.example/2.png"],
    "creditCost": 4,
    "failureReason": None,
    "predictTime": 3.25,
    "totalTime": 4.5,
    "createdAt": "2026-11-24T05:00:00.250Z",
    "isPublic": False,
    "imageInput": [],
    "somethingNew": {"the": "server added this"},
}


def test_a_full_record_maps_every_field() -> None:
    g = converter.structure(RECORD, Generation)
    assert g.generation_id == RECORD["generationId"]
    assert g.status is GenerationStatus.SUCCEEDED and g.status.is_terminal
    assert g.aspect_ratio == "16:9"
    assert g.output_images == ("https://cdn.example/1.png", "https://cdn.example/2.png")
    assert g.predict_time == 3.25 and g.credit_cost == 4 and g.is_public is False
    assert g.created_at == datetime(2026, 11, 24, 5, 0, 0, 250000, tzinfo=timezone.utc)


def test_sparse_and_null_fields_do_not_crash() -> None:
    g = converter.structure(
        {"generationId": "x", "status": "starting", "outputImages": None, "imageInput": None},
        Generation,
    )
    assert g.output_images == () and g.image_input == ()
    assert g.failure_reason is None and g.created_at is None
    assert not g.status.is_terminal


def test_unknown_status_is_a_non_terminal_member() -> None:
    g = converter.structure({"generationId": "x", "status": "queued"}, Generation)
    assert g.status == "queued" and not g.status.is_terminal
    assert isinstance(g.status, GenerationStatus)
    again = converter.structure({"generationId": "y", "status": "queued"}, Generation)
    assert again.status is g.status
    assert GenerationStatus("succeeded") is GenerationStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("2026-11-24T05:00:00Z", timedelta(0)),
        ("2026-11-24T05:00:00", timedelta(0)),  # no zone: UTC
        ("2026-11-24T07:00:00+02:00", timedelta(hours=2)),
        ("2026-11-24T05:00:00.123456", timedelta(0)),
        ("2026-11-24T05:00:00.1Z", timedelta(0)),
        ("2026-11-24T05:00:00.123456789+00:00", timedelta(0)),
    ],
)
def test_datetimes_are_timezone_aware(text: str, offset: timedelta) -> None:
    parsed = parse_datetime(text)
    assert parsed.utcoffset() == offset
    assert parsed.astimezone(timezone.utc).hour == 5


def test_nested_models_and_pages() -> None:
    info = converter.structure(
        {
            "account": {"id": "a", "isPersonalAccount": True, "createdAt": "2026-01-01"},
            "credits": {"total": 98, "refunded": 2, "new": 1},
            "apiKey": {"name": "ci", "prefix": "bye_12"},
        },
        AccountInfo,
    )
    assert info.account.is_personal_account is True
    assert info.credits.total == 98 and info.credits.bonus == 0
    assert info.api_key.prefix == "bye_12"
    page = converter.structure({"generations": [RECORD], "total": 7}, GenerationPage)
    assert page.total == 7 and page.generations[0].name == "kite"
    status = converter.structure({"accountId": "a", "timestamp": None}, ApiStatus)
    assert status.account_id == "a" and status.timestamp is None


def test_round_trip_through_unstructure() -> None:
    g = converter.structure(RECORD, Generation)
    data = converter.unstructure(g)
    assert data["generationId"] == RECORD["generationId"] and data["status"] == "succeeded"
    assert converter.structure(data, Generation) == g


def test_request_id_is_carried_but_not_compared() -> None:
    a = converter.structure({**RECORD, "requestId": "r1"}, Generation)
    b = converter.structure({**RECORD, "requestId": "r2"}, Generation)
    assert a == b and a.request_id == "r1"


def test_to_camel() -> None:
    assert to_camel("generation_id") == "generationId"
    assert to_camel("is_personal_account") == "isPersonalAccount"
