"""Webhook deliveries handed to a client wake the watchers of their generation.

The application verifies a delivery (:func:`asyncsdk.webhooks.verify`) and hands it to
``client.notify(event)``. :class:`Wakeups` keeps, per generation, the watchers sleeping
between polls; a delivery sets their events and leaves the delivered record for them to
``take()`` instead of polling, so the end is noticed within the delivery latency. A record
delivered while nobody sleeps is kept briefly (a watcher may be between two polls), in a
bounded memory. While deliveries flow (one seen within :data:`FLOWING_FOR` seconds),
``flowing`` tells the poll schedule to fall back to a slow safety net.

Pure bookkeeping over anyio events: no I/O.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from typing import Any, Final

import anyio

from ._models import Generation
from ._wire import structure

__all__ = ["FLOWING_FOR", "Wakeups"]

#: Seconds after the last delivery during which deliveries count as flowing.
FLOWING_FOR: Final = 300.0
#: Delivered records kept for watchers that were not asleep at the time.
MEMORY: Final = 1024
_EVENTS: Final = frozenset({"generation.completed", "generation.failed"})


class Wakeups:
    """Sleeping watchers by generation id, and the records delivered for them."""

    def __init__(self) -> None:
        self._sleepers: dict[str, list[anyio.Event]] = {}
        self._delivered: collections.OrderedDict[str, Generation] = collections.OrderedDict()
        self._last_delivery = -float("inf")

    @property
    def flowing(self) -> bool:
        """A delivery was handed in recently: polls may be a slow safety net."""
        return time.monotonic() - self._last_delivery < FLOWING_FOR

    def notify(self, event: Mapping[str, Any] | Generation) -> None:
        """Hand in a verified delivery (the event mapping) or a record."""
        if isinstance(event, Generation):
            generation = event
        else:
            if event.get("type") not in _EVENTS:
                raise ValueError(
                    f"not a generation webhook event: {event.get('type')!r} "
                    f"(expected one of {sorted(_EVENTS)})"
                )
            generation = structure(event.get("data"), Generation)
        self._last_delivery = time.monotonic()
        gid = generation.generation_id
        self._delivered[gid] = generation
        self._delivered.move_to_end(gid)
        while len(self._delivered) > MEMORY:
            self._delivered.popitem(last=False)
        for sleeper in self._sleepers.pop(gid, []):
            sleeper.set()

    def take(self, generation_id: str) -> Generation | None:
        """The record delivered for ``generation_id`` since the last take, if any."""
        return self._delivered.pop(generation_id, None)

    async def sleep(self, generation_id: str, seconds: float) -> None:
        """Sleep ``seconds``, or until a delivery for ``generation_id`` comes."""
        if generation_id in self._delivered:
            return
        event = anyio.Event()
        sleepers = self._sleepers.setdefault(generation_id, [])
        sleepers.append(event)
        try:
            with anyio.move_on_after(seconds):
                await event.wait()
        finally:
            if event in sleepers:
                sleepers.remove(event)
            if not sleepers and self._sleepers.get(generation_id) is sleepers:
                del self._sleepers[generation_id]

    def __len__(self) -> int:
        """Generations with sleeping watchers (for tests of the bound)."""
        return len(self._sleepers)
