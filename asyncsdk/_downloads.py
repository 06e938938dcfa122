"""Saving a generation's output images: every image concurrently, each file atomically.

Files are named ``<prefix>-<n>.<ext>`` (the prefix defaults to the generation id; nothing is
ever taken from the URL, and the extension comes from the answer's content type) and written
to a temporary ``.part`` file renamed into place, so a reader never sees half an image. Each
image is retried by the one retry policy; the first failure cancels the others, whose partial
files are removed (shielded), and is raised as itself. A download is bounded by idle time,
not total time (see :mod:`asyncsdk._transport`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import anyio

from ._errors import APIError, redact
from ._models import Generation
from ._transport import Transport

__all__ = ["Downloader"]

_CONTENT_TYPES: Final = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

Fetch = Callable[[str, Path, str], Awaitable[Path]]


class Downloader:
    """Downloads for one client; ``wrap`` adds the retry policy to one image's fetch."""

    def __init__(self, transport: Transport, wrap: Callable[[Fetch], Fetch]) -> None:
        self._transport = transport
        self._fetch = wrap(self._download_once)

    async def download(
        self, generation: Generation, directory: str | os.PathLike[str], prefix: str | None
    ) -> list[Path]:
        target = Path(directory)
        await anyio.Path(target).mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", prefix or generation.generation_id).lstrip(".")
        paths: list[Path | None] = [None] * len(generation.output_images)
        failures: list[Exception] = []

        async def fetch(index: int, url: str) -> None:
            try:
                paths[index] = await self._fetch(url, target, f"{stem}-{index + 1}")
            except Exception as exc:  # the first failure stops the others (temp files go too)
                failures.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for index, url in enumerate(generation.output_images):
                tg.start_soon(fetch, index, url)
        if failures:
            raise failures[0]  # the SDK's own error, not an ExceptionGroup
        return [path for path in paths if path is not None]

    async def _download_once(self, url: str, directory: Path, stem: str) -> Path:
        if urlsplit(url).scheme not in ("http", "https"):
            raise APIError(f"refusing to download an output image from {redact(url)!r}")
        part = directory / f".{stem}.{secrets.token_hex(4)}.part"
        try:
            async with self._transport.stream(url) as (content_type, chunks):
                kind = (content_type or "").split(";")[0].strip().lower()
                path = directory / f"{stem}.{_CONTENT_TYPES.get(kind, 'png')}"
                async with await anyio.open_file(part, "wb") as file:
                    async for chunk in chunks:
                        await file.write(chunk)
            await anyio.Path(part).replace(path)
            return path
        finally:  # shielded: a cancelled download must still remove its partial file
            with anyio.CancelScope(shield=True), contextlib.suppress(FileNotFoundError):
                await anyio.Path(part).unlink()
