"""The per-account gate: a sliding-window submission limiter and the generation slot.

Every submission passes one gate per account. The gate admits a submission when two things
are true at once, and it serves waiting submitters in arrival order within their lane:

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
Every hold has such an expiry, from the moment of admission: no path can block an account
for longer. While a sent submission's outcome is unknown, its slot stays held under its tag.
Cancelling a task that waits on a generation touches none of this: the slot belongs to the
generation, not to the task.

**Orphans and the probe.** A hold nobody settles any more is an *orphan*: a submission whose
outcome was unknown when its submitter went away (it carries the tag), or a generation the
service said runs that nobody here started (untagged). While the head of the queue waits for a
slot held by an orphan, or by a generation that nobody is watching, it calls the client's
*probe* now and then (:meth:`asyncsdk._submission.Submitter.probe`), which looks the tag up in
the list or polls the generation, and :meth:`AccountGate.resolve` gives the orphan the
generation found (or frees it), so the slot frees as soon as the generation ends rather than at
the expiry.

**Lanes.** Waiters queue in two FIFO lanes (:class:`Priority`): interactive submitters are
admitted before batch ones, with a batch admission after every :data:`BATCH_EVERY` interactive
ones, so batch work is never starved.

**Every change of state wakes the waiter** (as trio's primitives do), and every server hint
(``X-RateLimit-Reset``, ``Retry-After``) is capped at one window: a hint may never stall an
account longer than the limits it publishes (:func:`capped_hint`).

The settle verbs of a :class:`Permit` are called only by :mod:`asyncsdk._submission`, whose
:class:`~asyncsdk._submission.Reservation` settles on every path.

State lives behind :class:`Gate` / :class:`AccountGate` so that another backend (Redis, for
many processes) can hold it; :class:`LocalGate` is the in-process one, shared by every client
in the process that uses the same account. Time comes from an injectable :class:`Clock`, so
the unit tests run on a fake clock without sockets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import heapq
import itertools
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import anyio.lowlevel
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
    "Holder",
    "LocalAccountGate",
    "LocalGate",
    "Permit",
    "Priority",
    "Probe",
    "SubmissionWindow",
    "SystemClock",
    "capped_hint",
]


class Clock(Protocol):
    """Monotonic time in seconds, and a wait that ends early when an event is set."""

    def now(self) -> float: ...

    async def wait(self, event: Flag, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic`` and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: Flag, seconds: float) -> None:
        await event.wait(seconds)


#: The one real clock (it keeps no state).
SYSTEM_CLOCK: Final = SystemClock()


class Flag:
    """A one-shot event, shaped like ``anyio.Event`` (``set``, ``is_set``, ``wait``), with a
    timed wait: what every waiter of a gate or a watch sleeps on.

    No waiter queue until someone waits, and a timed wait ends by a timer resolving the
    waiter's future, not by a cancellation (no cancel scope per sleeper).

    >>> flag = Flag()
    >>> flag.is_set()
    False
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag, waking every waiter (once; later calls do nothing)."""
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            _resolve(waiter)

    async def wait(self, seconds: float | None = None) -> None:
        """Until the flag is set, or ``seconds`` passed (forever by default); a checkpoint
        when it is set already."""
        if self._set:
            await anyio.lowlevel.checkpoint()
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        timer = None if seconds is None else loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiters is not None:
                self._waiters.remove(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@attrs.frozen
class GateStatistics:
    """A snapshot of one account's gate (compare anyio's ``SemaphoreStatistics``).

    :ivar waiting: tasks queued for a submission.
    :ivar submissions_in_window: live window entries (sent and not yet expired).
    :ivar submission_limit: ``Limits.submissions``.
    :ivar in_progress: generation slots taken.
    :ivar holders: who holds the slots: generation ids, ``None`` for an answer not seen yet.
    :ivar orphans: holds nobody settles any more, waiting for the probe to resolve them.
    """

    waiting: int
    submissions_in_window: int
    submission_limit: int
    in_progress: int
    holders: tuple[str | None, ...]
    orphans: int = 0


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


class Priority(str, enum.Enum):
    """Which lane a submission waits in when the account's gate is busy.

    Waiting ``INTERACTIVE`` submitters are admitted before ``BATCH`` ones (FIFO within a
    lane), except that after :data:`BATCH_EVERY` interactive admissions in a row a waiting
    batch submitter goes first, so batch work is never starved.
    """

    INTERACTIVE = "interactive"
    BATCH = "batch"


#: After this many interactive admissions in a row, a waiting batch submitter goes next.
BATCH_EVERY: Final = 4


@attrs.frozen
class Holder:
    """One taken generation slot, as a gate shows it to the probe.

    :ivar key: the hold's name in its gate (what :meth:`AccountGate.resolve` takes).
    :ivar generation_id: the generation holding it, ``None`` while not known.
    :ivar orphan: nobody is settling it: a request whose outcome is unknown and whose
        submitter is gone, or a generation the service says runs but nobody here started.
    :ivar tag: the orphaned request's tag (``None``: an untagged "something runs" hold).
    :ivar since: Unix time from which the orphan is settled: when its request's outcome
        became unknown, or when the service said something runs (whatever was created, was
        created before then).
    :ivar watched: a ``watch()`` follows its generation (in any process).
    """

    key: str
    generation_id: str | None
    orphan: bool = False
    tag: str | None = None
    since: float | None = None
    watched: bool = False


_HOLD_KEYS = itertools.count(1)


class _Hold:
    """One taken generation slot; every hold expires (``generation_timeout + margin``)."""

    __slots__ = ("expires", "generation_id", "key", "orphan", "since", "tag")

    def __init__(self, generation_id: str | None, expires: float) -> None:
        self.key = format(next(_HOLD_KEYS), "x")  # unique in this process, like the gate
        self.generation_id = generation_id
        self.expires = expires
        self.orphan = False
        self.tag: str | None = None
        self.since: float | None = None


Probe = Callable[[Sequence[Holder]], Awaitable[None]]
"""Called by the head waiter with the slot holders nobody settles or watches."""


class Permit(Protocol):
    """One admitted submission: a window entry and a generation slot, to be settled.

    These are a backend's verbs. Only :mod:`asyncsdk._submission` calls them, through its
    :class:`~asyncsdk._submission.Reservation`, which settles whatever is open on every
    path (shielded from cancellation).
    """

    async def answered(self, generation_id: str | None, rate_limit: RateLimitInfo | None) -> None:
        """The service answered: it created ``generation_id`` (which now holds the slot),
        or nothing (``None``: the slot is free again). The window entry counts from now."""

    async def unanswered(self, tag: str, sent_at: float) -> None:
        """Sent, outcome unknown: the window entry counts from now and the slot stays held
        (under ``tag``) while the submitter looks for what it created."""

    async def adopt(self, generation_id: str) -> None:
        """The submitter found the generation its request created: it holds the slot."""

    async def abandon(self) -> None:
        """The submitter made sure nothing was created: free the slot."""

    async def discard(self) -> None:
        """The request never left: give back the window entry and the slot."""

    async def orphan(self, tag: str | None, since: float) -> None:
        """Nobody will settle this slot any more (its submitter is gone while the outcome
        is unknown, ``tag`` set; or the service said a generation runs that nobody here
        started, ``tag=None``): the probe of any waiter resolves it."""


class AccountGate(Protocol):
    """What the client needs from one account's gate; backends implement it."""

    limits: Limits

    async def acquire(
        self, *, probe: Probe | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Permit:
        """Wait (FIFO within a priority lane) for a free slot and room in the window;
        reserve both."""

    async def release(self, generation_id: str) -> None:
        """The SDK saw ``generation_id`` end: free its slot, if it holds one."""

    async def release_many(self, generation_ids: Iterable[str]) -> None:
        """The SDK saw these generations end (a list page): free their slots at once."""

    async def hold_foreign(self, generation_id: str) -> None:
        """A generation started elsewhere runs on the account: count it as a slot holder."""

    async def resolve(self, key: str, generation_id: str | None) -> None:
        """The probe resolved the orphaned hold ``key``: ``generation_id`` holds it (unless
        another hold has that generation already), or ``None``: it is free."""

    def note_rate_limit(self, info: RateLimitInfo, *, submission: bool) -> None:
        """Feed the server's rate-limit headers back (a submission's, or a read's)."""

    async def read_turn(self) -> None:
        """Return when reads may go (the server said ``X-RateLimit-Remaining: 0`` for reads)."""

    def watching(self, generation_id: str) -> contextlib.AbstractContextManager[None]:
        """Mark ``generation_id`` as watched, so that the probe leaves it alone."""

    def holders(self) -> Sequence[Holder]:
        """The slot holders as last known (for the probe)."""

    def statistics(self) -> GateStatistics: ...


class Gate(Protocol):
    """A gate backend: hands out the :class:`AccountGate` of an account."""

    def account(self, account_key: str, limits: Limits) -> AccountGate:
        """The gate of the account ``account_key`` (a hash, never the API key itself)."""


@contextlib.contextmanager
def tally(counts: collections.Counter[str], key: str) -> Iterator[None]:
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


def capped_hint(limits: Limits, seconds: float | None) -> float | None:
    """A server's "wait this long" hint, capped at one window: no hint may stall an account
    longer than the limits it publishes."""
    if seconds is None:
        return None
    return min(max(seconds, 0.0), limits.window + limits.margin)


class _Lanes:
    """The waiting line of one gate: FIFO per :class:`Priority`, interactive first, with
    a batch admission after :data:`BATCH_EVERY` interactive ones in a row. A lane exists
    only while someone waits in it (an idle gate of many holds none)."""

    __slots__ = ("_head", "_lanes", "_streak")

    def __init__(self) -> None:
        self._lanes: dict[Priority, collections.deque[Flag]] = {}
        self._head: Flag | None = None
        self._streak = 0

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values()) + (self._head is not None)

    def turn(self, priority: Priority) -> _Turn:
        """``async with lanes.turn(priority)``: wait to be the head of the line; leave it
        on exit (cancelled or not)."""
        return _Turn(self, priority)

    def _next(self) -> None:
        interactive = self._lanes.get(Priority.INTERACTIVE)
        batch = self._lanes.get(Priority.BATCH)
        if interactive and not (batch and self._streak >= BATCH_EVERY):
            self._streak += 1
            self._head = self._pop(Priority.INTERACTIVE, interactive)
        elif batch:
            self._streak = 0
            self._head = self._pop(Priority.BATCH, batch)
        else:
            return
        self._head.set()

    def _pop(self, priority: Priority, lane: collections.deque[Flag]) -> Flag:
        ticket = lane.popleft()
        if not lane:
            del self._lanes[priority]
        return ticket


class _Turn:
    """One waiter's place in :class:`_Lanes` (a class, not a generator: it is on the path
    of every submission)."""

    __slots__ = ("lanes", "priority", "ticket")

    def __init__(self, lanes: _Lanes, priority: Priority) -> None:
        self.lanes, self.priority, self.ticket = lanes, priority, Flag()

    async def __aenter__(self) -> None:
        lanes = self.lanes
        lanes._lanes.setdefault(self.priority, collections.deque()).append(self.ticket)
        try:
            if lanes._head is None:
                lanes._next()
            await self.ticket.wait()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        lanes, ticket = self.lanes, self.ticket
        if lanes._head is ticket:
            lanes._head = None
            lanes._next()
            return
        lane = lanes._lanes.get(self.priority)
        if lane is not None and ticket in lane:
            lane.remove(ticket)
            if not lane:
                del lanes._lanes[self.priority]


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
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self.probe_interval = probe_interval
        self._window = SubmissionWindow(limits.submissions, limits.window, limits.margin)
        self._holds: list[_Hold] = []
        self._watched: collections.Counter[str] = collections.Counter()
        self._reads_paused_until = -math.inf
        self._lanes = _Lanes()
        # anyio primitives bind to the running event loop: made on first use.
        self._changed: Flag | None = None

    def __repr__(self) -> str:
        return f"<LocalAccountGate {self.statistics()}>"

    @property
    def idle(self) -> bool:
        """Nothing waits, nothing is held, the window is empty: the gate can be forgotten."""
        now = self.clock.now()
        return (
            not len(self._lanes)
            and not self._live_holds(now)
            and not self._window.count(now)
            and not self._watched
            and now >= self._reads_paused_until
        )

    # -- every change of state goes through here --------------------------------------------
    def _wake(self) -> None:
        """Wake the waiter: called after *every* mutation (as trio's primitives do)."""
        if self._changed is not None:
            self._changed.set()

    # -- the slot ----------------------------------------------------------------------------
    def _live_holds(self, now: float) -> list[_Hold]:
        if any(h.expires <= now for h in self._holds):
            self._holds = [h for h in self._holds if h.expires > now]
        return self._holds

    def _hold_expiry(self) -> float:
        return self.clock.now() + self.limits.generation_timeout + self.limits.margin

    def _take(self, hold: _Hold, generation_id: str | None) -> None:
        hold.generation_id = generation_id
        hold.orphan = False
        hold.expires = self._hold_expiry()
        if generation_id is not None and any(
            h is not hold and h.generation_id == generation_id for h in self._holds
        ):
            self._holds.remove(hold)  # already held (e.g. as a foreign generation)
        self._wake()

    def _drop(self, hold: _Hold) -> None:
        if hold in self._holds:
            self._holds.remove(hold)
        self._wake()

    async def release(self, generation_id: str) -> None:
        for hold in [h for h in self._holds if h.generation_id == generation_id]:
            self._drop(hold)

    async def release_many(self, generation_ids: Iterable[str]) -> None:
        ended = set(generation_ids)
        for hold in [h for h in self._holds if h.generation_id in ended]:
            self._drop(hold)

    async def hold_foreign(self, generation_id: str) -> None:
        if not any(h.generation_id == generation_id for h in self._holds):
            self._holds.append(_Hold(generation_id, self._hold_expiry()))
            self._wake()

    async def resolve(self, key: str, generation_id: str | None) -> None:
        for hold in [h for h in self._holds if h.key == key and h.orphan]:
            if generation_id is None:
                self._drop(hold)
            else:
                self._take(hold, generation_id)

    def watching(self, generation_id: str) -> contextlib.AbstractContextManager[None]:
        return tally(self._watched, generation_id)

    # -- admission ---------------------------------------------------------------------------
    async def acquire(
        self, *, probe: Probe | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Permit:
        async with self._lanes.turn(Priority(priority)):
            await self._wait_for_room(probe)
            hold = _Hold(None, self._hold_expiry())
            self._holds.append(hold)
            return _LocalPermit(self, self._window.reserve(), hold)

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
                    unsettled = [
                        self._holder(h)
                        for h in holds
                        if h.orphan or (h.generation_id is not None and not self._is_watched(h))
                    ]
                    if unsettled:
                        await probe(unsettled)
                    next_probe = self.clock.now() + self.probe_interval
                    continue
                wake = min(h.expires for h in holds)
                if probe is not None:
                    wake = min(wake, next_probe)
            self._changed = Flag()
            await self.clock.wait(self._changed, max(wake - now, 0.0))

    def holders(self) -> list[Holder]:
        return [self._holder(h) for h in self._live_holds(self.clock.now())]

    def _holder(self, hold: _Hold) -> Holder:
        return Holder(
            hold.key, hold.generation_id, hold.orphan, hold.tag, hold.since, self._is_watched(hold)
        )

    def _is_watched(self, hold: _Hold) -> bool:
        return hold.generation_id in self._watched

    def note_rate_limit(self, info: RateLimitInfo, *, submission: bool) -> None:
        if info.remaining is None:
            return
        resets_in = capped_hint(self.limits, resets_in_seconds(info))
        now = self.clock.now()
        if submission:
            self._window.resync(now, info.remaining, resets_in)
            self._wake()
        elif info.remaining <= 0:
            pause = resets_in if resets_in is not None else self.limits.window
            self._reads_paused_until = max(self._reads_paused_until, now + pause)

    async def read_turn(self) -> None:
        now = self.clock.now()
        if now < self._reads_paused_until:
            await self.clock.wait(Flag(), self._reads_paused_until - now)

    def statistics(self) -> GateStatistics:
        now = self.clock.now()
        holds = self._live_holds(now)
        return GateStatistics(
            waiting=len(self._lanes),
            submissions_in_window=self._window.count(now),
            submission_limit=self.limits.submissions,
            in_progress=len(holds),
            holders=tuple(h.generation_id for h in holds),
            orphans=sum(h.orphan for h in holds),
        )


def resets_in_seconds(info: RateLimitInfo) -> float | None:
    """Seconds until the server's window resets, from either of its hints (uncapped)."""
    resume = info.resume_at()
    return None if resume is None else max(resume - time.time(), 0.0)


@attrs.define
class _LocalPermit:
    gate: LocalAccountGate
    entry: _Entry
    hold: _Hold

    def _settle_entry(self) -> None:
        self.gate._window.settle(self.entry, self.gate.clock.now())
        self.gate._wake()

    async def answered(self, generation_id: str | None, rate_limit: RateLimitInfo | None) -> None:
        self._settle_entry()
        if rate_limit is not None:
            self.gate.note_rate_limit(rate_limit, submission=True)
        if generation_id is None:
            self.gate._drop(self.hold)
        else:
            self.gate._take(self.hold, generation_id)

    async def unanswered(self, tag: str, sent_at: float) -> None:
        self._settle_entry()
        self.gate._take(self.hold, None)
        self.hold.tag, self.hold.since = tag, sent_at

    async def adopt(self, generation_id: str) -> None:
        self.gate._take(self.hold, generation_id)

    async def abandon(self) -> None:
        self.gate._drop(self.hold)

    async def discard(self) -> None:
        self.gate._window.discard(self.entry)
        self.gate._drop(self.hold)

    async def orphan(self, tag: str | None, since: float) -> None:
        if self.entry.expires == math.inf:  # still in flight: it has arrived by now
            self._settle_entry()
        self.gate._take(self.hold, None)
        if self.hold in self.gate._holds:
            self.hold.orphan, self.hold.tag, self.hold.since = True, tag, since


class _Registered:
    """A gate in :class:`LocalGate`'s registry and the clients using it."""

    __slots__ = ("gate", "users")

    def __init__(self, gate: LocalAccountGate) -> None:
        self.gate = gate
        self.users = 0


class _LoopGates:
    """The gates of one event loop, and the keys of those no client uses any more."""

    __slots__ = ("entries", "unused")

    def __init__(self) -> None:
        self.entries: dict[str, _Registered] = {}
        self.unused: dict[str, None] = {}  # insertion-ordered: the sweep goes round it

    def sweep(self, budget: int) -> None:
        """Look at up to ``budget`` unused gates, oldest first: forget the idle ones."""
        for _ in range(min(budget, len(self.unused))):
            key = next(iter(self.unused))
            del self.unused[key]
            entry = self.entries.get(key)
            if entry is None or entry.users:
                continue
            if entry.gate.idle:
                del self.entries[key]
            else:
                self.unused[key] = None  # still busy: look again later


#: Unused gates looked at per :meth:`LocalGate.account` / :meth:`LocalGate.release_account`.
SWEEP: Final = 4


class LocalGate:
    """In-process gate backend: one :class:`LocalAccountGate` per account and event loop.

    The default :data:`local_gate` is shared by every client in the process, so two clients
    on one API key queue behind the same limits.

    Gates are kept while a client uses them (from :meth:`account` to
    :meth:`release_account`, which ``AsyncClient`` calls when it opens and closes) and
    afterwards for as long as they are not idle (a generation holds the slot, the window has
    entries, someone waits or watches): a client opened later on the same account meets the
    same gate, and so the same limits, while anything is in flight. Unused idle gates are
    forgotten a few at a time on each call, so a process that opens and closes clients for
    ever more accounts keeps only those active within about a window.

    >>> gates = LocalGate()
    >>> len(gates)
    0
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock
        self._loops: weakref.WeakKeyDictionary[object, _LoopGates] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        """Gates kept, over every event loop."""
        return sum(len(gates.entries) for gates in list(self._loops.values()))

    def account(self, account_key: str, limits: Limits) -> LocalAccountGate:
        loop = _current_loop()
        gates = self._loops.get(loop)
        if gates is None:
            gates = self._loops[loop] = _LoopGates()
        gates.sweep(SWEEP)
        entry = gates.entries.get(account_key)
        if entry is None:
            entry = _Registered(LocalAccountGate(limits, clock=self._clock or SYSTEM_CLOCK))
            gates.entries[account_key] = entry
        elif entry.gate.limits != limits:
            raise ValueError(
                f"this account is already used in this process with {entry.gate.limits!r}; "
                f"a client cannot use it with different limits ({limits!r})"
            )
        entry.users += 1
        gates.unused.pop(account_key, None)
        return entry.gate

    def release_account(self, account_key: str, gate: AccountGate) -> None:
        """A client is done with the ``gate`` :meth:`account` gave it for ``account_key``
        (once per call of :meth:`account`); an idle gate nobody uses is forgotten."""
        for gates in list(self._loops.values()):
            entry = gates.entries.get(account_key)
            if entry is None or entry.gate is not gate:
                continue
            entry.users = max(entry.users - 1, 0)
            if not entry.users:
                if entry.gate.idle:
                    del gates.entries[account_key]
                else:
                    gates.unused[account_key] = None
            gates.sweep(SWEEP)
            return


def _current_loop() -> object:
    import asyncio

    return asyncio.get_running_loop()


local_gate = LocalGate()
