"""Following a generation: ``watch()`` yields each status change, ``wait()`` its end.

A paid generation is never given up on because reads fail for a while: a poll that fails
transiently (5xx streaks, timeouts, unreadable answers, even after the read's own retries)
is retried quietly with capped backoff. Watching is bounded by the service's own deadline:
a generation still not ended ``generation_timeout`` after its creation (plus the margin and
one poll interval) has been cancelled by the service, so a watch that has not seen it end by
then — reads down all along, or a status the SDK does not know (``canceled``) — ends with
:class:`~asyncsdk.GenerationTimeoutError` carrying the last status seen. A caller's own
``timeout`` (or ``anyio.fail_after``) ends it sooner.

Polls follow :class:`~asyncsdk._polling.PollSchedule`, learnt per model by the reader's
:class:`~asyncsdk._polling.DurationModel`. When the application hands webhook deliveries to
the client, :mod:`asyncsdk._wakeups` wakes the watcher at once and polling becomes a safety
net. A generation the client has just created (``generate()``, ``BatchRunner``; see
:class:`Submitted`) of a model whose durations are known is not read at once: its plan starts
from the submission's answer and its first read is the plan's first poll (a read at once would
only say ``starting``). A caller's own ``watch()`` reads at once. The timeout is around each
poll and each sleep, never around a ``yield`` (PEP 789).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import NamedTuple

import anyio

from ._config import Limits
from ._errors import AsyncSDKError, GenerationFailedError, GenerationTimeoutError
from ._limits import AccountGate
from ._models import Generation, GenerationStatus
from ._polling import PollSchedule
from ._reads import Reader
from ._retry import is_retryable, wait_times
from ._wakeups import Wakeups

__all__ = ["Submitted", "Watcher"]


class Submitted(NamedTuple):
    """A generation this client has just created: the model it was submitted for and when
    the submission's answer arrived (Unix time; the generation was created before)."""

    model: str
    answered: float


class Watcher:
    """``watch()`` and ``wait()`` for one client."""

    def __init__(
        self,
        reader: Reader,
        gate: Callable[[], AccountGate],
        *,
        limits: Limits,
        poll_interval: float,
        backoff_range: tuple[float, float],
        wakeups: Wakeups,
        account: str | None = None,
    ) -> None:
        self._reader = reader
        self._gate = gate
        self._limits = limits
        self.poll_interval = poll_interval
        self._backoff = backoff_range
        self._wakeups = wakeups
        self._account = account

    async def watch(
        self,
        generation_id: str,
        *,
        poll_interval: float | None = None,
        on_read: Callable[[Generation], object] | None = None,
        submitted: Submitted | None = None,
    ) -> AsyncGenerator[Generation, None]:
        interval = poll_interval or self.poll_interval
        limits = self._limits
        started = time.time()

        def deadline(created: float) -> float:
            """When a generation created at ``created`` has surely ended (never before the
            watch started: a skewed clock must not end it early)."""
            return max(created + limits.generation_timeout, started) + limits.margin + interval

        ends_by = deadline(started)  # until the first record says when it was created
        last: Generation | None = None
        schedule = None
        durations = self._reader.durations
        if submitted is not None:
            schedule = durations.schedule_submitted(
                submitted.model, interval, answered=submitted.answered, account=self._account
            )
            if schedule is not None:  # created before the answer arrived
                ends_by = deadline(submitted.answered)
        waits = wait_times(*self._backoff)
        next(waits)
        with self._gate().watching(generation_id):
            if schedule is not None:
                # Just created, of a model whose durations are known: the first read is the
                # plan's first poll (a read now would only say "starting").
                await self._pause(generation_id, schedule, ends_by)
            while True:
                try:
                    generation = self._wakeups.take(generation_id)
                    if generation is None:
                        generation = await self._reader.generation(generation_id)
                        if on_read is not None:
                            on_read(generation)
                    else:
                        # Delivered, not read: what a read does with an ended record (free
                        # its slot, learn its duration) is still to do.
                        await self._reader.saw(generation)
                except AsyncSDKError as exc:
                    if not is_retryable(exc):
                        raise
                    pause = waits.send(exc)
                    if time.time() + pause > ends_by:
                        raise GenerationTimeoutError(
                            generation_id, last.status if last else None
                        ) from exc
                    await anyio.sleep(pause)
                    continue
                waits = wait_times(*self._backoff)
                next(waits)
                if last is None and submitted is not None:
                    durations.reports_as(submitted.model, generation.model_provider)
                if last is None or generation.status != last.status:
                    last = generation
                    yield generation
                if generation.status.is_terminal:
                    return
                now = time.time()
                if schedule is None:
                    created = generation.created_at
                    base = created.timestamp() if created else started
                    ends_by = deadline(base)
                    schedule = durations.schedule(
                        generation.model_provider,
                        interval,
                        started=base,
                        account=self._account,
                    )
                if now >= ends_by:
                    raise GenerationTimeoutError(generation_id, generation.status)
                await self._pause(generation_id, schedule, ends_by)

    async def _pause(self, generation_id: str, schedule: PollSchedule, ends_by: float) -> None:
        """Sleep until the schedule's next poll (or a webhook delivery), never past
        ``ends_by``."""
        now = time.time()
        delay = schedule.next_delay(now, webhooks=self._wakeups.flowing)
        await self._wakeups.sleep(generation_id, min(delay, max(ends_by - now, 0.0)))

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Generation], object] | None = None,
        on_read: Callable[[Generation], object] | None = None,
        submitted: Submitted | None = None,
    ) -> Generation:
        last: Generation | None = None
        # No cancel scope without a timeout: thousands of waits would each keep one.
        scope = anyio.move_on_after(timeout) if timeout is not None else None
        with scope or contextlib.nullcontext():
            events = self.watch(generation_id, on_read=on_read, submitted=submitted)
            async with contextlib.aclosing(events):
                async for last in events:
                    if on_update is not None:
                        on_update(last)
        if (scope is not None and scope.cancelled_caught) or last is None:
            raise GenerationTimeoutError(generation_id, last.status if last else None)
        if last.status is GenerationStatus.FAILED:
            raise GenerationFailedError(last)
        return last
