"""The web example's documentation runs as written.

Covers ``examples/web/README.md`` and, once it exists, the "Web apps" section of the top
``README.md``: every ``python`` block is executed; every ``bash`` block that calls ``curl`` is
run against the app served on a free port (``127.0.0.1:8000`` in the text becomes that
port); and ``python -m examples.web``, the command the ``make web`` target runs, is started as
a process, asked for its page, and stopped with Ctrl+C (SIGINT).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from . import WAIT, need, wait_for
from .conftest import LiveApp, free_socket

need("fastapi", "the web example's framework")
need("uvicorn", "the web example's server")
httpx = need("httpx", "the HTTP test client")

ROOT = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"^[ \t]*```(\w+)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)


def web_section(path: Path) -> str | None:
    """The part of ``path`` about the web example: all of the example's README, or the
    top README's section whose heading names web apps."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if path.parent.name == "web":
        return text
    match = re.search(r"^(#{1,4}) Web apps?\b.*$", text, re.M | re.I)
    if match is None:
        return None
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.start() : end.start() if end else len(text)]


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / "examples" / "web" / "README.md", ROOT / "README.md"):
        section = web_section(path)
        if section is None:
            continue
        for number, match in enumerate(BLOCK.finditer(section), 1):
            if match.group(1) == language:
                code = match.group(2)
                indent = min(
                    (len(line) - len(line.lstrip()) for line in code.splitlines() if line.strip()),
                    default=0,
                )
                dedented = "\n".join(line[indent:] for line in code.splitlines())
                found.append((f"{path.relative_to(ROOT)}#{number}", dedented))
    return found


PYTHON = blocks("python")
CURL = [(where, code) for where, code in blocks("bash") if "curl " in code]


def test_the_example_readme_has_runnable_blocks() -> None:
    assert PYTHON and CURL


@pytest.mark.parametrize(("where", "code"), PYTHON, ids=[w for w, _ in PYTHON])
def test_python_blocks_run(where: str, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, where, "exec"), {"__name__": "readme"})
    for line in code.splitlines():
        # `print(...)  # expected output` lines must print what they say.
        if line.startswith("print(") and "  # " in line:
            assert line.split("  # ", 1)[1].strip() in capsys.readouterr().out


@pytest.mark.parametrize(("where", "code"), CURL, ids=[w for w, _ in CURL])
def test_curl_blocks_run_against_the_app(
    where: str, code: str, live: Callable[..., LiveApp]
) -> None:
    if not any(Path(d, "curl").is_file() for d in os.get_exec_path()):
        pytest.fail("curl is needed to run the README's shell examples")
    app = live()
    script = code.replace("http://127.0.0.1:8000", app.url)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    assert "event: done" in done.stdout and '"status":"succeeded"' in done.stdout


def test_python_m_examples_web_serves_and_stops_on_ctrl_c() -> None:
    with free_socket() as sock:
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BABYSEA_")}
    env.update(WEB_PORT=str(port), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.web"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the app exited early:\n{process.communicate()[0]}")
            try:
                status: int = httpx.get(f"http://127.0.0.1:{port}/info", timeout=1).status_code
            except httpx.TransportError:
                return False
            return status == 200

        wait_for(answers, "python -m examples.web to answer", timeout=WAIT * 2)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=WAIT)
        assert page.status_code == 200 and 'id="prompt"' in page.text
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "embedded BabySea emulator" in output  # the log says which backend it uses
    assert f"http://127.0.0.1:{port}" in output
    assert "Traceback" not in output
