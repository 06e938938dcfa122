"""The plugin under each async test plugin: ``example_suite.py`` run by a child pytest.

Each child loads only the plugins named (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` and ``-p``), with
warnings as errors, in a directory of its own; the suite asserts that the other async plugin is
not loaded, so each run proves that one plugin suffices. A last run keeps autoloading on, as a
user's suite with both installed would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
EXAMPLE = HERE / "example_suite.py"
TESTS_IN_EXAMPLE = len(re.findall(r"^(?:async )?def test_", EXAMPLE.read_text(), re.M))
CHILD_TIMEOUT = 120
ANYIO = ["-p", "anyio.pytest_plugin"]
ASYNCIO = ["-p", "pytest_asyncio.plugin"]
INI = "[pytest]\nfilterwarnings = error\n"
ASYNCIO_INI = INI + "asyncio_default_fixture_loop_scope = function\n"

pytestmark = pytest.mark.slow


def run_child(
    tmp_path: Path, args: list[str], ini: str, env: dict[str, str], *, autoload: bool = False
) -> subprocess.CompletedProcess[str]:
    shutil.copy(EXAMPLE, tmp_path / "test_example.py")
    (tmp_path / "pytest.ini").write_text(ini)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    child_env.update(env)
    if not autoload:
        child_env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(  # killed when it outlives its bound
        [*command, "test_example.py"],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def assert_all_passed(done: subprocess.CompletedProcess[str]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(rf"\b{TESTS_IN_EXAMPLE} passed\b", output), output[-4000:]
    assert "warning" not in output.lower(), output[-4000:]


@pytest.mark.parametrize(
    ("mode", "plugin", "ini", "extra"),
    [
        pytest.param("anyio", ANYIO, INI, [], id="anyio"),
        pytest.param("asyncio", ASYNCIO, ASYNCIO_INI, [], id="pytest-asyncio-strict"),
        pytest.param("asyncio-module", ASYNCIO, ASYNCIO_INI, [], id="pytest-asyncio-module-loop"),
        pytest.param(
            "auto", ASYNCIO, ASYNCIO_INI, ["--asyncio-mode=auto"], id="pytest-asyncio-auto"
        ),
    ],
)
def test_the_example_suite_passes_under_one_plugin(
    tmp_path: Path, mode: str, plugin: list[str], ini: str, extra: list[str]
) -> None:
    done = run_child(
        tmp_path,
        # pytest-asyncio before ours, as plugin loading would order them; ours must not mind.
        [*plugin, "-p", "asyncsdk.testing", *extra],
        ini,
        {"EXAMPLE_MODE": mode, "EXAMPLE_ALONE": "1"},
    )
    assert_all_passed(done)


def test_the_example_suite_passes_with_every_plugin_autoloaded(tmp_path: Path) -> None:
    done = run_child(tmp_path, [], ASYNCIO_INI, {"EXAMPLE_MODE": "anyio"}, autoload=True)
    assert_all_passed(done)


def test_naming_the_plugin_again_is_harmless(tmp_path: Path) -> None:
    """``-p asyncsdk.testing`` on top of the entry point: the name is the module's."""
    done = run_child(
        tmp_path, ["-p", "asyncsdk.testing"], ASYNCIO_INI, {"EXAMPLE_MODE": "anyio"}, autoload=True
    )
    assert_all_passed(done)


def test_loading_the_plugin_imports_no_emulator(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_light.py").write_text(
        "import sys\n\n"
        "def test_light():\n"
        "    assert 'asyncsdk.testing' in sys.modules\n"
        "    assert 'asyncsdk.emulator' not in sys.modules\n"
        "    assert 'aiohttp.web' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asyncsdk.testing"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
