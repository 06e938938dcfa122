"""The request side of a submission: body parsing, validation, content policy, image inputs.

Checks run in this order, and the first failure answers:

1. the body must be JSON (`INVALID_JSON`; an empty body is not JSON), and a JSON object
   (`VALIDATION_ERROR`); the Content-Type header is not looked at;
2. the model identifier must be in the catalogue (`VALIDATION_ERROR`: the contract is silent on
   unknown models and a bad identifier is a bad request parameter);
3. the fields, in this order (`VALIDATION_ERROR`, the message names the field):
   `prompt` a string of 1-2000 characters that is not only whitespace, and at least the
   model's `min_prompt` characters; `name` a string of 3-30 characters; `output_number` an
   integer 1-4 (not a boolean, not 2.0); `image_input` a list of 1-10 strings (an empty list is
   invalid), each an absolute http(s) URL or a ``data:image/<type>;base64,<data>`` URI with
   valid base64; `aspect_ratio` from the list, `match_input_image` only with `image_input`;
   `output_format` png/jpg/webp. An explicit ``null`` counts as absent for the optional
   fields. Other keys pass through (kept on the server-side generation, never echoed);
4. the prompt against the NSFW word list, whole words, case-insensitive
   (`NSFW_CONTENT_DETECTED`);
5. the images, in order: data URIs are decoded, URLs really fetched (with the emulator's
   client session and `image_fetch_timeout`); a failed fetch, a non-200 answer or bytes that are
   not PNG/JPEG/GIF/WebP give `IMAGE_DOWNLOAD_FAILED`; an image over `max_image_bytes` or a
   running total over `max_total_image_bytes` gives `IMAGE_SIZE_LIMIT_EXCEEDED`.

The limits (window, concurrency, credits) come after all of this, in `_state.State.submit`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from ._errors import ApiError, validation_error
from ._settings import ASPECT_RATIOS, MATCH_INPUT_IMAGE, MB, OUTPUT_FORMATS, Settings
from ._state import Submission

DATA_URI: Final = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,(?P<data>.*)", re.DOTALL)
WORD: Final = re.compile(r"[a-z0-9]+")
KNOWN_FIELDS: Final = frozenset(
    {"prompt", "name", "output_number", "aspect_ratio", "output_format", "image_input"}
)
MAX_IMAGES: Final = 10


def parse_submission(model: str, body: bytes, settings: Settings) -> Submission:
    """Steps 1-4 of the module docstring."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("INVALID_JSON") from None
    if not isinstance(payload, dict):
        raise validation_error("body", "must be a JSON object")
    spec = settings.models.get(model)
    if spec is None:
        raise validation_error("model", f"unknown model identifier {model!r}")

    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= 2000 or not prompt.strip():
        raise validation_error("prompt", "is required: a string of 1-2000 characters")
    if len(prompt) < spec.min_prompt:
        raise validation_error("prompt", f"{model} needs at least {spec.min_prompt} characters")
    name = _optional(payload, "name", str, lambda v: 3 <= len(v) <= 30, "3-30 characters")
    output_number = _optional(payload, "output_number", int, lambda v: 1 <= v <= 4, "1-4")
    images = _image_input(payload.get("image_input"))
    ratios = ASPECT_RATIOS | {MATCH_INPUT_IMAGE} if images else ASPECT_RATIOS
    aspect_ratio = _optional(payload, "aspect_ratio", str, ratios.__contains__, "a known ratio")
    output_format = _optional(
        payload, "output_format", str, OUTPUT_FORMATS.__contains__, "png, jpg or webp"
    )

    words = set(WORD.findall(prompt.lower()))
    if words & settings.nsfw_words:
        raise ApiError("NSFW_CONTENT_DETECTED")
    return Submission(
        model=model,
        prompt=prompt,
        name=name,
        output_number=1 if output_number is None else output_number,
        aspect_ratio="1:1" if aspect_ratio is None else aspect_ratio,
        output_format="png" if output_format is None else output_format,
        image_input=images,
        extra={key: value for key, value in payload.items() if key not in KNOWN_FIELDS},
    )


def _optional(
    payload: dict[str, Any], field: str, kind: type, ok: Callable[[Any], bool], what: str
) -> Any:
    value = payload.get(field)
    if value is None:
        return None
    # bool is an int subclass, and JSON true must not pass for output_number 1.
    if not isinstance(value, kind) or isinstance(value, bool) or not ok(value):
        raise validation_error(field, f"must be {what}")
    return value


def _image_input(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IMAGES:
        raise validation_error("image_input", f"must be a list of 1-{MAX_IMAGES} images")
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str):
            raise validation_error("image_input", f"image {index} must be a string")
        if (match := DATA_URI.fullmatch(item)) is not None:
            try:
                base64.b64decode(match["data"], validate=True)
            except binascii.Error:
                raise validation_error(
                    "image_input", f"image {index} is not valid base64"
                ) from None
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise validation_error(
                "image_input", f"image {index} must be an http(s) URL or data URI"
            )
    return tuple(value)


async def load_images(
    session: aiohttp.ClientSession, items: Sequence[str], settings: Settings
) -> list[str]:
    """Step 5: fetch or decode every image; the file extension of each, in order."""
    kinds, total = [], 0
    for index, item in enumerate(items, start=1):
        match = DATA_URI.fullmatch(item)
        if match is not None:
            data = base64.b64decode(match["data"])
        else:
            data = await _download(session, item, index, settings)
        if len(data) > settings.max_image_bytes:
            raise _too_large(f"Image {index}", settings.max_image_bytes, "size", len(data))
        total += len(data)
        if total > settings.max_total_image_bytes:
            raise _too_large("Total image", settings.max_total_image_bytes, "total", total)
        kind = sniff(data)
        if kind is None:
            raise ApiError("IMAGE_DOWNLOAD_FAILED", detail=f"(image {index}: not an image)")
        kinds.append(kind)
    return kinds


async def _download(
    session: aiohttp.ClientSession, url: str, index: int, settings: Settings
) -> bytes:
    # One byte over the per-image cap is enough to know the image is too large.
    cap = settings.max_image_bytes + 1
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=settings.image_fetch_timeout)
        ) as response:
            if response.status != 200:
                raise ApiError(
                    "IMAGE_DOWNLOAD_FAILED", detail=f"(image {index}: HTTP {response.status})"
                )
            chunks, size = [], 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size >= cap:
                    current = response.content_length or size
                    raise _too_large(f"Image {index}", settings.max_image_bytes, "size", current)
            return b"".join(chunks)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ApiError(
            "IMAGE_DOWNLOAD_FAILED", detail=f"(image {index}: {type(exc).__name__})"
        ) from exc


def _too_large(subject: str, limit: int, measure: str, current: int) -> ApiError:
    return ApiError(
        "IMAGE_SIZE_LIMIT_EXCEEDED",
        subject=subject,
        limit=f"{limit / MB:g}MB",
        measure=measure,
        current=f"{current / MB:.2f}MB",
    )


def sniff(data: bytes) -> str | None:
    """The file extension of an image by its magic bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None
