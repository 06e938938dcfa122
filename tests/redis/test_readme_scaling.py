"""The README's "Scaling out" section runs as written: two processes at once, sharing the
emulator's accounts through Redis (``tests/test_readme.py`` leaves this section to us)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
import pytest

from asyncsdk.emulator import Emulator

from .conftest import ROOT, RedisServer

pytestmark = pytest.mark.anyio
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)


def section_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    start = text.find("\n## Scaling out")
    if start == -1:
        return []
    end = text.find("\n## ", start + 1)
    return BLOCK.findall(text[start : end if end != -1 else None])


def test_the_readme_has_a_scaling_out_example() -> None:
    assert section_blocks(), "README.md lost its 'Scaling out' python example"


@pytest.mark.parametrize("code", section_blocks())
async def test_the_scaling_out_example_runs_in_two_processes(
    code: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    async with Emulator(accounts=2, starting_time=0.05, processing_time=0.15) as emu:
        env = dict(
            os.environ,
            BABYSEA_BASE_URL=emu.base_url,
            BABYSEA_API_KEY=",".join(emu.tokens),
            REDIS_URL=redis_server.url,
            PYTHONPATH=str(ROOT),
        )
        outputs: list[str] = []

        async def one(index: int) -> None:
            workdir = tmp_path / str(index)
            workdir.mkdir()
            done = await anyio.run_process(
                [sys.executable, "-c", code], env=env, cwd=workdir, check=False
            )
            assert done.returncode == 0, done.stderr.decode()[-3000:]
            assert "Traceback" not in done.stderr.decode()
            outputs.append(done.stdout.decode())

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for index in range(2):
                    tg.start_soon(one, index)
        assert all(output.strip() for output in outputs), "the example printed nothing"
        for token in emu.tokens:
            assert sum(emu.stats.throttled[token].values()) == 0
            assert emu.stats.max_in_progress[token] <= 1
