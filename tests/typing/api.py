"""The public API as a type checker sees it: mypy reads this file (`make lint`), nobody runs it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from typing_extensions import assert_type

import asyncsdk
from asyncsdk import (
    AccountInfo,
    ApiStatus,
    AsyncClient,
    BatchRunner,
    Generation,
    GenerationPage,
    GenerationStatus,
    Job,
    JobResult,
    Limits,
    Submission,
)


async def client_surface() -> None:
    async with AsyncClient("bye_00", limits=Limits(window=1.0), poll_interval=0.1) as client:
        assert_type(await client.status(), ApiStatus)
        assert_type(await client.account(), AccountInfo)
        assert_type(await client.list_generations(limit=5, offset=0), GenerationPage)
        async for generation in client.iter_generations():
            assert_type(generation, Generation)
        sub = await client.submit(
            "google/nano-banana", "a kite", aspect_ratio="16:9", images=[b"...", Path("a.png")],
            seed=3,
        )  # fmt: skip
        assert_type(sub, Submission)
        async with contextlib.aclosing(client.watch(sub.generation_id)) as events:
            async for event in events:
                assert_type(event.status, GenerationStatus)
                assert_type(event.status.is_terminal, bool)
        done = await client.wait(sub.generation_id, timeout=30)
        assert_type(done.output_images, tuple[str, ...])
        assert_type(await client.download(done, "out"), list[Path])
        assert_type(await client.generate("google/nano-banana", "a kite"), Generation)
        assert_type(client.gate.statistics(), asyncsdk.GateStatistics)
        # generate() spells out submit()'s parameters, priority lanes, reservations, keys.
        assert_type(
            await client.generate(
                "google/nano-banana", "a kite", name="kite", output_number=2,
                aspect_ratio="1:1", output_format="png", priority="batch", timeout=5.0,
            ),
            Generation,
        )  # fmt: skip
        async with client.reserve(priority=asyncsdk.Priority.INTERACTIVE) as reservation:
            assert_type(reservation, asyncsdk.Reservation)
            keyed = await client.submit(
                "google/nano-banana", "a kite", reservation=reservation,
                idempotency_key="order-1", recover_since=0.0,
            )  # fmt: skip
            assert_type(keyed.tag, str | None)
        assert_type(await client.reconcile("sdk-0123456789ab", sent_at=0.0), Submission | None)
        assert_type(client.notify({"type": "generation.completed", "data": {}}), bool)


async def batch_surface(a: AsyncClient, b: AsyncClient) -> None:
    jobs = [Job("google/nano-banana", "a red kite", id="kite-1", aspect_ratio="16:9")]
    runner = BatchRunner([a, b], journal="batch.sqlite", download_to="out")
    async for result in runner.run(jobs):
        assert_type(result, JobResult)
        assert_type(result.generation, Generation | None)
        assert_type(result.error, BaseException | None)
    assert_type(runner.progress(), asyncsdk.BatchProgress)


def errors_surface(error: asyncsdk.APIError) -> None:
    assert_type(error.status, int | None)
    assert_type(error.request_id, str | None)
    if isinstance(error, asyncsdk.RateLimitError):
        assert_type(error.reset_at, float | None)


def unknown_surface(error: asyncsdk.SubmissionUnknownError) -> None:
    assert_type(error.tag, str)
    assert_type(error.sent_at, float)
