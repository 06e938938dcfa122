"""Settings and defaults, in one place.

Every default the SDK uses is a named constant here, and the environment is read here and
nowhere else (``BABYSEA_API_KEY``, ``BABYSEA_BASE_URL``, ``ASYNCSDK_LOG``). :class:`Limits`
describes the service's per-account limits; its defaults are the published ones and tests,
demos and benchmarks compress time by passing smaller values.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

import attrs

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_LOG",
    "Limits",
    "env_api_key",
    "env_base_url",
    "env_log_level",
]

DEFAULT_BASE_URL: Final = "https://api.babysea.ai/api/v1"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_RETRIES: Final = 4
DEFAULT_POLL_INTERVAL: Final = 1.0
#: Longest pause between two status polls of one generation, as a multiple of ``poll_interval``.
MAX_POLL_FACTOR: Final = 5.0
#: First and longest wait between two retries of a transient failure, in seconds.
DEFAULT_BACKOFF_BASE: Final = 0.5
DEFAULT_BACKOFF_MAX: Final = 8.0
#: Connections the clients of one origin share (one pool per origin and event loop).
DEFAULT_MAX_CONNECTIONS: Final = 100

ENV_API_KEY: Final = "BABYSEA_API_KEY"
ENV_BASE_URL: Final = "BABYSEA_BASE_URL"
#: ``debug`` or ``info``: the level of the ``asyncsdk`` logger (see :mod:`asyncsdk._logs`).
ENV_LOG: Final = "ASYNCSDK_LOG"

#: Per-image and total size limits of ``image_input`` (decoded bytes).
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
MAX_TOTAL_IMAGE_BYTES: Final = 20 * 1024 * 1024
MAX_IMAGES: Final = 10


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"Limits.{attribute.name} must be > 0, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"Limits.{attribute.name} must be >= 0, got {value!r}")


def _default_margin(limits: Limits) -> float:
    return min(0.5, limits.window * 0.02)


def _default_settle_time(limits: Limits) -> float:
    # List lag is the service's, in real seconds: compressing the window does not shrink it.
    return max(3.0, limits.window / 12)


@attrs.frozen
class Limits:
    """The service's per-account limits, which the SDK's gate enforces on the client side.

    At most ``submissions`` generation submissions in any ``window`` seconds, at most
    ``concurrent`` generations in progress, and ``generation_timeout``: the service cancels
    (and refunds) a generation still running that long after it was created.

    ``margin`` is the safety distance the gate keeps on top of the window and the timeout, for
    clock drift and rounding; by default 2% of the window, at most half a second.

    ``settle_time`` is how long after a submission the service is assumed to list what it
    created: a submission whose answer was lost is taken as having created nothing only once
    the list, read successfully at least that long after the send, does not show it. By
    default a twelfth of the window, at least 3 s (list lag does not compress with time).

    >>> Limits(submissions=10, window=0.5, concurrent=1, generation_timeout=2.0).margin
    0.01
    """

    submissions: int = attrs.field(default=10, validator=_positive)
    window: float = attrs.field(default=60.0, validator=_positive)
    concurrent: int = attrs.field(default=1, validator=_positive)
    generation_timeout: float = attrs.field(default=50.0, validator=_positive)
    margin: float = attrs.field(
        default=attrs.Factory(_default_margin, takes_self=True), validator=_non_negative
    )
    settle_time: float = attrs.field(
        default=attrs.Factory(_default_settle_time, takes_self=True), validator=_non_negative
    )

    def __attrs_post_init__(self) -> None:
        for name in ("submissions", "concurrent"):
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"Limits.{name} must be an integer")


def env_api_key() -> str | None:
    """The API key from ``BABYSEA_API_KEY``, or ``None`` when unset or blank."""
    return os.environ.get(ENV_API_KEY, "").strip() or None


def env_base_url() -> str:
    """``BABYSEA_BASE_URL`` when set, else :data:`DEFAULT_BASE_URL`."""
    return os.environ.get(ENV_BASE_URL, "").strip() or DEFAULT_BASE_URL


def env_log_level() -> int | None:
    """The logging level ``ASYNCSDK_LOG`` asks for (``debug`` or ``info``, any case), or
    ``None`` when it is unset or says anything else."""
    value = os.environ.get(ENV_LOG, "").strip().lower()
    return {"debug": logging.DEBUG, "info": logging.INFO}.get(value)
