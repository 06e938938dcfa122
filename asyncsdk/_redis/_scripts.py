"""The gate's Lua scripts (the ``*.lua`` files of this package) and their replies.

Each script is ``prelude.lua`` followed by the script's own file, read once when this module
is imported and registered once per Redis client (redis-py sends ``EVALSHA``, and the source
only when Redis does not know it yet). Every script answers one JSON object (``cjson``): its
``status``, the fields of its verb, and the account's snapshot, parsed here into a small frozen
class per reply shape.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._limits import Holder

__all__ = ["SCRIPTS", "AcquireReply", "ReleaseReply", "RenewReply", "Reply", "Snapshot", "parse"]

_NAMES: Final = (
    "acquire",
    "leave",
    "settle",
    "drop",
    "release",
    "hold_foreign",
    "renew",
    "resolve",
    "stats",
)


def _load() -> dict[str, str]:
    files = importlib.resources.files(__package__ or "asyncsdk._redis")
    prelude = files.joinpath("prelude.lua").read_text(encoding="utf-8")
    return {
        name: prelude + "\n" + files.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        for name in _NAMES
    }


#: Script name -> its full source (the prelude and the script).
SCRIPTS: Final[Mapping[str, str]] = _load()


def _holder(raw: Mapping[str, Any]) -> Holder:
    sent = raw.get("sent_ms")
    return Holder(
        str(raw["key"]),
        str(raw["generation_id"]) or None,
        orphan=bool(raw.get("orphan")),
        tag=str(raw.get("tag") or "") or None,
        since=int(sent) / 1000 if sent not in (None, "") else None,
        watched=bool(raw.get("watched")),
    )


def _strings(value: Any) -> tuple[str, ...]:
    # cjson encodes an empty Lua table as an empty object.
    return tuple(str(x) for x in value) if isinstance(value, list) else ()


@attrs.frozen
class Snapshot:
    """The account as one script left it."""

    in_window: int = 0
    in_progress: int = 0
    queued: int = 0
    #: The waiter admitted next ("" when nobody waits).
    head: str = ""
    holders: tuple[Holder, ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Snapshot:
        holders = data.get("holders")
        return cls(
            int(data["in_window"]),
            int(data["in_progress"]),
            int(data["queued"]),
            str(data.get("head") or ""),
            tuple(_holder(h) for h in holders) if isinstance(holders, list) else (),
        )


@attrs.frozen
class Reply:
    """A script's status and the snapshot every script answers with."""

    status: str
    snapshot: Snapshot

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Reply:
        return cls(str(data["status"]), Snapshot.of(data))


@attrs.frozen
class AcquireReply(Reply):
    """``acquire``: ``ticket`` is the waiter's place to pass back; ``wait_ms`` how long the
    wait may last before something changes (``None``: unknown); ``limits`` the other
    processes' limits on a ``conflict``."""

    ticket: str = ""
    wait_ms: int | None = None
    limits: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> AcquireReply:
        wait = data.get("wait_ms")
        return cls(
            str(data["status"]),
            Snapshot.of(data),
            ticket=str(data.get("ticket") or ""),
            wait_ms=int(wait) if wait is not None and wait >= 0 else None,
            limits=data.get("limits"),
        )


@attrs.frozen
class ReleaseReply(Reply):
    """``release``: how many holds it freed."""

    freed: int = 0

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ReleaseReply:
        return cls(str(data["status"]), Snapshot.of(data), freed=int(data.get("freed", 0)))


@attrs.frozen
class RenewReply(Reply):
    """``renew``: the leases that are gone (expired or taken over): not renewed."""

    lost: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> RenewReply:
        return cls(str(data["status"]), Snapshot.of(data), lost=_strings(data.get("lost")))


_SHAPES: Final[Mapping[str, type[Reply]]] = {
    "acquire": AcquireReply,
    "release": ReleaseReply,
    "renew": RenewReply,
}


def parse(script: str, raw: bytes | str) -> Reply:
    """The reply of ``script`` from its JSON text."""
    return _SHAPES.get(script, Reply).of(json.loads(raw))
