"""The README's "Durable batches across machines" section runs as written
(``tests/test_readme.py`` leaves this section to us).

Its worker command and its Python worker run at once, in the background, against the dev
server, a real Redis and the emulator; its batch command and its Python starter then run to
their end on those two workers. The section's ``export`` line names example addresses: the
test's own come in their place.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import anyio
import pytest

from asyncsdk.emulator import Emulator

from ..redis.conftest import RedisServer
from .conftest import ROOT, TemporalServer, read_until

pytestmark = pytest.mark.anyio
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def section_blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.find("\n## Durable batches across machines")
    if start == -1:
        return []
    end = text.find("\n## ", start + 1)
    return BLOCK.findall(text[start : end if end != -1 else None])


def test_the_section_has_its_examples() -> None:
    kinds = [language for language, _ in section_blocks()]
    assert kinds == ["bash", "bash", "python", "python"], kinds


async def test_the_section_runs(
    temporal_server: TemporalServer, redis: RedisServer, tmp_path: Path
) -> None:
    (worker_shell, batch_shell, worker_py, starter_py) = (c for _, c in section_blocks())
    export, worker_command = [line for line in worker_shell.splitlines() if line.strip()]
    assert export.startswith("export ")
    names = [assignment.split("=")[0] for assignment in shlex.split(export)[1:]]
    assert names == ["TEMPORAL_ADDRESS", "REDIS_URL"]
    async with Emulator(accounts=2, starting_time=0.05, processing_time=0.15) as emu:
        (tmp_path / "keys.txt").write_text("\n".join(emu.tokens) + "\n")
        jobs = [{"id": f"boat-{i}", "prompt": f"a paper boat, take {i}"} for i in range(4)]
        (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BABYSEA_", "ASYNCSDK_"))},
            "TEMPORAL_ADDRESS": temporal_server.address,
            "REDIS_URL": redis.url,
            "BABYSEA_BASE_URL": emu.base_url,
            "BABYSEA_API_KEY": ",".join(emu.tokens),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
        }
        with anyio.fail_after(120):
            async with (
                await anyio.open_process(shlex.split(worker_command), env=env, cwd=tmp_path) as one,
                await anyio.open_process(
                    [sys.executable, "-c", worker_py], env=env, cwd=tmp_path
                ) as two,
            ):
                try:
                    await read_until(one, b"worker ready")
                    await read_until(two, b"worker ready")
                    batch = await anyio.run_process(
                        ["bash", "-ec", batch_shell], env=env, cwd=tmp_path, check=False
                    )
                    assert batch.returncode == 0, batch.stderr.decode()[-3000:]
                    started = await anyio.run_process(
                        [sys.executable, "-c", starter_py], env=env, cwd=tmp_path, check=False
                    )
                    assert started.returncode == 0, started.stderr.decode()[-3000:]
                finally:
                    for process in (one, two):
                        if process.returncode is None:
                            process.send_signal(signal.SIGINT)  # Ctrl-C: both stop cleanly
                    with anyio.move_on_after(20):
                        await one.wait()
                        await two.wait()
                    for process in (one, two):
                        if process.returncode is None:
                            process.kill()
        assert one.returncode == 0
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == [j["id"] for j in jobs]
    assert all(line["status"] == "succeeded" for line in lines)
    out = started.stdout.decode()
    assert "6/6 done" in out
    for i in range(6):
        assert re.search(rf"^kite-{i} succeeded account \d ", out, re.M), out
    records = [r for token in emu.tokens for r in emu.generations(token)]
    assert len(records) == 10  # one per job of both batches
    assert sum(sum(emu.stats.throttled[t].values()) for t in emu.tokens) == 0
