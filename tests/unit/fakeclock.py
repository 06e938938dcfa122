"""A fake clock for the gate: time moves only when a test says so."""

from __future__ import annotations

import anyio

from asyncsdk._limits import Flag


class FakeClock:
    """Implements ``asyncsdk._limits.Clock``; ``advance()`` wakes the waits that are due."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self._timers: list[tuple[float, Flag]] = []

    def now(self) -> float:
        return self.time

    async def wait(self, event: Flag, seconds: float) -> None:
        self._timers.append((self.time + seconds, event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers, and let every woken task run."""
        await anyio.wait_all_tasks_blocked()
        self.time += seconds
        due = [(t, e) for t, e in self._timers if t <= self.time]
        self._timers = [(t, e) for t, e in self._timers if t > self.time]
        for _, event in due:
            event.set()
        await anyio.wait_all_tasks_blocked()

    async def run_until(self, predicate: object, step: float = 0.01, limit: float = 1e4) -> None:
        """Advance in steps until ``predicate()`` is true (bounded)."""
        assert callable(predicate)
        start = self.time
        while not predicate():
            assert self.time - start < limit, "predicate never became true"
            await self.advance(step)
