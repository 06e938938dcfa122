"""The per-account gate: a sliding-window submission limiter and the generation slot.

Every submission passes one gate per account. The gate admits a submission when two things
are true at once, and it serves waiting submitters strictly in arrival order (FIFO):

**The window has room.** The service admits at most ``N = Limits.submissions`` submissions in
any ``W = Limits.window`` seconds, counted at the moment each request *arrives*. The client
cannot see arrivals, only the send time ``s`` and the time ``r`` the answer came back, and the
arrival lies somewhere in ``[s, r]``. So each submission occupies one window entry from the
moment it is sent until ``r + W + margin`` (``+inf`` while it is in flight), and a new
submission is sent only while fewer than ``N`` entries are live. Proof that the server never
counts ``N + 1``: take any ``N + 1`` arrivals inside one window ``(t - W, t]`` and let ``x`` be
the one sent last. Every other one ``j`` was sent before ``x`` and answered at
``r_j >= a_j > t - W >= s_x - W``, so its entry was still live when ``x`` was sent: ``x`` would
have seen ``N`` live entries and waited. A token bucket (burst ``N``, refill ``N/W``) admits up
to ``2N - 1`` in one window and is not used. When the server's ``X-RateLimit-Remaining`` /
``X-RateLimit-Reset`` say more of the window is used than the gate knows (another process on
the same key), the gate adds phantom entries so that it never runs ahead of the server.

**A generation slot is free.** At most ``Limits.concurrent`` generations run at once. A slot
is taken *before* the submission is sent and is held by the generation it created until the
SDK sees that generation end (any read that returns a terminal status releases it) or until
``generation_timeout + margin`` after the answer, when the service has cancelled it anyway.
A submission whose answer was lost holds its slot under an unknown owner until the client
reconciles it. Cancelling a task that waits on a generation touches none of this: the slot
belongs to the generation, not to the task.

While the head of the queue waits for a slot held by a generation that nobody is watching
(``submit()`` without ``wait()``), it calls the client's *probe* now and then, which polls
those generations so that the slot is freed as soon as they end rather than at the timeout.

State lives behind :class:`Gate` / :class:`AccountGate` so that another backend (Redis, for
many processes) can hold it; :class:`LocalGate` is the in-process one, shared by every client
in the process that uses the same account. Time comes from an injectable :class:`Clock`, so
the unit tests run on a fake clock without sockets.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
import attrs

from ._config import Limits
from ._errors import RateLimitError

if TYPE_CHECKING:
    from ._models import RateLimitInfo

__all__ = [
    "AccountGate",
    "Clock",
    "Gate",
    "GateStatistics",
    "LocalAccountGate",
    "LocalGate",
    "Permit",
    "Probe",
    "SubmissionWindow",
    "SystemClock",
]


class Clock(Protocol):
    """Monotonic time in seconds, and a wait that ends early when an event is set."""

    def now(self) -> float: ...

    async def wait(self, event: anyio.Event, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and anyio's timeouts."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: anyio.Event, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await event.wait()


@attrs.frozen
class GateStatistics:
    """A snapshot of one account's gate (compare anyio's ``SemaphoreStatistics``).

    :ivar waiting: tasks queued for a submission.
    :ivar submissions_in_window: live window entries (sent and not yet expired).
    :ivar submission_limit: ``Limits.submissions``.
    :ivar in_progress: generation slots taken.
    :ivar holders: who holds the slots: generation ids, ``None`` for an answer not seen yet.
    """

    waiting: int
    submissions_in_window: int
    submission_limit: int
    in_progress: int
    holders: tuple[str | None, ...]


class _Entry:
    __slots__ = ("expires",)

    def __init__(self, expires: float) -> None:
        self.expires = expires


class SubmissionWindow:
    """Pure sliding-window bookkeeping (see the module docstring); no I/O, no waiting."""

    def __init__(self, limit: int, window: float, margin: float = 0.0) -> None:
        self.limit = limit
        self.window = window
        self.margin = margin
        self._entries: list[_Entry] = []

    def _prune(self, now: float) -> None:
        if any(e.expires <= now for e in self._entries):
            self._entries = [e for e in self._entries if e.expires > now]

    def count(self, now: float) -> int:
        """Live entries at ``now``."""
        self._prune(now)
        return len(self._entries)

    def admit_at(self, now: float) -> float:
        """The earliest time ``>= now`` at which one more submission may be sent."""
        self._prune(now)
        excess = len(self._entries) - self.limit + 1
        if excess <= 0:
            return now
        # The entries must drop to limit - 1: wait for the `excess` earliest to expire.
        return heapq.nsmallest(excess, (e.expires for e in self._entries))[-1]

    def reserve(self) -> _Entry:
        """Take an entry for a submission about to be sent (live until settled)."""
        entry = _Entry(math.inf)
        self._entries.append(entry)
        return entry

    def settle(self, entry: _Entry, now: float) -> None:
        """The submission's answer came (or was lost) at ``now``: it stays counted for a window."""
        entry.expires = now + self.window + self.margin

    def discard(self, entry: _Entry) -> None:
        """Forget an entry whose submission was never sent."""
        if entry in self._entries:
            self._entries.remove(entry)

    def resync(self, now: float, remaining: int, resets_in: float | None) -> None:
        """Align with the server's count: never believe more room than it reports."""
        self._prune(now)
        missing = (self.limit - max(remaining, 0)) - len(self._entries)
        for i in range(missing):
            # The oldest unknown entry frees at the reported reset; the others some time
            # within a window from now, so assume the latest.
            first = resets_in is not None and i == 0
            horizon = resets_in if first and resets_in is not None else self.window
            self._entries.append(_Entry(now + max(horizon, 0.0) + self.margin))


class _Hold:
    """One taken generation slot; ``orphan``: its submitter was cancelled before the answer."""

    __slots__ = ("expires", "generation_id", "orphan")

    def __init__(self, generation_id: str | None, expires: float) -> None:
        self.generation_id = generation_id
        self.expires = expires
        self.orphan = False


Probe = Callable[[Sequence[str | None]], Awaitable[None]]
"""Called by the head waiter with the unwatched slot holders (``None``: an orphaned slot)."""


class Permit(Protocol):
    """One admitted submission: a window entry and a generation slot, to be settled."""

    async def answered(self, generation_id: str | None, rate_limit: RateLimitInfo | None) -> None:
        """The service answered: it created ``generation_id`` (which now holds the slot),
        or nothing (``None``: the slot is free again)."""

    async def unanswered(self) -> None:
        """The answer was lost: keep the slot under an unknown owner until resolved."""

    async def adopt(self, generation_id: str) -> None:
        """Reconciliation found the generation this submission created."""

    async def abandon(self) -> None:
        """Reconciliation found that nothing was created: free the slot."""

    async def discard(self) -> None:
        """The submission was never sent: give back the window entry and the slot."""

    async def orphan(self) -> None:
        """The submitter was cancelled before the answer: nobody will reconcile this slot;
        the gate's probe resolves it from the account's running generations."""


class AccountGate(Protocol):
    """What the client needs from one account's gate; backends implement it."""

    limits: Limits

    async def acquire(self, *, probe: Probe | None = None) -> Permit:
        """Wait (FIFO) for a free slot and room in the window; reserve both."""

    async def release(self, generation_id: str) -> None:
        """The SDK saw ``generation_id`` end: free its slot, if it holds one."""

    async def hold_foreign(self, generation_id: str) -> None:
        """A generation started elsewhere runs on the account: count it as a slot holder."""

    async def resolve_orphans(self, running: Sequence[str]) -> None:
        """The account's generations in progress right now: orphaned slots take one each
        (if not held already), the rest are freed."""

    def note_rate_limit(self, info: RateLimitInfo, *, submission: bool) -> None:
        """Feed the server's rate-limit headers back (a submission's, or a read's)."""

    async def read_turn(self) -> None:
        """Return when reads may go (the server said ``X-RateLimit-Remaining: 0`` for reads)."""

    def watching(self, generation_id: str) -> contextlib.AbstractContextManager[None]:
        """Mark ``generation_id`` as watched, so that the probe leaves it alone."""

    def statistics(self) -> GateStatistics: ...


class Gate(Protocol):
    """A gate backend: hands out the :class:`AccountGate` of an account."""

    def account(self, account_key: str, limits: Limits) -> AccountGate:
        """The gate of the account ``account_key`` (a hash, never the API key itself)."""


@contextlib.contextmanager
def counting(counts: collections.Counter[str], key: str) -> Iterator[None]:
    """Count ``key`` in ``counts`` while the block runs (at zero the key is removed), e.g.
    the ``watch()`` loops following a generation in this process."""
    counts[key] += 1
    try:
        yield
    finally:
        counts[key] -= 1
        if not counts[key]:
            del counts[key]


def check_deadline(limits: Limits, wait: float) -> None:
    """Fail fast when the caller's deadline ends before the window has room in ``wait`` s.

    Every gate backend calls this before sleeping on a full window, so that a caller inside
    ``anyio.fail_after()`` gets a :class:`RateLimitError` with ``reset_at`` at once instead of
    being cancelled later.
    """
    deadline = anyio.current_effective_deadline()
    if deadline != math.inf and anyio.current_time() + wait > deadline:
        raise RateLimitError(
            f"the submission window of {limits.submissions} per {limits.window:g}s is full "
            f"and frees in {wait:.2f}s, after the deadline",
            code="RATE_LIMIT_ERROR",
            reset_at=time.time() + wait,
        )


class LocalAccountGate:
    """The in-process :class:`AccountGate` (see the module docstring).

    >>> gate = LocalAccountGate(Limits(submissions=2, window=1.0))
    >>> gate.statistics().waiting
    0
    """

    def __init__(
        self, limits: Limits, *, clock: Clock | None = None, probe_interval: float = 1.0
    ) -> None:
        self.limits = limits
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.probe_interval = probe_interval
        self._window = SubmissionWindow(limits.submissions, limits.window, limits.margin)
        self._holds: list[_Hold] = []
        self._watched: collections.Counter[str] = collections.Counter()
        self._reads_paused_until = -math.inf
        self._waiting = 0
        # anyio primitives bind to the running event loop: made on first use.
        self._turnstile: anyio.Lock | None = None
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<LocalAccountGate {self.statistics()}>"

    # -- the slot ----------------------------------------------------------------------------
    def _live_holds(self, now: float) -> list[_Hold]:
        if any(h.expires <= now for h in self._holds):
            self._holds = [h for h in self._holds if h.expires > now]
        return self._holds

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _hold_expiry(self) -> float:
        return self.clock.now() + self.limits.generation_timeout + self.limits.margin

    def _take(self, hold: _Hold, generation_id: str | None) -> None:
        hold.generation_id = generation_id
        hold.expires = self._hold_expiry()

    def _drop(self, hold: _Hold) -> None:
        if hold in self._holds:
            self._holds.remove(hold)
            self._notify()

    async def release(self, generation_id: str) -> None:
        for hold in [h for h in self._holds if h.generation_id == generation_id]:
            self._drop(hold)

    async def hold_foreign(self, generation_id: str) -> None:
        if not any(h.generation_id == generation_id for h in self._holds):
            self._holds.append(_Hold(generation_id, self._hold_expiry()))
            self._notify()

    async def resolve_orphans(self, running: Sequence[str]) -> None:
        held = {h.generation_id for h in self._holds}
        unclaimed = [g for g in running if g not in held]
        for hold in [h for h in self._holds if h.orphan]:
            if unclaimed:
                hold.generation_id, hold.orphan = unclaimed.pop(0), False
            else:
                self._drop(hold)

    def watching(self, generation_id: str) -> contextlib.AbstractContextManager[None]:
        return counting(self._watched, generation_id)

    # -- admission ---------------------------------------------------------------------------
    async def acquire(self, *, probe: Probe | None = None) -> Permit:
        if self._turnstile is None:
            self._turnstile = anyio.Lock()
        self._waiting += 1
        try:
            async with self._turnstile:  # anyio's Lock is FIFO: arrival order
                await self._wait_for_room(probe)
                hold = _Hold(None, math.inf)
                self._holds.append(hold)
                return _LocalPermit(self, self._window.reserve(), hold)
        finally:
            self._waiting -= 1

    async def _wait_for_room(self, probe: Probe | None) -> None:
        next_probe = self.clock.now() + self.probe_interval
        while True:
            now = self.clock.now()
            holds = self._live_holds(now)
            slot_free = len(holds) < self.limits.concurrent
            admit_at = self._window.admit_at(now)
            if slot_free and admit_at <= now:
                return
            if slot_free:
                check_deadline(self.limits, admit_at - now)
                wake = admit_at
            else:
                if probe is not None and now >= next_probe:
                    unwatched = [
                        h.generation_id
                        for h in holds
                        if h.orphan or (h.generation_id is not None and not self._is_watched(h))
                    ]
                    if unwatched:
                        await probe(unwatched)
                    next_probe = self.clock.now() + self.probe_interval
                    continue
                wake = min(h.expires for h in holds)
                if probe is not None:
                    wake = min(wake, next_probe)
            self._changed = anyio.Event()
            await self.clock.wait(self._changed, max(wake - now, 0.0))

    def _is_watched(self, hold: _Hold) -> bool:
        return hold.generation_id in self._watched

    def note_rate_limit(self, info: RateLimitInfo, *, submission: bool) -> None:
        if info.remaining is None:
            return
        resume = info.resume_at()
        resets_in = None if resume is None else max(resume - time.time(), 0.0)
        now = self.clock.now()
        if submission:
            self._window.resync(now, info.remaining, resets_in)
        elif info.remaining <= 0:
            pause = resets_in if resets_in is not None else self.limits.window
            self._reads_paused_until = max(self._reads_paused_until, now + pause)

    async def read_turn(self) -> None:
        now = self.clock.now()
        if now < self._reads_paused_until:
            await self.clock.wait(anyio.Event(), self._reads_paused_until - now)

    def statistics(self) -> GateStatistics:
        now = self.clock.now()
        holds = self._live_holds(now)
        return GateStatistics(
            waiting=self._waiting,
            submissions_in_window=self._window.count(now),
            submission_limit=self.limits.submissions,
            in_progress=len(holds),
            holders=tuple(h.generation_id for h in holds),
        )


@attrs.define
class _LocalPermit:
    gate: LocalAccountGate
    entry: _Entry
    hold: _Hold

    async def answered(self, generation_id: str | None, rate_limit: RateLimitInfo | None) -> None:
        self.gate._window.settle(self.entry, self.gate.clock.now())
        if rate_limit is not None:
            self.gate.note_rate_limit(rate_limit, submission=True)
        if generation_id is None:
            self.gate._drop(self.hold)
        else:
            self.gate._take(self.hold, generation_id)

    async def unanswered(self) -> None:
        self.gate._window.settle(self.entry, self.gate.clock.now())
        self.gate._take(self.hold, None)

    async def adopt(self, generation_id: str) -> None:
        self.gate._take(self.hold, generation_id)

    async def abandon(self) -> None:
        self.gate._drop(self.hold)

    async def discard(self) -> None:
        self.gate._window.discard(self.entry)
        self.gate._drop(self.hold)

    async def orphan(self) -> None:
        await self.unanswered()
        self.hold.orphan = True


class LocalGate:
    """In-process gate backend: one :class:`LocalAccountGate` per account and event loop.

    The default :data:`local_gate` is shared by every client in the process, so two clients
    on one API key queue behind the same limits.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock
        self._gates: weakref.WeakKeyDictionary[object, dict[str, LocalAccountGate]] = (
            weakref.WeakKeyDictionary()
        )

    def account(self, account_key: str, limits: Limits) -> LocalAccountGate:
        gates = self._gates.setdefault(_current_loop(), {})
        gate = gates.get(account_key)
        if gate is None:
            gate = gates[account_key] = LocalAccountGate(limits, clock=self._clock)
        elif gate.limits != limits:
            raise ValueError(
                f"this account is already used in this process with {gate.limits!r}; "
                f"a client cannot use it with different limits ({limits!r})"
            )
        return gate


def _current_loop() -> object:
    import asyncio

    return asyncio.get_running_loop()


local_gate = LocalGate()
