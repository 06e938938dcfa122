"""Input images for image-to-image: URLs pass through, local files and bytes become ``data:``.

The service takes ``image_input`` as a list of public ``http(s)`` URLs or
``data:image/...;base64,`` URIs, at most 10 of them, 10 MB each and 20 MB in all. Everything
that can be checked locally is checked before anything is sent, so a too-large file fails
fast with :class:`~asyncsdk.ImageInputError` instead of after an upload.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from pathlib import Path

import anyio

from ._config import MAX_IMAGE_BYTES, MAX_IMAGES, MAX_TOTAL_IMAGE_BYTES
from ._errors import ImageInputError

__all__ = ["ImageLike", "Images", "image_inputs"]

ImageLike = str | bytes | os.PathLike[str]
Images = ImageLike | Sequence[ImageLike]

_DATA_URI = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.DOTALL)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
             ".gif": "image/gif", ".webp": "image/webp"}  # fmt: skip


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.2f}MB"


def sniff(data: bytes) -> str | None:
    """The MIME type of image bytes from their signature, or ``None``."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _too_large(what: str, size: int, limit: int) -> ImageInputError:
    return ImageInputError(
        f"{what} is {_mb(size)}, over the {_mb(limit)} limit",
        code="IMAGE_SIZE_LIMIT_EXCEEDED",
    )


async def _one(item: ImageLike, where: str) -> tuple[str, int]:
    """One ``image_input`` string and its decoded size in bytes (0 for a URL)."""
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        return item, 0
    if isinstance(item, str) and item.startswith("data:"):
        match = _DATA_URI.match(item)
        if match is None:
            raise ImageInputError(f"{where} is not a data:image/...;base64, URI")
        try:
            size = len(base64.b64decode(match.group(2), validate=True))
        except binascii.Error:
            raise ImageInputError(f"{where} has invalid base64 data") from None
        return item, size
    if isinstance(item, (bytes, bytearray, memoryview)):
        data, mime = bytes(item), sniff(bytes(item))
        if mime is None:
            raise ImageInputError(f"{where}: the bytes are not a PNG, JPEG, GIF or WebP image")
    elif isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            size = (await anyio.Path(path).stat()).st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: no such image file: {str(path)!r}") from None
        if size > MAX_IMAGE_BYTES:  # don't read a huge file only to refuse it
            raise _too_large(f"{where} ({path.name})", size, MAX_IMAGE_BYTES)
        data = await anyio.Path(path).read_bytes()
        mime = sniff(data) or _SUFFIXES.get(path.suffix.lower())
        if mime is None:
            raise ImageInputError(f"{where} ({path.name}) is not a PNG, JPEG, GIF or WebP image")
    else:
        raise TypeError(f"{where} must be a URL, a data: URI, a path or bytes, not {item!r}")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}", len(data)


async def image_inputs(images: Images) -> list[str]:
    """Turn ``images=`` (one item or a sequence) into ``image_input``, checking the limits."""
    items: Sequence[ImageLike] = (
        [images] if isinstance(images, (str, bytes, bytearray, os.PathLike)) else images
    )
    if not 1 <= len(items) <= MAX_IMAGES:
        raise ValueError(f"images: give 1 to {MAX_IMAGES} images, got {len(items)}")
    result, total = [], 0
    for index, item in enumerate(items):
        where = f"images[{index}]"
        uri, size = await _one(item, where)
        if size > MAX_IMAGE_BYTES:
            raise _too_large(where, size, MAX_IMAGE_BYTES)
        total += size
        result.append(uri)
    if total > MAX_TOTAL_IMAGE_BYTES:
        raise _too_large("the images together", total, MAX_TOTAL_IMAGE_BYTES)
    return result
