"""ASYNCSDK_LOG and the redaction of credentials from the asyncsdk loggers' records."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

import asyncsdk  # noqa: F401  (installs the filter)
from asyncsdk._config import ENV_LOG, env_log_level
from asyncsdk._logs import LOGGER_NAMES, RedactingFilter, redact_credentials

KEY = "bye_0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        (" DEBUG ", logging.DEBUG),
        ("Info", logging.INFO),
        ("warning", None),
        ("", None),
        (None, None),
    ],
)
def test_env_log_level(
    monkeypatch: pytest.MonkeyPatch, value: str | None, level: int | None
) -> None:
    if value is None:
        monkeypatch.delenv(ENV_LOG, raising=False)
    else:
        monkeypatch.setenv(ENV_LOG, value)
    assert env_log_level() == level


def test_redact_credentials() -> None:
    text = f"Authorization: Bearer {KEY}; X-API-Key: {KEY}; bearer abc.def-ghi"
    assert redact_credentials(text) == ("Authorization: Bearer ***; X-API-Key: bye_***; bearer ***")
    assert redact_credentials("nothing to hide: bye bye_ bearer") == (
        "nothing to hide: bye bye_ bearer"
    )


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The ``asyncsdk`` logger at DEBUG with a handler writing to a buffer."""
    logger = logging.getLogger("asyncsdk")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_every_asyncsdk_logger_redacts_without_any_setting() -> None:
    for name in LOGGER_NAMES:
        assert any(isinstance(f, RedactingFilter) for f in logging.getLogger(name).filters)


def test_keys_in_the_message_the_args_and_the_traceback_are_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.debug("sending with key %s and headers %r", KEY, {"Authorization": f"Bearer {KEY}"})
    logger.info("mapping args: %(key)s", {"key": KEY})
    logger.warning(f"in the message itself: {KEY}")
    try:
        raise RuntimeError(f"the server echoed Authorization: Bearer {KEY}")
    except RuntimeError:
        logger.exception("a request failed")
    logger.debug("with a stack", stack_info=True, extra={"unused": KEY})
    output = stream.getvalue()
    assert KEY not in output and KEY[4:] not in output
    assert "sending with key bye_*** and headers {'Authorization': 'Bearer ***'}" in output
    assert "mapping args: bye_***" in output
    assert "RuntimeError: the server echoed Authorization: Bearer ***" in output
    assert "Stack (most recent call last)" in output


def test_a_record_below_the_level_costs_no_formatting() -> None:
    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted although the level is off")

    logger = logging.getLogger("asyncsdk")
    assert not logger.isEnabledFor(logging.DEBUG)
    logger.debug("%s", Exploding())


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if k != ENV_LOG}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


LOG_SOME = f"""
import logging
import asyncsdk
import asyncsdk._logs
asyncsdk._logs.setup_logging()  # a second call changes nothing
log = logging.getLogger("asyncsdk")
log.debug("debug line %s", "{KEY}")
log.info("info line %s", "{KEY}")
print(len(logging.getLogger().handlers), logging.getLevelName(log.level))
"""


def test_asyncsdk_log_debug_prints_debug_records_in_the_openai_format() -> None:
    done = run_python(LOG_SOME, ASYNCSDK_LOG="debug")
    assert done.stdout.split() == ["1", "DEBUG"]
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("[") and " - asyncsdk:7 - DEBUG] debug line bye_***" in lines[0]
    assert lines[1].endswith(" - INFO] info line bye_***")
    assert KEY not in done.stderr


def test_asyncsdk_log_info_hides_debug_records() -> None:
    done = run_python(LOG_SOME, ASYNCSDK_LOG="info")
    assert done.stdout.split() == ["1", "INFO"]
    assert [line.split("] ")[1] for line in done.stderr.splitlines()] == ["info line bye_***"]


def test_without_asyncsdk_log_logging_is_left_alone() -> None:
    done = run_python(LOG_SOME)
    assert done.stdout.split() == ["0", "NOTSET"]
    assert done.stderr == ""
