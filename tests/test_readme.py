"""Every example in README.md runs as written, against the embedded emulator.

Each ``python`` block runs as a script in its own process with ``BABYSEA_BASE_URL`` and
``BABYSEA_API_KEY`` pointing at a fresh emulator; each ``bash`` block made only of
``asyncsdk`` / ``printf`` commands runs in a shell the same way; a ``python`` block that is a
test file (it defines ``test_`` functions) runs under ``pytest`` in its own directory, with the
plugins installed (``asyncsdk.testing`` among them) and warnings as errors. The "Scaling out",
"Web apps" and "Durable batches across machines" sections are run by their own tests
(tests/redis, tests/examples/web, tests/temporal).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anyio
import pytest

from asyncsdk.emulator import Emulator

pytestmark = pytest.mark.anyio
README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
ELSEWHERE = re.compile(r"^## (Scaling out|Web apps|Durable batches across machines)", re.M)
TEST_FILE = re.compile(r"^(?:async )?def test_", re.M)
PYTEST_INI = "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"


def blocks() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    # Cut out the sections other tests run.
    for match in reversed(list(ELSEWHERE.finditer(text))):
        end = text.find("\n## ", match.end())
        text = text[: match.start()] + (text[end:] if end != -1 else "")
    found = []
    for number, match in enumerate(BLOCK.finditer(text)):
        language, code = match.groups()
        runnable = language == "python" or (
            language == "bash"
            and all(
                line.startswith(("asyncsdk ", "printf ", " "))
                for line in code.splitlines()
                if line.strip()
            )
        )
        if runnable:
            found.append((f"{language}-{number}", language, code))
    return found


def test_the_readme_has_examples() -> None:
    kinds = [language for _, language, _ in blocks()]
    assert kinds.count("python") >= 6 and "bash" in kinds


@pytest.mark.parametrize(
    ("language", "code"), [b[1:] for b in blocks()], ids=[b[0] for b in blocks()]
)
async def test_example_runs(language: str, code: str, tmp_path: Path) -> None:
    async with Emulator(accounts=2, starting_time=0.05, processing_time=0.15) as emu:
        many = 'split(",")' in code
        env = dict(
            os.environ,
            BABYSEA_BASE_URL=emu.base_url,
            BABYSEA_API_KEY=",".join(emu.tokens) if many else emu.tokens[0],
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        command = [sys.executable, "-c", code] if language == "python" else ["bash", "-ec", code]
        if language == "python" and TEST_FILE.search(code):
            (tmp_path / "test_readme_example.py").write_text(code)
            (tmp_path / "pytest.ini").write_text(PYTEST_INI)
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        with anyio.fail_after(120):
            done = await anyio.run_process(command, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
    if "pytest" in command:
        tests = len(TEST_FILE.findall(code))
        assert re.search(rf"\b{tests} passed\b", done.stdout.decode()), done.stdout.decode()
    assert done.stdout.strip(), "the example printed nothing"
    assert "Traceback" not in done.stderr.decode()
