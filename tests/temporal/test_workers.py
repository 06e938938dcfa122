"""Worker processes on the real Temporal dev server, sharing three accounts through Redis,
killed with SIGKILL mid-run: every job is paid exactly once, no 429, no account left idle.

Each worker is a separate ``asyncsdk temporal worker`` process. The emulator runs in the
test process with time compressed (a 3 s window of 10 submissions, generations of about
0.2 s); its own records are the evidence. To kill a worker "right after a submission left
it, before the answer was recorded", one POST is held in flight for ``DELAY`` seconds and the
test kills the process whose socket sent it: held after its generation was created (the
retry must adopt that generation), or before it was handled (``Faults.delay``; the
emulator then fails to read the dead client's body and creates nothing: the retry must
settle that and send once).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from temporalio.client import Client

import asyncsdk
from asyncsdk.emulator import Emulator
from asyncsdk.temporal import BatchOptions, BatchResult, start_batch

from ..redis.conftest import RedisServer
from .conftest import TemporalServer, Workers, worker_args, worker_processes

pytestmark = pytest.mark.anyio

SCALE = 1 / 20
WINDOW = 60 * SCALE
MODEL = "google/nano-banana"
#: How long the emulator holds the POST whose sender is killed.
DELAY = 0.5
OPTIONS = BatchOptions(heartbeat_timeout=1.0, retry_initial=0.1, retry_max=0.5)
WORKER_OPTIONS: dict[str, Any] = {"lease_ttl": 1.0, "settle_time": 0.3}


@attrs.define
class HeldPost:
    """The POST whose answer is held: who sent it, what it asked, when it was answered."""

    port: int
    arrived: float
    prompt: str | None = None
    created: bool = False
    answered: float | None = None


class Posts:
    """An outer middleware of the emulator that holds one submission in flight.

    ``hold_answer()``: the next POST is handled (its generation is created and charged) and
    its answer held for ``DELAY`` seconds: its sender, killed meanwhile, never learns of it.
    ``hold_request()``: the emulator's own ``Faults.delay`` holds the next POST before it is
    handled. Either way the sender's socket is noted as the request arrives, in the same step
    of the loop as the emulator takes the fault, so the noted request is the held one.
    """

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.armed: str | None = None
        self.held: HeldPost | None = None
        emu.app.middlewares.insert(0, self.middleware)

    def hold_answer(self) -> None:
        self.armed = "answer"

    def hold_request(self) -> None:
        self.armed = "request"
        self.emu.faults.delay(DELAY, count=1, method="POST")

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        mode, self.armed = (self.armed, None) if request.method == "POST" else (None, self.armed)
        if mode is None:
            return await handler(request)
        assert request.transport is not None
        held = self.held = HeldPost(request.transport.get_extra_info("peername")[1], time.time())
        try:
            response = await handler(request)
            held.prompt = (await request.json())["prompt"]
            held.created = response.status == 200
            if mode == "answer":
                await asyncio.sleep(DELAY)  # the answer is in flight
            return response
        finally:
            held.answered = time.time()


def pid_of_socket(port: int, pids: list[int]) -> int:
    """The process (of ``pids``) owning the TCP socket whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker owns the socket on port {port}")


async def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (other processes: no event to wait for)
            await anyio.sleep(0.005)


def created(emu: Emulator) -> int:
    return sum(emu.stats.created[t] for t in emu.tokens)


def busy_intervals(emu: Emulator) -> dict[str, list[tuple[float, float]]]:
    """Each account's generations as (created, ended) in Unix seconds, in order."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for token in emu.tokens:
        spans[token] = sorted(
            (start, start + (r["totalTime"] or 0.0))
            for r in emu.generations(token)
            for start in [
                datetime.fromisoformat(r["createdAt"]).replace(tzinfo=timezone.utc).timestamp()
            ]
        )
    return spans


def assert_paid_once_and_never_throttled(
    emu: Emulator, result: BatchResult, jobs: list[asyncsdk.Job]
) -> None:
    assert result.results is not None
    assert result.progress.done == len(jobs), result.progress
    records = [r for token in emu.tokens for r in emu.generations(token)]
    by_prompt = {r["prompt"]: r for r in records}
    assert len(records) == len(by_prompt) == len(jobs)  # exactly one generation per job
    for job in jobs:
        outcome = result.results[job.id]
        assert outcome.ok, outcome
        assert outcome.generation_id == by_prompt[job.prompt]["generationId"]
    for token in emu.tokens:
        assert sum(emu.stats.throttled[token].values()) == 0, emu.stats.throttled[token]
        assert emu.stats.max_in_progress[token] <= 1


def assert_no_account_idle(emu: Emulator, *, since: float | None = None) -> None:
    """While jobs were waiting (until the last submission), no account was idle for more
    than a window (from ``since`` on, when given)."""
    spans = busy_intervals(emu)
    starts = [s for intervals in spans.values() for s, _ in intervals]
    first, last = (since if since is not None else min(starts)), max(starts)
    for token, intervals in spans.items():
        free_from = first
        for start, end in intervals:
            if end < first:
                continue
            if start > last:
                break
            assert start - free_from <= WINDOW, (token[:12], free_from, start, intervals)
            free_from = max(free_from, end)
        assert last - free_from <= WINDOW, (token[:12], free_from, last)


@pytest.fixture
def keys_file(tmp_path: Path) -> Iterator[Callable[[Emulator], Path]]:
    def write(emu: Emulator) -> Path:
        path = tmp_path / "keys.txt"
        path.write_text("\n".join(emu.tokens) + "\n")
        return path

    yield write


def make_workers(
    server: TemporalServer, redis: RedisServer, emu: Emulator, keys: Path, queue: str, logs: Path
) -> Any:
    args = worker_args(
        server,
        redis.url,
        base_url=emu.base_url,
        keys_file=keys,
        task_queue=queue,
        namespace=queue,
        time_scale=SCALE,
        **WORKER_OPTIONS,
    )
    return worker_processes(args, logs)


async def run_killing(
    server: TemporalServer,
    temporal: Client,
    redis: RedisServer,
    task_queue: str,
    tmp_path: Path,
    keys_file: Callable[[Emulator], Path],
    kill: Callable[[Workers, list[Any], HeldPost], Awaitable[float]],
    prompt: str,
    *,
    hold: str,
) -> tuple[Emulator, BatchResult, list[asyncsdk.Job], HeldPost, float]:
    """Run 30 jobs on 3 workers; ``kill`` strikes while a POST is held; the result."""
    jobs = [asyncsdk.Job(MODEL, f"{prompt}, picture {i}", id=f"job-{i}") for i in range(30)]
    emu = Emulator(accounts=3, time_scale=SCALE)
    posts = Posts(emu)
    async with (
        emu,
        make_workers(server, redis, emu, keys_file(emu), task_queue, tmp_path) as workers,
    ):
        try:
            processes = await workers.start(3)
            handle = await start_batch(
                temporal, jobs, options=OPTIONS, task_queue=task_queue, task_timeout=1.0
            )
            with anyio.fail_after(120):
                await until(lambda: created(emu) >= 6)
                if hold == "answer":  # kill once the generation exists, before its answer
                    posts.hold_answer()
                    await until(lambda: posts.held is not None and posts.held.created)
                else:  # kill while the request waits to be handled
                    posts.hold_request()
                    await until(lambda: posts.held is not None)
                assert posts.held is not None
                held = posts.held
                resumed = await kill(workers, processes, held)
                result = await handle.result()
        except BaseException:
            print(workers.log_tail())
            raise
    return emu, result, jobs, held, resumed


async def test_a_worker_killed_right_after_sending_costs_nothing_twice(
    temporal_server: TemporalServer,
    temporal: Client,
    redis: RedisServer,
    task_queue: str,
    tmp_path: Path,
    keys_file: Callable[[Emulator], Path],
) -> None:
    async def kill_the_sender(workers: Workers, processes: list[Any], held: HeldPost) -> float:
        victim = pid_of_socket(held.port, [p.pid for p in processes])
        workers.kill(next(p for p in processes if p.pid == victim))
        assert held.answered is None  # killed before its answer came back
        return time.time()

    emu, result, jobs, held, _ = await run_killing(
        temporal_server, temporal, redis, task_queue, tmp_path, keys_file, kill_the_sender,
        "a heron in the reeds", hold="answer",
    )  # fmt: skip
    assert_paid_once_and_never_throttled(emu, result, jobs)
    # The job whose request was in flight was retried on another worker, which adopted the
    # generation the dead one paid for.
    assert result.results is not None and held.created
    retried = next(result.results[j.id] for j in jobs if j.prompt == held.prompt)
    assert retried.attempts >= 2  # and its generation is the one the dead worker paid for
    assert result.progress.retries >= 1
    assert_no_account_idle(emu)


async def test_every_worker_killed_then_new_ones_finish_the_same_workflow(
    temporal_server: TemporalServer,
    temporal: Client,
    redis: RedisServer,
    task_queue: str,
    tmp_path: Path,
    keys_file: Callable[[Emulator], Path],
) -> None:
    async def kill_everyone(workers: Workers, processes: list[Any], held: HeldPost) -> float:
        for process in processes:
            workers.kill(process)
        assert held.answered is None
        await workers.start(3)
        return time.time()

    emu, result, jobs, _, resumed = await run_killing(
        temporal_server, temporal, redis, task_queue, tmp_path, keys_file, kill_everyone,
        "a fox in the snow", hold="request",
    )  # fmt: skip
    assert_paid_once_and_never_throttled(emu, result, jobs)
    assert result.progress.retries >= 1
    assert_no_account_idle(emu, since=resumed)
