"""The error vocabulary: one table from code to (HTTP status, message), one exception.

Every error the emulator answers is an `ApiError` raised somewhere below the HTTP layer and
rendered by the single middleware in `_app.py` as
``{"success": false, "error": CODE, "message": text}``. Statuses and message texts are the seed
reference's, verbatim; where the seed's text carries a number (credits required, image sizes,
the submission limit) the table holds a template. A caller may append a `detail` (for example
which field failed validation) after the seed text.

Three codes are the emulator's own, for requests the seed does not cover: `NOT_FOUND` (no such
route or file), `METHOD_NOT_ALLOWED` and `PAYLOAD_TOO_LARGE` (a body over the server's size cap).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

ERRORS: Final[Mapping[str, tuple[int, str]]] = {
    "AUTHENTICATION_FAILED": (401, "Authentication failed."),
    "MISSING_API_TOKEN": (
        401,
        'Missing API token. Include it in Authorization header as "Bearer YOUR_API_TOKEN" '
        "or in X-API-Key header.",
    ),
    "INVALID_API_TOKEN": (401, "Invalid or expired API token."),
    "FAILED_TO_VALIDATE_TOKEN": (500, "Failed to validate API token."),
    "INVALID_JSON": (
        400,
        "Request body must be valid JSON. Please check your request format.",
    ),
    "VALIDATION_ERROR": (
        400,
        "One or more request parameters are invalid. Please check the required fields.",
    ),
    "INVALID_GENERATION_ID": (404, "Invalid generation ID format. Must be a valid UUID."),
    "NSFW_CONTENT_DETECTED": (
        400,
        "Your prompt contains content that violates our content policy. "
        "Please modify your prompt and try again.",
    ),
    "IMAGE_SIZE_LIMIT_EXCEEDED": (
        400,
        "{subject} size exceeds {limit} limit. Current {measure}: {current}.",
    ),
    "IMAGE_DOWNLOAD_FAILED": (
        400,
        "Could not download image from the provided URL. Please verify the URL is accessible "
        "and points to a valid image.",
    ),
    "INSUFFICIENT_CREDITS": (
        402,
        "Not enough credits to complete this request. Required: {required} credits. "
        "Please add more credits to your account.",
    ),
    "ACCOUNT_NOT_FOUND": (404, "Account not found. Please verify your account ID."),
    "GENERATION_NOT_FOUND": (404, "Generation not found or access denied."),
    "RATE_LIMIT_ERROR": (
        429,
        "You can create up to {limit} generations per {period}. Please wait and try again.",
    ),
    "CONCURRENT_GENERATION_ERROR": (
        429,
        "You already have a generation in progress. Please wait for it to complete.",
    ),
    "FETCH_FAILED": (500, "Failed to fetch images. Please try again."),
    "IMAGE_UPLOAD_FAILED": (
        500,
        "Failed to process image 1. Please ensure the image is valid and accessible.",
    ),
    "GENERATION_UPDATE_FAILED": (
        500,
        "Could not update the generation record. Please try again or contact support if the "
        "issue persists.",
    ),
    "GENERATION_INIT_FAILED": (
        500,
        "Could not initialize your generation request. Please try again.",
    ),
    "CREDIT_PROCESSING_FAILED": (
        500,
        "Could not process credit payment. Please try again or contact support.",
    ),
    "GENERATION_START_FAILED": (
        500,
        "Failed to start image generation. Your credits have been refunded. Please try again.",
    ),
    "INTERNAL_SERVER_ERROR": (
        500,
        "An unexpected error occurred. Please try again or contact support if the issue persists.",
    ),
    # The emulator's own codes (see the module docstring).
    "NOT_FOUND": (404, "The requested resource does not exist."),
    "METHOD_NOT_ALLOWED": (405, "This method is not allowed on this resource."),
    "PAYLOAD_TOO_LARGE": (413, "The request body is too large."),
}

#: The codes a fault may inject: the seed's HTTP 500 family.
SERVER_ERROR_CODES: Final = frozenset(code for code, (status, _) in ERRORS.items() if status == 500)


class ApiError(Exception):
    """An API error answer: `code` picks status and message from `ERRORS`.

    `params` fill the message template, `detail` is appended to it, `headers` are added to
    the response (Retry-After on a 429, for instance).

    >>> ApiError("INSUFFICIENT_CREDITS", required=4).message[:53]
    'Not enough credits to complete this request. Required'
    """

    def __init__(
        self,
        code: str,
        *,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: object,
    ) -> None:
        self.status, template = ERRORS[code]
        self.code = code
        self.message = template.format(**params) + (f" {detail}" if detail else "")
        self.headers = dict(headers or {})
        super().__init__(f"{code}: {self.message}")


def validation_error(field: str, why: str) -> ApiError:
    """VALIDATION_ERROR naming the offending field after the seed's text."""
    return ApiError("VALIDATION_ERROR", detail=f"({field}: {why})")
