"""Webhook deliveries handed to a client wake the watchers of their generation.

The service POSTs ``generation.completed`` / ``generation.failed`` to the application's
endpoint when a generation ends. The application verifies the delivery
(:func:`asyncsdk.webhooks.verify`) and hands the event to ``client.notify(event)``::

    webhook ──► verify() ──► client.notify(event) ──► Wakeups.notify(event)
                                                        └─► every sleep(id, ...) on that
                                                            generation returns at once
    watch() ──► take(id) or read ──► Wakeups.sleep(id, next poll delay) ──► take(id) or read

A watcher sleeps between polls in :meth:`Wakeups.sleep`, which ends when the delay has passed
or as soon as a delivery for its generation comes (returning the delivered record); the
watcher then :meth:`~Wakeups.take`\\ s the record instead of reading it, so the end is noticed
after the delivery latency, without another read. While deliveries keep coming
(:attr:`Wakeups.flowing`: one within ``flowing_for`` seconds) the watcher's polls are only a
safety net for a lost delivery (``PollSchedule.next_delay(now, webhooks=True)``).

Memory stays bounded whatever is delivered: an entry exists only while someone sleeps on a
generation (removed when the sleep ends, however it ends, cancellation included), plus the
last ``memory`` delivered records, so that a watcher whose read raced with the delivery (it
read ``processing``, the delivery came, then it went to sleep) still finds it.

Only ended records wake anyone: a record still running, or a well-formed event of another
type, is ignored (``notify`` returns ``False``). The registry trusts what it is given:
verify deliveries before handing them over. Pure bookkeeping over one-shot flags and an
injectable clock: no I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._limits import SYSTEM_CLOCK, Clock, Flag
from ._models import Generation
from ._wire import structure
from .webhooks import GENERATION_COMPLETED, GENERATION_FAILED, WebhookEvent

__all__ = ["FLOWING_FOR", "MEMORY", "WakeupStatistics", "Wakeups"]

#: Seconds after the last delivery during which deliveries count as flowing.
FLOWING_FOR: Final = 300.0
#: Delivered records kept for watchers that were not asleep at the time.
MEMORY: Final = 1024
_EVENTS: Final = frozenset({GENERATION_COMPLETED, GENERATION_FAILED})


@attrs.frozen
class WakeupStatistics:
    """A snapshot of a :class:`Wakeups` registry.

    :ivar sleeping: sleeps in progress.
    :ivar generations: generations someone sleeps on.
    :ivar remembered: delivered records kept, not taken yet.
    :ivar delivered: ended records handed to :meth:`Wakeups.notify` so far.
    :ivar woken: sleeps ended early by a delivery so far.
    :ivar flowing: whether deliveries are flowing (:attr:`Wakeups.flowing`).
    """

    sleeping: int
    generations: int
    remembered: int
    delivered: int
    woken: int
    flowing: bool


class _Sleepers:
    """Everyone sleeping on one generation: one event, set with the delivered record."""

    __slots__ = ("count", "event", "record")

    def __init__(self) -> None:
        self.event = Flag()
        self.record: Generation | None = None
        self.count = 0


class Wakeups:
    """Sleeping watchers by generation id, and the records delivered for them.

    >>> wakeups = Wakeups()
    >>> async def watcher() -> None:
    ...     record = await wakeups.sleep("g1", 5.0)  # the record, if delivered within 5 s
    >>> # on a verified delivery, elsewhere: wakeups.notify(event)

    :param memory: how many delivered records to keep (>= 1).
    :param flowing_for: seconds after the last delivery during which :attr:`flowing` holds.
    :param clock: the clock to sleep on (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        memory: int = MEMORY,
        flowing_for: float = FLOWING_FOR,
        clock: Clock | None = None,
    ) -> None:
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory!r}")
        if not flowing_for >= 0:
            raise ValueError(f"flowing_for must be >= 0, got {flowing_for!r}")
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._memory = memory
        self._flowing_for = flowing_for
        self._sleepers: dict[str, _Sleepers] = {}
        #: Made by the first delivery: most clients never see one.
        self._delivered: collections.OrderedDict[str, Generation] | None = None
        self._last_delivery: float | None = None
        self._deliveries = 0
        self._woken = 0

    @property
    def flowing(self) -> bool:
        """Deliveries are flowing (one came within ``flowing_for`` seconds): polls may be a
        slow safety net."""
        last = self._last_delivery
        return last is not None and self._clock.now() - last <= self._flowing_for

    def notify(self, event: WebhookEvent | Mapping[str, Any] | Generation) -> bool:
        """Hand in a verified delivery: the :class:`~asyncsdk.webhooks.WebhookEvent`
        :func:`~asyncsdk.webhooks.verify` returns, the event as parsed JSON, or a record.

        Wakes every sleeper on the generation with the record, and keeps it for
        :meth:`take`. Returns ``False`` (and does nothing) for a record that has not ended or
        an event of another type.

        :raises ValueError: a mapping that is not a webhook event.
        :raises TypeError: anything else.
        """
        generation = self._record(event)
        if generation is None or not generation.status.is_terminal:
            return False
        key = generation.generation_id
        self._deliveries += 1
        self._last_delivery = self._clock.now()
        delivered = self._delivered
        if delivered is None:
            delivered = self._delivered = collections.OrderedDict()
        delivered[key] = generation
        delivered.move_to_end(key)
        while len(delivered) > self._memory:
            delivered.popitem(last=False)
        sleepers = self._sleepers.pop(key, None)
        if sleepers is not None:
            sleepers.record = generation
            sleepers.event.set()
        return True

    @staticmethod
    def _record(event: WebhookEvent | Mapping[str, Any] | Generation) -> Generation | None:
        if isinstance(event, Generation):
            return event
        if isinstance(event, WebhookEvent):
            return event.generation if event.type in _EVENTS else None
        if isinstance(event, Mapping):
            if not isinstance(event.get("type"), str) or not isinstance(event.get("data"), dict):
                raise ValueError(
                    "not a webhook event: expected a mapping with 'type' and 'data' "
                    "(pass the event that asyncsdk.webhooks.verify() returns)"
                )
            return structure(event["data"], Generation) if event["type"] in _EVENTS else None
        raise TypeError(
            f"expected a WebhookEvent, an event mapping or a Generation, got {type(event).__name__}"
        )

    def take(self, generation_id: str) -> Generation | None:
        """The record delivered for ``generation_id`` and not taken yet, if any."""
        return self._delivered.pop(generation_id, None) if self._delivered else None

    async def sleep(self, generation_id: str, seconds: float) -> Generation | None:
        """Sleep ``seconds``, or until a delivery for ``generation_id`` comes.

        Returns at once when a record was delivered and not taken yet. The record returned
        stays for :meth:`take`; ``None`` when the time passed without a delivery.
        """
        found = self._delivered.get(generation_id) if self._delivered else None
        if found is not None:
            return found
        sleepers = self._sleepers.get(generation_id)
        if sleepers is None:
            sleepers = self._sleepers[generation_id] = _Sleepers()
        sleepers.count += 1
        try:
            await self._clock.wait(sleepers.event, max(seconds, 0.0))
        finally:
            sleepers.count -= 1
            if sleepers.count == 0 and self._sleepers.get(generation_id) is sleepers:
                del self._sleepers[generation_id]
        if sleepers.record is not None:
            self._woken += 1
        return sleepers.record

    def __len__(self) -> int:
        """Generations someone sleeps on."""
        return len(self._sleepers)

    def statistics(self) -> WakeupStatistics:
        """A snapshot of the registry."""
        return WakeupStatistics(
            sleeping=sum(s.count for s in self._sleepers.values()),
            generations=len(self._sleepers),
            remembered=len(self._delivered or ()),
            delivered=self._deliveries,
            woken=self._woken,
            flowing=self.flowing,
        )
