"""The public surface: explicit, sorted, complete, and shown as `asyncsdk.Name`."""

from __future__ import annotations

import re
from pathlib import Path

import asyncsdk


def test_all_is_sorted_and_complete() -> None:
    assert asyncsdk.__all__ == sorted(asyncsdk.__all__)
    public = {name for name in vars(asyncsdk) if not name.startswith("_")}
    modules = {"emulator", "webhooks", "cli", "demo"}
    assert public - modules <= set(asyncsdk.__all__) | {"annotations"}
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


def test_exported_classes_claim_the_public_module() -> None:
    for name in asyncsdk.__all__:
        obj = getattr(asyncsdk, name)
        if isinstance(obj, type):
            assert obj.__module__ == "asyncsdk", name


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "reference"
    documented = {
        match
        for page in reference.glob("*.md")
        for match in re.findall(r"^::: asyncsdk\.(\w+)\s*$", page.read_text(), re.MULTILINE)
    }
    missing = set(asyncsdk.__all__) - {"__version__"} - documented
    assert not missing, f"add to docs/reference/: {sorted(missing)}"
