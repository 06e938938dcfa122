"""A tiny deterministic PNG encoder (zlib + struct, no Pillow) for the emulator's outputs.

`render(seed, aspect_ratio)` draws a small RGB picture whose colours and stripe geometry come
from `sha256(seed)`, so the same prompt and output index always give byte-identical files and
different ones almost surely differ. The picture's long side is `SIZE` pixels and its shape
follows the generation's aspect ratio (`match_input_image` and anything unknown give a square).

The file is a minimal valid PNG: signature, IHDR (8-bit truecolour, no interlace), one IDAT
holding the zlib stream of filter-type-0 scanlines, IEND; every chunk carries its CRC-32.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from typing import Final

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
SIZE: Final = 64


def encode_rgb(width: int, height: int, pixels: bytes) -> bytes:
    """Encode `pixels` (row-major RGB triples, `width * height * 3` bytes) as a PNG file."""
    if width < 1 or height < 1 or len(pixels) != width * height * 3:
        raise ValueError("pixels must hold width * height RGB triples")
    stride = width * 3
    # Each scanline is prefixed by its filter type; 0 (None) keeps the encoder trivial.
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def dimensions(aspect_ratio: str) -> tuple[int, int]:
    """Width and height for an aspect ratio such as ``"16:9"``; the long side is `SIZE`."""
    try:
        w, h = (int(part) for part in aspect_ratio.split(":"))
    except ValueError:
        return SIZE, SIZE
    if w <= 0 or h <= 0:
        return SIZE, SIZE
    if w >= h:
        return SIZE, max(1, round(SIZE * h / w))
    return max(1, round(SIZE * w / h)), SIZE


@functools.lru_cache(maxsize=256)
def render(seed: str, aspect_ratio: str = "1:1") -> bytes:
    """The deterministic PNG for `seed` (the emulator passes prompt and output index)."""
    digest = hashlib.sha256(seed.encode()).digest()
    first, second = digest[0:3], digest[3:6]
    period = 4 + digest[6] % 12
    slant = 1 + digest[7] % 3
    width, height = dimensions(aspect_ratio)
    pixels = bytearray()
    for y in range(height):
        for x in range(width):
            # A diagonal blend of the two colours, striped so the picture is not flat.
            t = (x + y) / max(1, width + height - 2)
            base = first if ((x + slant * y) // period) % 2 == 0 else second
            other = second if base is first else first
            pixels.extend(round(b * (1 - t) + o * t) for b, o in zip(base, other, strict=True))
    return encode_rgb(width, height, bytes(pixels))
