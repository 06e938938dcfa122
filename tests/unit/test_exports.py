"""The public surface: explicit, sorted, complete, and shown as `asyncsdk.Name`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import asyncsdk
import asyncsdk.emulator
import asyncsdk.webhooks


def test_all_is_sorted_and_complete() -> None:
    assert asyncsdk.__all__ == sorted(asyncsdk.__all__)
    # Submodules (emulator, webhooks, cli, ...) are attributes once imported; pytest's assertion
    # rewriting, which also reaches a package that provides a plugin, adds "@py_..." names.
    public = {
        name
        for name, value in vars(asyncsdk).items()
        if name.isidentifier() and not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public <= set(asyncsdk.__all__) | {"annotations"}
    for name in asyncsdk.__all__:
        assert hasattr(asyncsdk, name), name


def test_surface_names_from_the_contract_exist() -> None:
    for name in (
        "AsyncClient", "Limits", "DEFAULT_BASE_URL", "GenerationStatus", "AsyncSDKError",
        "APIError", "AuthenticationError", "BadRequestError", "ContentPolicyError",
        "ImageInputError", "InsufficientCreditsError", "NotFoundError", "RateLimitError",
        "ConcurrencyLimitError", "ServerError", "APIConnectionError", "APITimeoutError",
        "GenerationFailedError", "GenerationTimeoutError",
    ):  # fmt: skip
        assert name in asyncsdk.__all__, name


@pytest.mark.parametrize(
    "module", [asyncsdk, asyncsdk.webhooks, asyncsdk.emulator], ids=lambda m: m.__name__
)
def test_every_public_class_and_function_claims_its_public_module(module: ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)  # the lazy names (RedisGate, ...) included
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == module.__name__, name


def test_redis_names_read_as_asyncsdk_before_anyone_asks_the_package_for_them() -> None:
    # A fresh interpreter: here, earlier tests may already have touched asyncsdk.RedisGateError.
    script = """
import sys, traceback
from asyncsdk import _redis
assert "RedisGateError" not in vars(sys.modules["asyncsdk"])
try:
    raise _redis.RedisGateError("redis://127.0.0.1:6379/0", "connection refused")
except _redis.RedisGateError:
    print(traceback.format_exc().strip().splitlines()[-1])
print(_redis.RedisGate.__module__)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    last_line, gate_module = done.stdout.splitlines()
    assert last_line.startswith("asyncsdk.RedisGateError: the Redis gate at redis://127.0.0.1")
    assert gate_module == "asyncsdk"


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "reference"
    documented = {
        match
        for page in reference.glob("*.md")
        for match in re.findall(r"^::: asyncsdk\.(\w+)\s*$", page.read_text(), re.MULTILINE)
    }
    missing = set(asyncsdk.__all__) - {"__version__"} - documented
    assert not missing, f"add to docs/reference/: {sorted(missing)}"
