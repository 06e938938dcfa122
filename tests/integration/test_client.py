"""AsyncClient against the embedded emulator over real sockets: every endpoint and shape."""

from __future__ import annotations

import contextlib
import logging
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

import asyncsdk
from asyncsdk import AsyncClient, GenerationStatus, Limits
from asyncsdk.emulator import Emulator

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"
FAST = {"starting_time": 0.02, "processing_time": 0.05, "window": 2.0, "generation_timeout": 3.0}


def limits_of(emu: Emulator) -> Limits:
    s = emu.settings
    return Limits(
        submissions=s.submissions,
        window=s.scaled(s.window),
        concurrent=s.concurrent,
        generation_timeout=s.scaled(s.generation_timeout),
    )


def client_for(emu: Emulator, token: str | None = None, **kwargs: Any) -> AsyncClient:
    kwargs.setdefault("limits", limits_of(emu))
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("backoff_base", 0.01)
    return AsyncClient(token or emu.tokens[0], base_url=emu.base_url, **kwargs)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(accounts=2, **FAST) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncClient]:
    async with client_for(emu) as c:
        yield c


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    return width, height


async def test_status_and_account(client: AsyncClient, emu: Emulator) -> None:
    status = await client.status()
    assert status.account_id and status.message and status.request_id
    assert status.timestamp is not None and status.timestamp.tzinfo is not None
    info = await client.account()
    assert info.credits.total == 1000 and info.account.id == status.account_id
    assert info.api_key.prefix and emu.tokens[0] != info.api_key.prefix


async def test_text_to_image_end_to_end(client: AsyncClient, tmp_path: Path) -> None:
    generation = await client.generate(MODEL, "a red kite at dawn", output_number=2)
    assert generation.status is GenerationStatus.SUCCEEDED
    assert len(generation.output_images) == 2 and generation.credit_cost == 4
    assert generation.created_at is not None and generation.created_at.tzinfo is not None
    again = await client.get_generation(generation.generation_id)
    assert again == generation
    paths = await client.download(generation, tmp_path / "out")
    assert [p.name for p in paths] == [
        f"{generation.generation_id}-1.png",
        f"{generation.generation_id}-2.png",
    ]
    for path in paths:
        assert png_size(path.read_bytes())[0] > 0
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    # The same prompt draws the same picture; another prompt another one.
    same = await client.generate(MODEL, "a red kite at dawn")
    other = await client.generate(MODEL, "a blue boat at dusk")
    (p_same,) = await client.download(same, tmp_path / "b")
    (p_other,) = await client.download(other.generation_id, tmp_path / "c")
    assert p_same.read_bytes() == paths[0].read_bytes()
    assert p_other.read_bytes() != paths[0].read_bytes()


async def test_image_to_image_single_and_multi(client: AsyncClient, tmp_path: Path) -> None:
    first = await client.generate(MODEL, "a source picture")
    url = first.output_images[0]
    (local,) = await client.download(first, tmp_path)
    single = await client.generate(MODEL, "make it blue", images=url)
    assert len(single.image_input) == 1
    multi = await client.generate(
        MODEL,
        "combine them",
        images=[url, local, local.read_bytes()],
        aspect_ratio="match_input_image",
    )
    assert len(multi.image_input) == 3
    assert all(not path.startswith(("http", "data:")) for path in multi.image_input)


async def test_lists_newest_first_and_iteration(client: AsyncClient) -> None:
    made = [(await client.generate(MODEL, f"picture {i}")).generation_id for i in range(5)]
    page = await client.list_generations(limit=2, offset=1)
    assert page.total == 5 and page.limit == 2 and page.offset == 1
    assert [g.generation_id for g in page.generations] == made[::-1][1:3]
    seen = [g.generation_id async for g in client.iter_generations(page_size=2)]
    assert seen == made[::-1]


async def test_extras_pass_through_and_the_tag_is_set(client: AsyncClient) -> None:
    sub = await client.submit(MODEL, "a kite", seed=42, output_format="webp")
    assert sub.status is GenerationStatus.STARTING and sub.credit_cost == 2 and sub.request_id
    generation = await client.wait(sub.generation_id)
    assert generation.name is not None and generation.name.startswith("sdk-")
    named = await client.generate(MODEL, "a kite", name="my kite")
    # The caller's name stays the prefix; the tag keeps every submission unique (issue 10).
    assert named.name is not None and named.name.startswith("my kite~")
    assert len(named.name) == len("my kite~") + 12


async def test_watch_yields_each_transition_once_in_order(emu: Emulator) -> None:
    async with Emulator(starting_time=0.15, processing_time=0.3) as slow, client_for(slow) as c:
        sub = await c.submit(MODEL, "a slow one")
        statuses = [g.status async for g in c.watch(sub.generation_id)]
    assert statuses == [
        GenerationStatus.STARTING,
        GenerationStatus.PROCESSING,
        GenerationStatus.SUCCEEDED,
    ]


async def test_generate_first_reads_when_the_plan_says_it_may_have_ended() -> None:
    """generate() (or submit() then wait()) of a model whose durations are known does not
    read the generation it has just created (a read then could only say "starting"): the first
    read is the plan's, at the learnt end. A model met for the first time is read at once, and
    ``watch()`` always is."""
    route = ("GET", "/api/v1/image-generation/{generationId}")
    timings = {"starting_time": 0.05, "processing_time": 0.25, "generation_timeout": 3.0}
    emulator = Emulator(accounts=1, window=2.0, **timings)
    async with emulator as emu, client_for(emu, poll_interval=0.1) as client:
        await client.generate(MODEL, "the first of its model")
        first = emu.stats.requests[route]
        for i in range(3):
            await client.generate(MODEL, f"learning {i}")
        before = emu.stats.requests[route]
        for i in range(5):
            done = await client.generate(MODEL, f"learnt {i}")
            assert done.status is GenerationStatus.SUCCEEDED
        learnt = emu.stats.requests[route] - before
        before = emu.stats.requests[route]
        for i in range(3):  # submit() then wait(): the same
            submitted = await client.submit(MODEL, f"submitted {i}")
            await client.wait(submitted.generation_id)
        waited = emu.stats.requests[route] - before
        submission = await client.submit(MODEL, "watched")
        events = client.watch(submission.generation_id)
        async with contextlib.aclosing(events):
            seen = [g.status async for g in events]
    assert first >= 2  # at once ("starting"), then until the end
    assert learnt <= 6  # one read each at the learnt end (one spare for a slow loop)
    assert waited <= 4
    assert seen[0] is GenerationStatus.STARTING


async def test_wait_raises_on_failure_and_timeout(emu: Emulator, client: AsyncClient) -> None:
    emu.faults.fail_generations(1, reason="the model crashed")
    with pytest.raises(asyncsdk.GenerationFailedError) as failed:
        await client.generate(MODEL, "doomed")
    assert failed.value.generation.failure_reason == "the model crashed"
    assert failed.value.generation.status is GenerationStatus.FAILED
    emu.faults.stick(1)
    sub = await client.submit(MODEL, "stuck")
    with pytest.raises(asyncsdk.GenerationTimeoutError) as timed_out:
        await client.wait(sub.generation_id, timeout=0.2)
    assert timed_out.value.generation_id == sub.generation_id
    assert timed_out.value.last_status in (GenerationStatus.STARTING, GenerationStatus.PROCESSING)


async def test_the_key_never_reaches_a_log_line(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.faults.fail_reads(1)
    async with client_for(emu) as c:
        await c.generate(MODEL, "logged")
        with pytest.raises(asyncsdk.NotFoundError) as caught:
            await c.get_generation("not-a-uuid")
    assert any("asyncsdk" in r.name for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records) + str(caught.value) + repr(c)
    assert emu.tokens[0] not in text


async def test_a_failed_download_raises_the_sdk_error_and_leaves_no_files(
    client: AsyncClient, tmp_path: Path
) -> None:
    generation = await client.generate(MODEL, "two pictures", output_number=2)
    broken = attrs.evolve(
        generation, output_images=(generation.output_images[0], generation.output_images[0] + "x")
    )
    with pytest.raises(asyncsdk.APIError) as caught:
        await client.download(broken, tmp_path)
    assert caught.value.status == 404
    assert [p async for p in anyio.Path(tmp_path).glob(".*.part")] == []
