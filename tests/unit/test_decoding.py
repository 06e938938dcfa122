"""Reading the service's answers without a socket: bodies, error envelopes, untrusted text.

``_decode`` turns raw bytes into a JSON object (or ``None``), ``Transport._error`` builds the
error for an answer that is not a readable success, ``Response.parse`` structures a body,
and the seam translates aiohttp's failures. Server text is untrusted: the key never reaches
a message, and URLs lose their query strings (a CDN's may be a signature).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from asyncsdk import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    AuthenticationError,
    BadRequestError,
    ContentPolicyError,
    Credits,
    Generation,
    GenerationStatus,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from asyncsdk._models import RateLimitInfo
from asyncsdk._transport import Response, Transport, _decode, _translate

KEY = "bye_live_0123456789abcdef"
ODD_KEY = "sk-not-shaped-like-ours-42"  # only known as the Bearer value


def transport(key: str = KEY) -> Transport:
    return Transport(
        "https://api.example.test", headers={"Authorization": f"Bearer {key}"}, timeout=5.0
    )


def error(
    status: int,
    body: dict[str, Any] | None = None,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    key: str = KEY,
    rate_limit: RateLimitInfo | None = None,
) -> APIError:
    if raw is None:
        raw = json.dumps(body).encode()
    return transport(key)._error(status, body, raw, content_type, "req-1", rate_limit)


# -- _decode -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        (b'{"success": true, "data": {"a": 1}}', {"success": True, "data": {"a": 1}}),
        ('{"prompt": "café ☕"}'.encode(), {"prompt": "café ☕"}),
        ('{"a": 1}'.encode("utf-16"), {"a": 1}),  # detected from its BOM
        ('{"a": 1}'.encode("utf-16-le"), {"a": 1}),  # and from its zero bytes
        (b"[1, 2]", None),  # JSON, but not an object
        (b'"ok"', None),
        (b"<html><body>Bad gateway</body></html>", None),
        (b"", None),
        (b'{"truncated": ', None),
        (b"\xff\xfe\x00garbage", None),
    ],
    ids=["object", "utf8", "utf16-bom", "utf16-le", "array", "string", "html", "empty",
         "truncated", "garbage"],
)  # fmt: skip
def test_decode_gives_an_object_or_none(raw: bytes, decoded: dict[str, Any] | None) -> None:
    assert _decode(raw) == decoded


# -- Transport._error ------------------------------------------------------------------------------
def test_an_unreadable_2xx_is_a_validation_error_with_a_snippet() -> None:
    exc = error(200, None, b"<html>maintenance</html>", "text/html")
    assert type(exc) is APIResponseValidationError
    assert (exc.status, exc.request_id, exc.code) == (200, "req-1", None)
    assert exc.message == "unexpected response (HTTP 200, text/html): <html>maintenance</html>"
    empty = error(204, None, b"", None)
    assert type(empty) is APIResponseValidationError
    assert empty.message == "unexpected response (HTTP 204, no content type): <empty>"


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "AUTHENTICATION_FAILED", AuthenticationError),
        (400, "NSFW_CONTENT_DETECTED", ContentPolicyError),
        (402, "INSUFFICIENT_CREDITS", InsufficientCreditsError),
        (404, "ACCOUNT_NOT_FOUND", NotFoundError),
        (429, "RATE_LIMIT_ERROR", RateLimitError),
        (500, "CREDIT_PROCESSING_FAILED", ServerError),
        (400, "SOMETHING_NEW", BadRequestError),  # an unknown code: by status
        (503, "SOMETHING_NEW", ServerError),
        (418, "SOMETHING_NEW", APIError),
    ],
)
def test_an_error_envelope_is_the_class_of_its_code_then_its_status(
    status: int, code: str, cls: type[APIError]
) -> None:
    exc = error(status, {"success": False, "error": code, "message": "it went wrong"})
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.message, exc.request_id) == (
        status, code, "it went wrong", "req-1",
    )  # fmt: skip


def test_a_429_carries_the_reset_from_its_headers() -> None:
    info = RateLimitInfo.from_headers({"X-RateLimit-Reset": "2000000000", "Retry-After": "7"})
    exc = error(429, {"success": False, "error": "RATE_LIMIT_ERROR"}, rate_limit=info)
    assert isinstance(exc, RateLimitError) and exc.reset_at is not None
    assert exc.rate_limit is info and exc.message == "RATE_LIMIT_ERROR"  # no message: the code


def test_an_html_error_page_is_a_server_error_with_a_short_snippet() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>" + b"x" * 5000 + b"</body></html>"
    exc = error(502, None, page, "text/html; charset=utf-8")
    assert type(exc) is ServerError and exc.code is None
    head = "unexpected response (HTTP 502, text/html; charset=utf-8): <html><body><h1>502 Bad"
    assert exc.message.startswith(head)
    assert len(exc.message) < 300 and "</body>" not in exc.message  # the first 200 bytes


@pytest.mark.parametrize("key", [KEY, ODD_KEY])
def test_the_key_never_reaches_the_message_of_an_envelope_or_a_page(key: str) -> None:
    echoed = f"bad key {key} (sent as Authorization: Bearer {key})"
    envelope = error(401, {"success": False, "error": "AUTHENTICATION_FAILED", "message": echoed},
                     key=key)  # fmt: skip
    page = error(502, None, f"<pre>{echoed}</pre>".encode(), "text/html", key=key)
    code = error(400, {"success": False, "error": f"BAD_{key}"}, key=key)
    for exc in (envelope, page, code):
        for text in (str(exc), exc.message, repr(exc), str(exc.code)):
            assert key not in text


def test_a_url_in_server_text_loses_its_query_string() -> None:
    message = "could not fetch https://cdn.example.test/in/1.png?X-Amz-Signature=abc&exp=9 (403)"
    exc = error(400, {"success": False, "error": "IMAGE_DOWNLOAD_FAILED", "message": message})
    assert exc.message == "could not fetch https://cdn.example.test/in/1.png (403)"
    page = error(502, None, b"<a href='https://cdn.example.test/x?token=s3cr3t'>", "text/html")
    assert "s3cr3t" not in page.message and "https://cdn.example.test/x" in page.message


# -- Response.parse ------------------------------------------------------------------------------
def test_parse_structures_the_data_and_sets_the_answers_request_id() -> None:
    body = {"success": True, "data": {"generationId": "g-1", "status": "processing"}}
    generation = Response(200, body, "req-9", None).parse(Generation)
    assert generation.generation_id == "g-1" and generation.status is GenerationStatus.PROCESSING
    credits = Response(200, {"data": {"total": 5}}, "r", None).parse(Credits, {"total": 5})
    assert credits.total == 5


@pytest.mark.parametrize(
    "data",
    [None, "not an object", {"status": "processing"}, {"generationId": ["a", "list"]}],
    ids=["missing", "string", "no-id", "wrong-type"],
)
def test_a_body_that_does_not_fit_is_a_validation_error(data: object) -> None:
    answer = Response(200, {"success": True, "data": data}, "req-3", None)
    with pytest.raises(APIResponseValidationError) as caught:
        answer.parse(Generation)
    exc = caught.value
    assert (exc.status, exc.request_id) == (200, "req-3")
    assert exc.message.startswith("unexpected response shape for Generation: ")
    assert exc.__cause__ is not None


def test_a_validation_message_does_not_echo_a_key_shaped_value() -> None:
    data = {"generationId": "g-1", "status": "processing", "createdAt": f"key {KEY}"}
    with pytest.raises(APIResponseValidationError) as caught:
        Response(200, {"data": data}, "r", None).parse(Generation)
    assert KEY in str(caught.value.__cause__)  # the converter's own message echoes it
    assert "Invalid isoformat string" in str(caught.value) and KEY not in str(caught.value)


# -- the seam ------------------------------------------------------------------------------------
def test_the_seam_drops_the_query_and_the_key_from_a_connection_error() -> None:
    url = f"https://cdn.example.test/out/1.png?sig=abc&key={ODD_KEY}"
    with (
        pytest.raises(APIConnectionError) as caught,
        _translate("GET", url, 5.0, {"Authorization": f"Bearer {ODD_KEY}"}),
    ):
        raise aiohttp.ServerDisconnectedError()
    exc = caught.value
    assert exc.request_sent  # it may have reached the service
    assert "https://cdn.example.test/out/1.png" in str(exc)
    assert "sig=abc" not in str(exc) and ODD_KEY not in str(exc)
    assert isinstance(exc.__cause__, aiohttp.ServerDisconnectedError)
