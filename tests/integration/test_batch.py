"""BatchRunner against the emulator: spread, resilience, the journal, and kill -9."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import asyncsdk
from asyncsdk import BatchRunner, Job
from asyncsdk._journal import Journal
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


# -- refused before anything is paid -------------------------------------------------------------
def posts(emu: Emulator) -> int:
    """Submissions the emulator received (accepted or not)."""
    return sum(len(times) for times in emu.stats.arrivals.values())


def quick(**kwargs: object) -> Emulator:
    settings: dict[str, object] = {"starting_time": 0.01, "processing_time": 0.02, "window": 1.0}
    return Emulator(**{**settings, **kwargs})  # type: ignore[arg-type]


async def test_an_id_used_twice_is_refused_and_never_submitted() -> None:
    jobs = [Job(MODEL, "a kite", id="x1"), Job(MODEL, "a boat", id="x2"),
            Job(MODEL, "a ship", id="x1")]  # fmt: skip
    async with quick(accounts=1) as emu, client_for(emu) as client:
        with pytest.raises(ValueError, match="job id 'x1' is used by two jobs"):
            await run_all(BatchRunner([client]), jobs)
        assert posts(emu) == 0  # a list is refused before anything is paid

        async def lazily() -> AsyncIterator[Job]:
            for job in jobs:
                yield job

        results = await run_all(BatchRunner([client]), lazily())
    assert posts(emu) == 2
    (refused,) = [r for r in results if not r.ok]
    assert refused.job.prompt == "a ship" and isinstance(refused.error, ValueError)
    assert "'x1' was already used" in str(refused.error) and not refused.retryable


async def test_the_journal_refuses_a_job_changed_under_a_known_id(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    async with quick(accounts=1) as emu, client_for(emu) as client:
        (first,) = await run_all(
            BatchRunner([client], journal=journal), [Job(MODEL, "a kite", id="k1")]
        )
        assert first.ok
        changed = [Job(MODEL, "a blue kite", id="k1"), Job(MODEL, "a boat", id="k2")]
        with pytest.raises(ValueError, match=r"job 'k1' differs .* \(prompt\)"):
            await run_all(BatchRunner([client], journal=journal), changed)
        assert posts(emu) == 1  # the old result is not served, nothing new is paid
        same = await run_all(
            BatchRunner([client], journal=journal), [Job(MODEL, "a kite", id="k1")]
        )
    assert same[0].ok and same[0].from_journal
    assert same[0].generation == first.generation


async def test_an_output_directory_that_cannot_be_used_is_refused_first(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file, not a directory")
    async with quick(accounts=1) as emu, client_for(emu) as client:
        for where in (taken, taken / "below"):
            with pytest.raises(OSError, match="taken"):
                await run_all(BatchRunner([client], download_to=where), [Job(MODEL, "a kite")])
        fresh = tmp_path / "new" / "dir"
        (result,) = await run_all(BatchRunner([client], download_to=fresh), [Job(MODEL, "a kite")])
    assert posts(emu) == 1 and result.ok and result.paths[0].parent == fresh


async def test_images_paid_for_but_not_saved_are_saved_by_the_rerun(tmp_path: Path) -> None:
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    jobs = [Job(MODEL, "a kite", id="kite")]
    results: list[asyncsdk.JobResult] = []
    async with quick(accounts=1, processing_time=0.3) as emu, client_for(emu) as client:

        async def first_run() -> None:
            runner = BatchRunner([client], journal=journal, download_to=out)
            results.extend(await run_all(runner, jobs))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_run)
            with anyio.fail_after(5):
                while not emu.stats.created[emu.tokens[0]]:  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            out.rmdir()  # the disk went away while the generation ran
            out.write_text("not a directory any more")
        (failed,) = results
        assert failed.status == "download_failed" and failed.retryable
        assert failed.generation is not None and failed.credits == 2  # paid, and said so
        entry = await Journal(journal).get("kite")
        assert entry is not None and entry.state == "download_failed" and entry.record
        out.unlink()
        (again,) = await run_all(BatchRunner([client], journal=journal, download_to=out), jobs)
    assert again.ok and again.from_journal and again.paths and again.paths[0].exists()
    assert again.generation is not None
    assert again.generation.generation_id == failed.generation.generation_id
    assert sum(emu.stats.created.values()) == 1  # downloaded again, not paid again


# -- accounts: 429s, unreachable services, budgets -------------------------------------------------
async def test_a_job_refused_with_429_goes_to_an_account_that_can_start_it() -> None:
    async with Emulator(
        accounts=2, submissions=2, window=3.0, starting_time=0.01, processing_time=0.02
    ) as emu:
        # Another process fills account a's window: two submissions its gate never saw.
        async with client_for(emu, emu.tokens[0], gate=asyncsdk.LocalGate()) as other:
            for i in range(2):
                await other.generate(MODEL, f"elsewhere {i}")
        a, b = client_for(emu, emu.tokens[0]), client_for(emu, emu.tokens[1])
        started = time.monotonic()
        jobs = [Job(MODEL, f"p{i}", id=f"job{i}") for i in range(2)]
        results = await run_all(BatchRunner([a, b], names=["a", "b"]), jobs)
        elapsed = time.monotonic() - started
        for c in (a, b):
            await c.aclose()
    assert len(results) == 2 and all(r.ok and r.account == "b" for r in results)
    assert emu.stats.throttled[emu.tokens[0]] == {"RATE_LIMIT_ERROR": 1}
    assert emu.stats.created[emu.tokens[1]] == 2
    assert elapsed < 1.5  # not the ~3 s until account a's window has room again


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_batch_whose_accounts_are_all_unreachable_stops_within_seconds() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/v1"
    limits = asyncsdk.Limits(window=1.0, generation_timeout=3.0)
    clients = [
        asyncsdk.AsyncClient(f"bye_{n * 32}", base_url=url, limits=limits, backoff_base=0.01)
        for n in "01"
    ]
    started = time.monotonic()
    with anyio.fail_after(10), pytest.raises(asyncsdk.AsyncSDKError) as caught:
        await run_all(BatchRunner(clients), [Job(MODEL, f"p{i}") for i in range(40)])
    for client in clients:
        await client.aclose()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith("every account was taken out of the batch (all 2: unreachable")
    assert "journal" not in message  # there is none


async def test_the_budget_is_never_exceeded_and_the_rest_stays_pending(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    async with quick(accounts=2) as emu:
        emu.set_credits(emu.tokens[1], 1)
        a, b = client_for(emu, emu.tokens[0]), client_for(emu, emu.tokens[1])
        await a.generate(MODEL, "seen in the history")  # the price: 2 credits
        runner = BatchRunner([a, b], journal=journal, max_credits=5)
        checks = await runner.check_accounts()
        assert [(c.balance, c.can_afford) for c in checks] == [(998, True), (1, False)]
        assert (runner.estimate(MODEL), runner.estimate(MODEL, 3)) == (2, 6)
        jobs = [Job(MODEL, f"p{i}", id=f"job{i}") for i in range(6)]
        results = await run_all(runner, jobs)
        for c in (a, b):
            await c.aclose()
    assert len(results) == 2 and all(r.ok for r in results)
    assert sum(emu.stats.created.values()) == 3 and not emu.stats.arrivals[emu.tokens[1]]
    assert runner.stopped is not None and "only 1 of max_credits=5 are left" in runner.stopped
    progress = runner.progress()
    assert (progress.spent, progress.reserved, progress.stopped) == (4, 0, runner.stopped)
    assert progress.accounts[1].out is not None and "can't afford" in progress.accounts[1].out
    ran = {r.job.id for r in results}
    store = Journal(journal)
    for job in jobs:
        entry = await store.get(job.id)
        assert (entry.state if entry else "pending") == (
            "succeeded" if job.id in ran else "pending"
        )
    await store.aclose()


async def test_a_model_of_unknown_price_runs_alone_until_priced() -> None:
    async with quick(accounts=2) as emu:
        clients = [client_for(emu, t) for t in emu.tokens]
        runner = BatchRunner(clients, max_credits=5)
        assert runner.estimate(MODEL) is None
        results = await run_all(runner, [Job(MODEL, f"p{i}", id=f"job{i}") for i in range(6)])
        for c in clients:
            await c.aclose()
    first, second = sorted(results, key=lambda r: r.submitted_at or 0)
    assert first.submitted_at and second.submitted_at and first.generation
    # The first (price unknown) ran alone: the second was sent after its answer came.
    assert sum(emu.stats.created.values()) == 2 and runner.progress().spent == 4
    assert runner.estimate(MODEL) == 2


# -- deadlines, sources, progress, retries -------------------------------------------------------
async def test_a_job_that_cannot_start_by_its_deadline_expires_unpaid() -> None:
    async with (
        quick(accounts=1, processing_time=0.4, window=5.0) as emu,
        client_for(emu) as client,
    ):
        now = time.time()
        jobs = [
            Job(MODEL, "too late already", id="late", start_by=now - 1),
            Job(MODEL, "first", id="first", start_by=now + 0.25),
            *[Job(MODEL, f"next {i}", id=f"next{i}", start_by=now + 0.25) for i in range(3)],
        ]
        results = await run_all(BatchRunner([client]), jobs)
        names = [g["name"] for g in emu.generations(emu.tokens[0])]
    by_id = {r.job.id: r for r in results}
    assert by_id["first"].ok
    expired = [by_id[i] for i in ("late", "next0", "next1", "next2")]
    assert all(r.status == "expired" and r.retryable for r in expired)
    assert all(isinstance(r.error, asyncsdk.JobExpiredError) for r in expired)
    # Reported at the deadline while the only slot was busy, not when it freed (~0.42 s).
    assert all(r.finished_at < now + 0.37 for r in expired)
    assert sum(emu.stats.created.values()) == 1 and names[0].startswith("first")


async def test_no_retry_of_a_job_goes_out_after_its_deadline() -> None:
    # Every try fails with a 5xx that promises nothing was created, so the protocol retries;
    # the deadline stops the retries (not the exhausted retries, ~2.5 s): never sent late.
    async with quick(accounts=1) as emu, client_for(emu, max_retries=50, backoff_max=0.05) as c:
        emu.faults.fail_submissions(1000)
        started = time.time()
        job = Job(MODEL, "a kite that keeps failing", id="late-retry", start_by=started + 0.4)
        (result,) = await run_all(BatchRunner([c]), [job])
        tries = emu.stats.faults["fail_submissions"]  # each try met the scripted 5xx
    assert result.status == "expired" and isinstance(result.error, asyncsdk.JobExpiredError)
    assert result.finished_at - started < 0.8
    assert 2 <= tries < 50 and sum(emu.stats.created.values()) == 0


async def test_a_sync_source_is_read_off_the_event_loop() -> None:
    on_loop: list[bool] = []

    def source() -> Iterator[Job]:
        for i in range(4):
            on_loop.append(threading.current_thread() is threading.main_thread())
            yield Job(MODEL, f"thread {i}", id=f"thread-{i}")

    async with quick(accounts=1) as emu, client_for(emu) as client:
        results = await run_all(BatchRunner([client]), source())
    assert len(results) == 4 and all(r.ok for r in results)
    assert on_loop and not any(on_loop)


async def test_progress_counts_jobs_served_from_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    jobs = [Job(MODEL, f"p{i}", id=f"job{i}") for i in range(3)]
    async with quick(accounts=1) as emu, client_for(emu) as client:
        await run_all(BatchRunner([client], journal=journal), jobs)
        runner = BatchRunner([client], journal=journal)
        again = await run_all(runner, jobs)
    assert all(r.from_journal for r in again)
    progress = runner.progress()
    assert (progress.done, progress.failed, progress.from_journal) == (3, 0, 3)


async def test_retry_failed_runs_again_only_what_retrying_could_help(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    jobs = [Job(MODEL, "a nude figure", id="nsfw"), Job(MODEL, "unlucky", id="crash"),
            Job(MODEL, "fine", id="fine")]  # fmt: skip
    async with quick(accounts=1) as emu, client_for(emu) as client:
        emu.faults.fail_generations(1, reason="model crashed")
        first = {r.job.id: r for r in await run_all(BatchRunner([client], journal=journal), jobs)}
        assert first["fine"].ok
        assert first["crash"].status == "failed" and first["crash"].retryable
        assert first["nsfw"].status == "failed" and not first["nsfw"].retryable
        sent = posts(emu)
        plain = await run_all(BatchRunner([client], journal=journal), jobs)
        assert posts(emu) == sent and all(r.from_journal for r in plain)
        assert {r.job.id: r.retryable for r in plain if not r.ok} == {"nsfw": False, "crash": True}
        retried = {
            r.job.id: r
            for r in await run_all(BatchRunner([client], journal=journal, retry_failed=True), jobs)
        }
    assert posts(emu) == sent + 1  # only the job whose generation failed
    assert retried["crash"].ok and not retried["crash"].from_journal
    assert retried["nsfw"].from_journal and not retried["nsfw"].ok
    assert retried["fine"].from_journal and retried["fine"].ok


# -- leaving early, and whose journal it is ------------------------------------------------------
@pytest.mark.parametrize("when", ["waiting for a result", "winding down after a break"])
async def test_cancelling_the_consumer_cancels_it_and_the_rerun_pays_once(
    tmp_path: Path, when: str
) -> None:
    journal = tmp_path / "j.sqlite"
    jobs = [Job(MODEL, f"cancel {i}", id=f"cancel-{i}") for i in range(8)]
    async with Emulator(accounts=2, starting_time=0.02, processing_time=0.1, window=1.0) as emu:
        clients = [client_for(emu, t) for t in emu.tokens]
        first: list[asyncsdk.JobResult] = []
        went_on = False

        async def consume() -> None:
            nonlocal went_on
            async with contextlib.aclosing(BatchRunner(clients, journal=journal).run(jobs)) as run:
                async for result in run:
                    first.append(result)
                    if len(first) == 2:
                        # Lands at the consumer's next wait: for the next result, or for the
                        # runner's workers to wind down after the break.
                        asyncio.get_running_loop().call_soon(consumer.cancel)
                        if when == "winding down after a break":
                            break
            went_on = True  # only if the cancellation was swallowed

        consumer = asyncio.ensure_future(consume())
        with anyio.fail_after(10):
            await asyncio.wait({consumer})
        assert consumer.cancelled() and not went_on and len(first) == 2
        second = await run_all(BatchRunner(clients, journal=journal), jobs)
        for c in clients:
            await c.aclose()
        names = collections.Counter(g["name"] for t in emu.tokens for g in emu.generations(t))
    assert len(second) == 8 and all(r.ok for r in second)
    assert {r.job.id for r in first} <= {r.job.id for r in second if r.from_journal}
    assert sum(emu.stats.created.values()) == 8 and sorted(names.values()) == [1] * 8


async def test_a_journal_handed_in_is_never_closed_one_opened_from_a_path_is(
    tmp_path: Path,
) -> None:
    store = Journal(tmp_path / "given.sqlite")
    jobs = [Job(MODEL, f"own {i}", id=f"own-{i}") for i in range(3)]
    async with quick(accounts=1) as emu, client_for(emu) as client:
        assert len(await run_all(BatchRunner([client], journal=store), jobs)) == 3
        assert store.is_open
        with pytest.raises(ValueError, match="differs from the job recorded"):  # refused first
            await run_all(BatchRunner([client], journal=store), [Job(MODEL, "new", id="own-0")])
        assert store.is_open
        more = [Job(MODEL, f"more {i}", id=f"more-{i}") for i in range(3)]
        async with contextlib.aclosing(BatchRunner([client], journal=store).run(more)) as run:
            async for _ in run:
                break  # left early
        assert store.is_open
        entry = await store.get("own-0")
        assert entry is not None and entry.state == "succeeded"
        owned = BatchRunner([client], journal=tmp_path / "owned.sqlite")
        assert len(await run_all(owned, jobs)) == 3
        assert owned._journal is not None and not owned._journal.is_open
    await store.aclose()
    assert not store.is_open
