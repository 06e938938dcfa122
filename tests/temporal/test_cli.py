"""``asyncsdk temporal batch | follow | cancel`` in a subprocess, against the dev server.

The worker runs in this process (its clients over the emulator's accounts); the command is
the installed ``asyncsdk`` a user runs, killed if it runs past its bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from temporalio.client import Client

from asyncsdk.emulator import Emulator

from .conftest import ENV, TemporalServer
from .test_workflow import LIMITS, SERVICE, running, write_jobs

pytestmark = pytest.mark.anyio

ASYNCSDK = [sys.executable, "-m", "asyncsdk"]
SCALE = "0.02"


@attrs.frozen
class Done:
    code: int
    out: str
    err: str

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def asyncsdk(*args: str, timeout: float = 60) -> Done:
    """Run the command to its end (killed, and the test failed, after ``timeout``)."""

    def blocking() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ASYNCSDK, *args], env=ENV, capture_output=True, text=True, timeout=timeout
        )

    done = await anyio.to_thread.run_sync(blocking)
    return Done(done.returncode, done.stdout, done.stderr)


def temporal_args(server: TemporalServer, task_queue: str) -> list[str]:
    return ["--address", server.address, "--task-queue", task_queue]


async def test_batch_follows_the_workflow_and_a_rerun_pays_nothing(
    temporal_server: TemporalServer, temporal: Client, task_queue: str, tmp_path: Path
) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"id": f"kite-{i}", "prompt": f"a red kite, picture {i}"} for i in range(5)],
    )
    command = [
        "--json", "--time-scale", SCALE, "temporal", "batch", str(jobs),
        *temporal_args(temporal_server, task_queue),
    ]  # fmt: skip
    async with Emulator(accounts=2, **SERVICE) as emu, running(temporal, emu, task_queue):
        done = await asyncsdk(*command)
        assert done.code == 0, done.err
        *outcomes, summary = done.lines()
        assert sorted(o["id"] for o in outcomes) == [f"kite-{i}" for i in range(5)]
        assert all(o["status"] == "succeeded" and o["generation_id"] for o in outcomes)
        assert summary["summary"]["succeeded"] == 5
        assert summary["summary"]["credits"] == 10
        assert summary["summary"]["workflow_id"].startswith("asyncsdk-batch-")
        again = await asyncsdk(*command)
        assert again.code == 2
        assert "has run already" in again.err
        assert "asyncsdk temporal follow" in again.err
    assert sum(emu.stats.created[t] for t in emu.tokens) == 5  # the rerun paid nothing


async def test_detach_then_follow_and_cancel(
    temporal_server: TemporalServer, temporal: Client, task_queue: str, tmp_path: Path
) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"id": f"owl-{i}", "prompt": f"a grey owl, picture {i}"} for i in range(12)],
    )
    where = temporal_args(temporal_server, task_queue)
    # The first generation runs until the service cancels it: the next job is still waiting
    # for the account when the cancellation reaches it.
    slow = {**SERVICE, "generation_timeout": 3.0}
    limits = attrs.evolve(LIMITS, generation_timeout=3.0)
    async with Emulator(accounts=1, **slow) as emu, running(temporal, emu, task_queue, limits):
        emu.faults.stick(1)
        started = await asyncsdk(
            "--time-scale", SCALE, "temporal", "batch", str(jobs), "--detach",
            "--workflow-id", "owls", "--max-in-flight", "2", *where,
        )  # fmt: skip
        assert started.code == 0, started.err
        assert started.out.strip() == "owls"
        with anyio.fail_after(30):
            while not emu.stats.created[emu.tokens[0]]:  # noqa: ASYNC110 (the emulator's count)
                await anyio.sleep(0.01)
        cancelled = await asyncsdk("--json", "temporal", "cancel", "owls", *where)
        assert cancelled.code == 1 and cancelled.lines(), cancelled.err
        summary = cancelled.lines()[-1]["summary"]
        assert summary["cancelled"] >= 1, summary
        # The job sent is reported (its generation ended failed, refunded); none was sent after.
        assert summary["failed"] == emu.stats.created[emu.tokens[0]] == 1, summary
        assert summary["succeeded"] == summary["credits"] == 0
        followed = await asyncsdk("--json", "temporal", "follow", "owls", *where)
        assert followed.code == 1
        assert followed.lines()[-1]["summary"] == summary
