"""The ``asyncsdk`` logger: ``ASYNCSDK_LOG`` and the redaction of credentials.

The SDK logs on the ``asyncsdk`` logger (the emulator on ``asyncsdk.emulator``) and configures
nothing unless asked: ``ASYNCSDK_LOG=debug`` or ``info`` (read by
:func:`asyncsdk._config.env_log_level`) sets that level on the ``asyncsdk`` logger and, as
``OPENAI_LOG`` does for openai-python, gives the root logger a stderr handler with this format
if it has none yet::

    [2026-01-20 04:00:40 - asyncsdk:212 - INFO] retrying submission (attempt 2) after ...

Applied once, when ``asyncsdk`` is imported. Any other value (or none) leaves logging alone.

Credentials never reach a handler: :class:`RedactingFilter`, installed on the ``asyncsdk`` and
``asyncsdk.emulator`` loggers whatever ``ASYNCSDK_LOG`` says, rewrites every record that passes
their level into its formatted message with API-key-shaped tokens (``bye_...``) and bearer
credentials replaced, and scrubs the exception and stack text the same way. A record's message
may carry server text, which may echo what was sent, so the message is scrubbed as a whole
rather than trusting any one argument.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from ._config import env_log_level

__all__ = ["LOG_FORMAT", "RedactingFilter", "redact_credentials", "setup_logging"]

LOG_FORMAT: Final = "[%(asctime)s - %(name)s:%(lineno)d - %(levelname)s] %(message)s"
DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
#: The loggers the SDK and its emulator log on.
LOGGER_NAMES: Final = ("asyncsdk", "asyncsdk.emulator")

_KEY: Final = re.compile(r"bye_[A-Za-z0-9_-]+")
_BEARER: Final = re.compile(r"(?i)\b(bearer\s+)[^\s,;\"'<>]+")
_exceptions = logging.Formatter()


def redact_credentials(text: str) -> str:
    """``text`` with API keys and bearer credentials replaced.

    >>> redact_credentials("Authorization: Bearer abc.def, key=bye_0123abcd")
    'Authorization: Bearer ***, key=bye_***'
    """
    return _BEARER.sub(r"\1***", _KEY.sub("bye_***", text))


class RedactingFilter(logging.Filter):
    """Rewrites each record into its formatted message, without credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it always does
            return True
        record.msg, record.args = redact_credentials(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _exceptions.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_credentials(record.stack_info)
        return True


_FILTER: Final = RedactingFilter()
_applied = False


def setup_logging() -> None:
    """Install the redaction and apply ``ASYNCSDK_LOG``; only the first call does anything."""
    global _applied
    if _applied:
        return
    _applied = True
    for name in LOGGER_NAMES:
        logging.getLogger(name).addFilter(_FILTER)
    level = env_log_level()
    if level is not None:
        logging.basicConfig(format=LOG_FORMAT, datefmt=DATE_FORMAT)
        logging.getLogger("asyncsdk").setLevel(level)
