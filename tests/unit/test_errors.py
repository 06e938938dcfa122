"""The error tree and the code/status table."""

from __future__ import annotations

import pickle

import pytest

import asyncsdk
from asyncsdk import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConcurrencyLimitError,
    ContentPolicyError,
    ImageInputError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    RateLimitInfo,
    ServerError,
)
from asyncsdk._errors import error_for

SEED_CODES = {
    "AUTHENTICATION_FAILED": (401, AuthenticationError),
    "MISSING_API_TOKEN": (401, AuthenticationError),
    "INVALID_API_TOKEN": (401, AuthenticationError),
    "FAILED_TO_VALIDATE_TOKEN": (500, ServerError),
    "INVALID_JSON": (400, BadRequestError),
    "VALIDATION_ERROR": (400, BadRequestError),
    "INVALID_GENERATION_ID": (404, NotFoundError),
    "NSFW_CONTENT_DETECTED": (400, ContentPolicyError),
    "IMAGE_SIZE_LIMIT_EXCEEDED": (400, ImageInputError),
    "IMAGE_DOWNLOAD_FAILED": (400, ImageInputError),
    "INSUFFICIENT_CREDITS": (402, InsufficientCreditsError),
    "ACCOUNT_NOT_FOUND": (404, NotFoundError),
    "GENERATION_NOT_FOUND": (404, NotFoundError),
    "RATE_LIMIT_ERROR": (429, RateLimitError),
    "CONCURRENT_GENERATION_ERROR": (429, ConcurrencyLimitError),
    "FETCH_FAILED": (500, ServerError),
    "IMAGE_UPLOAD_FAILED": (500, ServerError),
    "GENERATION_UPDATE_FAILED": (500, ServerError),
    "GENERATION_INIT_FAILED": (500, ServerError),
    "CREDIT_PROCESSING_FAILED": (500, ServerError),
    "GENERATION_START_FAILED": (500, ServerError),
    "INTERNAL_SERVER_ERROR": (500, ServerError),
}


@pytest.mark.parametrize(("code", "expected"), SEED_CODES.items())
def test_every_documented_code_maps_to_its_class(code: str, expected: tuple[int, type]) -> None:
    status, cls = expected
    error = error_for(status, code, "msg", request_id="req-1")
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.request_id) == (
        status,
        code,
        "msg",
        "req-1",
    )
    assert "req-1" in str(error) and code in str(error)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequestError), (401, AuthenticationError), (402, InsufficientCreditsError),
     (404, NotFoundError), (429, RateLimitError), (503, ServerError), (418, APIError)],
)  # fmt: skip
def test_unknown_codes_fall_back_by_status_and_keep_their_code(status: int, cls: type) -> None:
    error = error_for(status, "SOMETHING_NEW", "new")
    assert type(error) is cls and error.code == "SOMETHING_NEW"


def test_rate_limit_errors_carry_the_reset_time() -> None:
    info = RateLimitInfo(limit=10, remaining=0, reset_at=2_000_000_000.0, retry_after=None)
    error = error_for(429, "RATE_LIMIT_ERROR", "slow down", rate_limit=info)
    assert isinstance(error, RateLimitError)
    assert error.reset_at == 2_000_000_000.0 and error.rate_limit == info


def test_hierarchy_and_builtin_compatibility() -> None:
    assert issubclass(ConcurrencyLimitError, RateLimitError)
    assert issubclass(APITimeoutError, APIConnectionError) and issubclass(
        APITimeoutError, TimeoutError
    )
    for name in ("APIError", "APIConnectionError", "GenerationFailedError"):
        assert issubclass(getattr(asyncsdk, name), asyncsdk.AsyncSDKError)
    assert RateLimitError.__module__ == "asyncsdk"


def test_errors_survive_pickling() -> None:
    error = error_for(429, "RATE_LIMIT_ERROR", "m", request_id="r", rate_limit=None)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is RateLimitError and clone.request_id == "r" and clone.code == error.code
    lost = pickle.loads(pickle.dumps(APIConnectionError("gone", request_sent=False)))
    assert lost.request_sent is False
