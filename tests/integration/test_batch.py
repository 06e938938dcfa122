"""BatchRunner against the emulator: spread, resilience, the journal, and kill -9."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import asyncsdk
from asyncsdk import BatchRunner, Job
from asyncsdk.emulator import Emulator

from .test_client import MODEL, client_for

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


def served_429s(emu: Emulator) -> int:
    return sum(sum(c.values()) for c in emu.stats.throttled.values())


async def run_all(runner: BatchRunner, jobs: object) -> list[asyncsdk.JobResult]:
    results = []
    async with contextlib.aclosing(runner.run(jobs)) as stream:  # type: ignore[arg-type]
        async for result in stream:
            results.append(result)
    return results


async def timed_batch(emu: Emulator, tokens: list[str], jobs: int) -> float:
    clients = [client_for(emu, t) for t in tokens]
    try:
        started = time.monotonic()
        results = await run_all(
            BatchRunner(clients), [Job(MODEL, f"prompt {i}", id=f"j{i}") for i in range(jobs)]
        )
        elapsed = time.monotonic() - started
    finally:
        for c in clients:
            await c.aclose()
    assert len(results) == jobs and all(r.ok for r in results)
    return elapsed


async def test_60_jobs_over_5_accounts_without_a_429_and_near_5x() -> None:
    async with Emulator(
        accounts=6, window=0.5, starting_time=0.02, processing_time=0.1, generation_timeout=3.0
    ) as emu:
        one = await timed_batch(emu, emu.tokens[:1], 12)
        five = await timed_batch(emu, emu.tokens[1:], 60)
        assert served_429s(emu) == 0
        for token in emu.tokens[1:]:
            assert emu.stats.created[token] >= 8  # every account did a fair share
            assert emu.stats.max_in_progress[token] == 1
    speedup = (60 / five) / (12 / one)
    assert speedup >= 4.0, f"5 accounts ran {speedup:.2f}x one account's throughput"


async def test_job_failures_are_reported_and_the_batch_goes_on(tmp_path: Path) -> None:
    async with Emulator(accounts=2, starting_time=0.01, processing_time=0.03, window=1.0) as emu:
        emu.faults.fail_generations(1, reason="model crashed")
        jobs = [
            Job(MODEL, "a nude figure", id="nsfw"),
            Job(MODEL, "bad ratio", id="invalid", aspect_ratio="7:3"),
            Job(MODEL, "missing image", id="no-file", images=str(tmp_path / "none.png")),
            *[Job(MODEL, f"fine {i}", id=f"ok{i}") for i in range(6)],
        ]
        clients = [client_for(emu, t) for t in emu.tokens]
        results = await run_all(
            BatchRunner(clients, download_to=tmp_path / "out", journal=tmp_path / "j.sqlite"),
            jobs,
        )
        for c in clients:
            await c.aclose()
    by_id = {r.job.id: r for r in results}
    assert isinstance(by_id["nsfw"].error, asyncsdk.ContentPolicyError)
    assert isinstance(by_id["invalid"].error, asyncsdk.BadRequestError)
    assert isinstance(by_id["no-file"].error, FileNotFoundError)
    failed = [r for r in results if isinstance(r.error, asyncsdk.GenerationFailedError)]
    assert len(failed) == 1 and failed[0].error.generation.failure_reason == "model crashed"  # type: ignore[union-attr]
    good = [r for r in results if r.ok]
    assert len(good) == 5
    for r in good:
        assert r.paths and r.paths[0].name == f"{r.job.id}-1.png" and r.paths[0].exists()
        assert r.account in ("account 1", "account 2") and r.elapsed > 0


async def test_an_account_that_stops_working_hands_its_jobs_to_the_others() -> None:
    async with Emulator(accounts=3, starting_time=0.01, processing_time=0.05, window=1.0) as emu:
        clients = [client_for(emu, t) for t in emu.tokens]
        runner = BatchRunner(clients, names=["a", "b", "c"])
        jobs = [Job(MODEL, f"prompt {i}", id=f"j{i}") for i in range(30)]
        results: list[asyncsdk.JobResult] = []
        async with contextlib.aclosing(runner.run(jobs)) as stream:
            async for result in stream:
                results.append(result)
                if len(results) == 6:
                    # Revoke "b" while it is between two jobs (no generation of its running).
                    while runner.progress().accounts[1].state != "waiting":  # noqa: ASYNC110
                        await anyio.sleep(0.001)
                    emu.revoke(emu.tokens[1])
        for c in clients:
            await c.aclose()
    assert len(results) == 30 and all(r.ok for r in results), [r.error for r in results]
    assert len({r.job.id for r in results}) == 30
    progress = runner.progress()
    assert progress.accounts[1].out == "AUTHENTICATION_FAILED"
    assert progress.accounts[1].state == "out"
    assert served_429s(emu) == 0
    assert sum(emu.stats.created.values()) == 30


async def test_out_of_credits_and_every_account_gone() -> None:
    async with Emulator(accounts=2, starting_time=0.01, processing_time=0.02, window=1.0) as emu:
        emu.set_credits(emu.tokens[0], 4)  # two generations, then out
        emu.revoke(emu.tokens[1])
        clients = [client_for(emu, t) for t in emu.tokens]
        results: list[asyncsdk.JobResult] = []
        runner = BatchRunner(clients)
        with pytest.raises(asyncsdk.AsyncSDKError, match="every account was taken out"):
            async for result in runner.run(Job(MODEL, f"p{i}", id=f"j{i}") for i in range(5)):
                results.append(result)
        for c in clients:
            await c.aclose()
    assert sum(r.ok for r in results) == 2
    account_errors = (asyncsdk.InsufficientCreditsError, asyncsdk.AuthenticationError)
    not_run = [r for r in results if not r.ok]
    assert not_run and all(isinstance(r.error, account_errors) for r in not_run)
    outs = {a.out for a in runner.progress().accounts}
    assert outs == {"INSUFFICIENT_CREDITS", "AUTHENTICATION_FAILED"}


async def test_jobs_are_read_lazily_from_an_async_iterable() -> None:
    pulled = 0

    async def source() -> AsyncIterator[Job]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield Job(MODEL, f"lazy {i}", id=f"lazy{i}")

    async with Emulator(accounts=2, starting_time=0.01, processing_time=0.02, window=1.0) as emu:
        clients = [client_for(emu, t) for t in emu.tokens]
        seen = 0
        async with contextlib.aclosing(BatchRunner(clients).run(source())) as stream:
            async for _ in stream:
                seen += 1
                if seen == 4:
                    break
        for c in clients:
            await c.aclose()
    assert pulled <= 8  # a million-item source was not read ahead


async def test_break_then_rerun_with_the_journal_pays_once(tmp_path: Path) -> None:
    journal = tmp_path / "batch.sqlite"
    jobs = [Job(MODEL, f"journal {i}", id=f"journal-{i}") for i in range(10)]
    async with Emulator(accounts=2, starting_time=0.02, processing_time=0.1, window=1.0) as emu:
        clients = [client_for(emu, t) for t in emu.tokens]
        first: list[asyncsdk.JobResult] = []
        async with contextlib.aclosing(BatchRunner(clients, journal=journal).run(jobs)) as run:
            async for result in run:
                first.append(result)
                if len(first) == 3:
                    break
        created_before = sum(emu.stats.created.values())
        assert created_before >= 3
        second = await run_all(BatchRunner(clients, journal=journal), jobs)
        third = await run_all(BatchRunner(clients, journal=journal), jobs)
        for c in clients:
            await c.aclose()
        names = collections.Counter(g["name"] for t in emu.tokens for g in emu.generations(t))
    assert len(second) == 10 and all(r.ok for r in second)
    assert {r.job.id for r in second if r.from_journal} >= {r.job.id for r in first}
    assert len(third) == 10 and all(r.ok and r.from_journal for r in third)
    assert sum(emu.stats.created.values()) == 10
    # One generation per job, each under its own tag.
    assert len(names) == len(jobs) and set(names.values()) == {1}


@pytest.fixture
def child_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    yield env


async def _run_child(
    emu: Emulator, journal: Path, env: dict[str, str], *args: str, kill_after: int = 0
) -> tuple[int, list[dict[str, object]]]:
    """Run the batch in a subprocess; SIGKILL it after `kill_after` results if given."""
    command = [sys.executable, "-m", "tests.integration.batch_child", emu.base_url,
               str(journal), "12", *args]  # fmt: skip
    process = await anyio.open_process(command, env=env, cwd=ROOT)
    assert process.stdin is not None and process.stdout is not None
    await process.stdin.send("\n".join(emu.tokens[:2]).encode())
    await process.stdin.aclose()
    lines: list[dict[str, object]] = []
    buffer = b""
    with anyio.fail_after(60):
        async for chunk in process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines += [json.loads(line) for line in complete if line]
            if kill_after and len(lines) >= kill_after:
                process.send_signal(signal.SIGKILL)
                break
        code = await process.wait()
    await process.aclose()
    return code, lines


async def test_kill_9_at_any_moment_then_rerun_pays_once(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    journal = tmp_path / "killed.sqlite"
    async with Emulator(accounts=2, starting_time=0.02, processing_time=0.08, window=1.0) as emu:
        # 1: dies between the service accepting its 3rd submission and the journal noting it.
        code, lines = await _run_child(emu, journal, child_env, "--die-at-submitted", "3")
        assert code == -signal.SIGKILL
        # Its 3rd answer was never recorded; the other account's submission may be in flight.
        assert 3 <= sum(emu.stats.created.values()) <= 4
        # 2: killed from outside at an arbitrary moment, mid-batch.
        code, lines = await _run_child(emu, journal, child_env, kill_after=4)
        assert code == -signal.SIGKILL
        # 3: runs to the end.
        code, lines = await _run_child(emu, journal, child_env)
        assert code == 0
        names = collections.Counter(g["name"] for t in emu.tokens for g in emu.generations(t))
    assert len(lines) == 12 and all(line["ok"] for line in lines)
    assert sum(emu.stats.created.values()) == 12
    assert sorted(names.values()) == [1] * 12  # exactly one generation per job


async def test_the_run_ends_with_its_last_job_not_with_the_next_window() -> None:
    async with (
        Emulator(submissions=2, window=3.0, starting_time=0.01, processing_time=0.02) as emu,
        client_for(emu) as client,
    ):
        stream = BatchRunner([client]).run([Job(MODEL, f"p{i}", id=f"j{i}") for i in range(2)])
        results, last = [], 0.0
        async with contextlib.aclosing(stream):
            async for result in stream:
                results.append(result)
                last = time.monotonic()
        ended = time.monotonic() - last
    assert len(results) == 2 and all(r.ok for r in results)
    assert ended < 1.0  # the window is full for another ~3 s: nobody waited for it
