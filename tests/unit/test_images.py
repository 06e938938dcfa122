"""images=: URLs pass through, paths and bytes become data: URIs, limits checked first."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from asyncsdk import ImageInputError
from asyncsdk._images import image_inputs, sniff

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


async def test_urls_pass_through_and_bytes_become_data_uris() -> None:
    result = await image_inputs(["https://example.com/a.png", PNG])
    assert result[0] == "https://example.com/a.png"
    assert result[1] == "data:image/png;base64," + base64.b64encode(PNG).decode()


async def test_a_single_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"1" * 10)
    (uri,) = await image_inputs(path)
    assert uri.startswith("data:image/jpeg;base64,")


async def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"images\[0\].*nope.png"):
        await image_inputs(str(tmp_path / "nope.png"))


async def test_per_image_limit_is_checked_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(10 * 1024 * 1024 + 1)
    with pytest.raises(ImageInputError, match=r"images\[0\].*10.00MB limit") as caught:
        await image_inputs([big])
    assert caught.value.code == "IMAGE_SIZE_LIMIT_EXCEEDED" and caught.value.status is None


async def test_total_limit() -> None:
    eight_mb = PNG + b"\x00" * (8 * 1024 * 1024)
    with pytest.raises(ImageInputError, match=r"together.*20\.00MB"):
        await image_inputs([eight_mb, eight_mb, eight_mb])


async def test_bad_inputs_are_named() -> None:
    with pytest.raises(ImageInputError, match=r"images\[1\].*not a PNG"):
        await image_inputs([PNG, b"plain text"])
    with pytest.raises(ImageInputError, match="base64"):
        await image_inputs("data:image/png;base64,!!!")
    with pytest.raises(ValueError, match="1 to 10"):
        await image_inputs([PNG] * 11)
    with pytest.raises(TypeError, match=r"images\[0\]"):
        await image_inputs([42])  # type: ignore[list-item]


def test_sniff() -> None:
    assert sniff(PNG) == "image/png"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"GIF89a...") == "image/gif"
    assert sniff(b"hello") is None
