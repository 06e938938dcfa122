"""Fixtures for the Redis gate tests: a real ``redis-server`` on a free loopback port.

The server runs without persistence (``--save '' --appendonly no``) and is stopped when the
session ends. Without ``redis-server`` on the PATH the tests skip, saying how to enable them;
under CI (``CI=true``) a missing server is a failure instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("redis", reason="install the redis extra: pip install -e '.[redis]'")

import redis.asyncio as aioredis

from asyncsdk import RedisGate

ROOT = Path(__file__).resolve().parents[2]
HOW_TO_ENABLE = (
    "install redis-server to run the Redis gate tests "
    "(apt-get install -y redis-server, or brew install redis)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes] | None, *, grace: float) -> None:
    """Terminate a server process, and kill it if it is still there after ``grace`` s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace)


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"redis-server is missing under CI=true: {HOW_TO_ENABLE}")
        pytest.skip(HOW_TO_ENABLE)
    return path


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; ``stop()`` and ``start()`` again at will."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(3):  # the free port may be taken between the probe and the bind
            options = {"port": self.port, "bind": "127.0.0.1", "save": "", "appendonly": "no"}
            argv = [self.executable, *(x for k, v in options.items() for x in (f"--{k}", str(v)))]
            self.process = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready(deadline=time.monotonic() + 10):
                return
            self.stop()
            self.port = free_port()
        raise RuntimeError("redis-server did not start")

    def _wait_ready(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.02)  # readiness poll of a starting process, bounded by deadline
        return False

    def stop(self) -> None:
        stop_process(self.process, grace=5)
        self.process = None


def _running_redis() -> Iterator[RedisServer]:
    server = RedisServer(redis_server_path())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The session's Redis; tests isolate themselves by namespace."""
    yield from _running_redis()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone (to stop it mid-run)."""
    yield from _running_redis()


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def gates(
    redis_server: RedisServer, namespace: str
) -> AsyncIterator[Callable[..., RedisGate]]:
    """``make(**options)``: a new RedisGate (one per simulated process), closed at the end."""
    made: list[RedisGate] = []

    def make(**options: object) -> RedisGate:
        options.setdefault("namespace", namespace)
        gate = RedisGate.from_url(redis_server.url, **options)  # type: ignore[arg-type]
        made.append(gate)
        return gate

    try:
        yield make
    finally:
        for gate in made:
            await gate.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def inspect(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at what the gates wrote."""
    async with plain_client(redis_server.url) as client:
        yield client


@contextlib.asynccontextmanager
async def plain_client(url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client on ``url`` (strings decoded), closed on exit."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
