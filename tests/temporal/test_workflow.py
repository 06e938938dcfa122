"""The batch workflow on the real Temporal dev server, with a worker in this process.

The emulator runs here too, with compressed time; assertions about money come from its own
records (one generation per job, no 429).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError, WorkflowAlreadyStartedError

import asyncsdk
from asyncsdk.emulator import Emulator
from asyncsdk.temporal import (
    BatchOptions,
    BatchProgress,
    BatchWorkflow,
    create_worker,
    follow,
    reserve_any,
    start_batch,
)

from .conftest import TemporalServer

pytestmark = pytest.mark.anyio

MODEL = "google/nano-banana"
SERVICE: dict[str, Any] = {
    "window": 0.5,
    "starting_time": 0.02,
    "processing_time": 0.05,
    "generation_timeout": 1.0,
}
LIMITS = asyncsdk.Limits(window=0.5, generation_timeout=1.0, settle_time=0.2)
OPTIONS = BatchOptions(heartbeat_timeout=2.0, retry_initial=0.1, retry_max=0.5)


@contextlib.asynccontextmanager
async def running(
    temporal: Client, emu: Emulator, task_queue: str, limits: asyncsdk.Limits = LIMITS
) -> AsyncIterator[list[asyncsdk.AsyncClient]]:
    """A worker in this process over every account of ``emu``."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                asyncsdk.AsyncClient(
                    token, base_url=emu.base_url, limits=limits, poll_interval=0.02
                )
            )
            for token in emu.tokens
        ]
        async with create_worker(temporal, clients, task_queue=task_queue):
            yield clients


def one_generation_per_prompt(emu: Emulator, prompts: list[str]) -> dict[str, dict[str, Any]]:
    records = [r for token in emu.tokens for r in emu.generations(token)]
    assert sorted(r["prompt"] for r in records) == sorted(prompts)
    for token in emu.tokens:
        assert sum(emu.stats.throttled[token].values()) == 0, emu.stats.throttled[token]
    return {r["prompt"]: r for r in records}


def write_jobs(path: Path, jobs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


async def test_a_file_in_chunks_continues_as_new_and_writes_results_by_job_id(
    temporal: Client, task_queue: str, tmp_path: Path
) -> None:
    prompts = [f"a red kite, picture {i}" for i in range(14)]
    jobs_file = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"kite-{i}", "prompt": p} for i, p in enumerate(prompts)]
    )
    results_file = tmp_path / "out" / "results.jsonl"
    options = BatchOptions(
        heartbeat_timeout=2.0, chunk_size=3, jobs_per_run=5, results_file=str(results_file)
    )
    seen: list[BatchProgress] = []
    async with Emulator(accounts=2, **SERVICE) as emu, running(temporal, emu, task_queue):
        handle = await start_batch(
            temporal, jobs_file=str(jobs_file), options=options, task_queue=task_queue
        )
        with anyio.fail_after(60):
            result = await follow(handle, seen.append, interval=0.05)
    assert result.progress.total == result.progress.done == 14
    assert result.progress.runs == 3  # 5 + 5 + 4 jobs: the history restarts twice
    assert result.results is None and result.results_file == str(results_file)
    lines = [json.loads(line) for line in results_file.read_text().splitlines()]
    by_id = {line["id"]: line for line in lines}
    assert len(lines) == len(by_id) == 14  # each job once, keyed by its id
    records = one_generation_per_prompt(emu, prompts)
    for i, prompt in enumerate(prompts):
        line = by_id[f"kite-{i}"]
        assert line["status"] == "succeeded"
        assert line["generation_id"] == records[prompt]["generationId"]
        assert line["images"] == records[prompt]["outputImages"]
        assert line["credits"] == 2
    assert result.progress.credits == 28
    assert sum(t.done for t in result.progress.accounts.values()) == 14
    done = [p.done for p in seen]
    assert done == sorted(done)  # progress only moves forward
    assert any(0 < p.done < 14 for p in seen)  # and was seen on the way


async def test_a_list_of_jobs_returns_outcomes_by_job_id_and_runs_once(
    temporal: Client, task_queue: str
) -> None:
    jobs = [asyncsdk.Job(MODEL, f"a blue boat, picture {i}", id=f"boat-{i}") for i in range(6)]
    async with Emulator(accounts=2, **SERVICE) as emu, running(temporal, emu, task_queue):
        handle = await start_batch(temporal, jobs, options=OPTIONS, task_queue=task_queue)
        again = await start_batch(temporal, jobs, options=OPTIONS, task_queue=task_queue)
        assert again.id == handle.id  # the running batch is found, not started twice
        with anyio.fail_after(60):
            result = await handle.result()
        with pytest.raises(WorkflowAlreadyStartedError):  # done: never run (paid) again
            await start_batch(temporal, jobs, options=OPTIONS, task_queue=task_queue)
    assert result.results is not None
    assert sorted(result.results) == [f"boat-{i}" for i in range(6)]
    records = one_generation_per_prompt(emu, [j.prompt for j in jobs])
    for job in jobs:
        outcome = result.results[job.id]
        assert outcome.ok and outcome.attempts == 1
        assert outcome.generation_id == records[job.prompt]["generationId"]
        assert outcome.account in ("account 1", "account 2")


async def test_a_job_past_its_start_by_expires_unpaid(temporal: Client, task_queue: str) -> None:
    jobs = [
        asyncsdk.Job(MODEL, "a late kite", id="late", start_by=time.time() - 1),
        asyncsdk.Job(MODEL, "a kite on time", id="on-time", start_by=time.time() + 60),
    ]
    async with Emulator(accounts=1, **SERVICE) as emu, running(temporal, emu, task_queue):
        handle = await start_batch(temporal, jobs, options=OPTIONS, task_queue=task_queue)
        with anyio.fail_after(30):
            result = await handle.result()
    assert result.results is not None
    late, on_time = result.results["late"], result.results["on-time"]
    assert late.status == "expired" and late.retryable and late.generation_id is None
    assert on_time.ok
    assert result.progress.failed == result.progress.done == 1
    one_generation_per_prompt(emu, ["a kite on time"])  # the late one was never sent


async def test_cancelling_finishes_the_jobs_already_sent_and_starts_no_new_one(
    temporal: Client, task_queue: str
) -> None:
    jobs = [asyncsdk.Job(MODEL, f"a grey owl, picture {i}", id=f"owl-{i}") for i in range(10)]
    # Generations long enough that a job waiting for the account is still waiting when the
    # cancellation reaches it (with its next heartbeat, within a second).
    slow = {**SERVICE, "processing_time": 1.5, "generation_timeout": 4.0}
    limits = asyncsdk.Limits(window=0.5, generation_timeout=4.0, settle_time=0.2)
    options = BatchOptions(heartbeat_timeout=1.0, max_in_flight=3)
    async with Emulator(accounts=1, **slow) as emu, running(temporal, emu, task_queue, limits):
        token = emu.tokens[0]
        handle = await start_batch(temporal, jobs, options=options, task_queue=task_queue)
        with anyio.fail_after(30):
            while emu.stats.created[token] < 2:  # noqa: ASYNC110 (the emulator's count)
                await anyio.sleep(0.01)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError) as failure:
                await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        created_at_the_end = emu.stats.created[token]
        progress = await handle.query(BatchWorkflow.progress)
        results = await handle.query(BatchWorkflow.results)
        await anyio.sleep(0.3)  # nothing is sent after the workflow ended
        assert emu.stats.created[token] == created_at_the_end
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert results is not None and progress.cancelling
    paid = [o for o in results.values() if o.generation_id is not None]
    # Every paid job finished and is reported; the ones waiting for the account were not sent.
    assert len(paid) == created_at_the_end >= 2
    assert all(o.status == "succeeded" for o in paid)
    assert progress.done == len(paid) and progress.cancelled >= 1
    assert all(o.status == "cancelled" for o in results.values() if o.generation_id is None)
    assert len(results) < len(jobs)  # some never started at all
    one_generation_per_prompt(emu, [r["prompt"] for r in emu.generations(token)])


async def test_reserve_any_takes_the_account_that_is_free(temporal_server: TemporalServer) -> None:
    async with Emulator(accounts=2, **SERVICE) as emu, contextlib.AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                asyncsdk.AsyncClient(t, base_url=emu.base_url, limits=LIMITS)
            )
            for t in emu.tokens
        ]
        with anyio.fail_after(10):
            # a's slot is taken: b is the one free.
            async with a.reserve(), reserve_any([a, b]) as (client, reservation):
                assert client is b and reservation.open
                assert a.gate.statistics().waiting == 0  # the wait at a was withdrawn
                # Both busy: waiting is cancellable and leaves no place behind.
                with anyio.move_on_after(0.2) as scope:
                    async with reserve_any([a, b]):
                        pytest.fail("both accounts are busy")
                assert scope.cancelled_caught
                assert a.gate.statistics().waiting == b.gate.statistics().waiting == 0
            # Both free: one is taken, the other given back at once.
            async with reserve_any([a, b]) as (client, _):
                other = b if client is a else a
                assert client.gate.statistics().in_progress == 1
                assert other.gate.statistics().in_progress == 0
            assert a.gate.statistics().in_progress == b.gate.statistics().in_progress == 0
            assert a.gate.statistics().submissions_in_window == 0  # nothing was sent
