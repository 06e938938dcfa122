"""The submission protocol: one request's life, from admission to settlement, in one place.

Credits are money, so a submission is a small state machine rather than a request::

    reserve ──► send ──► outcome ─┬─ created(id) ─────────────► the generation holds the slot
    (gate:        │               ├─ nothing created ─────────► slot and entry given back /
     window +     │               │  (4xx, 429, the 5xx codes      counted; maybe retried
     slot, FIFO   │               │   that promise it, a request
     per lane)    │               │   that never left)
                  │               └─ unknown ──► look for the tag in the list, with backoff
                  │                  (lost answer,  ├─ found: adopt it (never paid twice)
                  │                   unreadable    ├─ the list was *read* and showed no such
                  │                   2xx, a 5xx       tag for ``Limits.settle_time`` after the
                  │                   that promises    send: nothing was created, send again
                  │                   nothing)      └─ the caller's deadline (or the service's
                  │                                    own, past which any generation ended)
                  │                                    comes first: SubmissionUnknownError
                  └─ cancelled, or anything raised ► the Reservation's exit settles it

**Unknown is never absent.** "Could not look" (the list answers 5xx, HTML, times out) and
"looked too early" (the list lags behind creation) both keep the outcome unknown: the slot
stays held under the request's tag and nothing is resent.

**Tags.** Every request carries a tag in ``name``: ``sdk-`` and 12 hex digits, or the
caller's own name (at most 17 characters) followed by ``~`` and the 12 digits, so it stays
unique per submission whatever the caller names it. With an ``idempotency_key`` the digits
are derived from the key, so that a retry of the same logical call (another worker, after
the first was killed mid-request) looks for the same tag: ``recover_since`` makes it look
before sending.

**Reservations settle on every path.** :class:`Reservation` is an ``async with`` around one
admission; its exit, shielded from cancellation, settles whatever is still open: never sent →
the window entry and the slot are given back; sent and unknown → the slot is kept as an
*orphan* carrying the tag, which the probe of any waiter resolves by looking the tag up (the
same rule: found → the generation holds it; read and settled → freed). Every hold has a finite
expiry (``generation_timeout + margin``) as a backstop. Only this module calls the gate's
settle verbs (:class:`~asyncsdk._limits.Permit`).

**Rate limits.** A ``CONCURRENT_GENERATION_ERROR`` means something runs that no hold here
knows: the slot is kept as an untagged orphan and resolved from the account's running
generations before anyone else is admitted (so the next caller does not earn a second 429).
A ``RATE_LIMIT_ERROR`` re-syncs the window from its headers, or, without any, as full for a
window; the retry then waits in the gate (or fails at once past the caller's deadline).

This module knows the transport, a gate, and a way to read the list (:class:`Lister`); it
knows nothing of ``AsyncClient``, which composes it.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Protocol

import anyio
import attrs

from ._config import Limits
from ._errors import (
    NOTHING_CREATED_CODES,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    AsyncSDKError,
    ConcurrencyLimitError,
    RateLimitError,
    ServerError,
    SubmissionUnknownError,
)
from ._limits import AccountGate, Holder, Permit, Priority
from ._models import Generation, GenerationPage, RateLimitInfo, Submission
from ._retry import is_retryable, wait_times
from ._telemetry import Telemetry
from ._transport import Transport

__all__ = [
    "Lister",
    "NotSentInTime",
    "Outcome",
    "Request",
    "Reservation",
    "Submitter",
    "make_label",
]

logger = logging.getLogger("asyncsdk")

#: How far the service's clock may run behind ours when matching creation times, in seconds.
CLOCK_SKEW: Final = 300.0
#: Records per list page when looking for a tag.
_PAGE: Final = 50
#: A window full of phantom entries: what a 429 without any rate-limit header means.
_WINDOW_FULL: Final = RateLimitInfo(limit=None, remaining=0, reset_at=None, retry_after=None)
_TAG_DIGITS: Final = 12
_MAX_NAME_PREFIX: Final = 30 - 1 - _TAG_DIGITS


class NotSentInTime(AsyncSDKError):
    """A submission with a send-by deadline (``not_after``) could not be sent in time; it
    was not sent (nothing was paid). The batch runner reports it as an expired job."""


class Outcome(enum.Enum):
    """What a sent submission did, as far as its answer tells."""

    CREATED = "created"
    NOTHING_CREATED = "nothing created"
    UNKNOWN = "unknown"


class _Phase(enum.Enum):
    IDLE = "idle"  # not admitted yet
    RESERVED = "reserved"  # admitted: a window entry and a slot, nothing sent
    SENT = "sent"  # the request may have reached the service
    UNKNOWN = "unknown"  # sent, and no readable answer: the slot is held under the tag
    SETTLED = "settled"


def make_label(name: str | None, digits: str) -> str:
    """The ``name`` a submission carries: its tag.

    >>> make_label(None, "0123456789ab")
    'sdk-0123456789ab'
    >>> make_label("a-very-long-caller-name", "0123456789ab")
    'a-very-long-calle~0123456789ab'
    """
    return f"{(name or 'sdk')[:_MAX_NAME_PREFIX]}{'~' if name else '-'}{digits}"


#: The tags' random digits: seeded from the OS, again in a forked child (as ``random`` does
#: for its own), and apart from ``random``'s, which an application may seed. A tag needs to
#: be unique, not secret; ``secrets`` costs a system call per submission.
_TAG_RANDOM = random.Random()
os.register_at_fork(after_in_child=_TAG_RANDOM.seed)


def tag_digits(idempotency_key: str | None) -> str:
    """Random digits, or the ones derived from an idempotency key."""
    if idempotency_key is None:
        return format(_TAG_RANDOM.getrandbits(4 * _TAG_DIGITS), f"0{_TAG_DIGITS}x")
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:_TAG_DIGITS]


@attrs.frozen
class Request:
    """A checked submission, ready to send: the model, the JSON body and its tag."""

    model: str
    body: Mapping[str, Any]
    idempotency_key: str | None = None

    @property
    def tag(self) -> str:
        return str(self.body["name"])

    @property
    def prompt(self) -> str:
        return str(self.body["prompt"])

    @property
    def path(self) -> str:
        return f"/image-generation/{self.model}"


class Lister(Protocol):
    """One page of the account's generations, newest first (one try: no retries)."""

    def __call__(self, *, limit: int, offset: int) -> Awaitable[GenerationPage]: ...


class Reservation:
    """One admission through an account's gate: a window entry and a generation slot.

    >>> async def main(client: AsyncClient) -> None:                  # doctest: +SKIP
    ...     async with client.reserve() as reservation:  # waits for the window and the slot
    ...         await client.submit("google/nano-banana", "a kite", reservation=reservation)

    Leaving the block settles whatever is open, shielded from cancellation: an unused
    reservation is given back; one whose request was sent and whose outcome is unknown
    keeps the slot as an orphan that the gate's probe resolves by the request's tag.
    """

    def __init__(
        self, submitter: Submitter, priority: Priority, not_after: float | None = None
    ) -> None:
        self._submitter = submitter
        self._priority = priority
        self._not_after = not_after
        self._permit: Permit | None = None
        self._phase = _Phase.IDLE
        self.tag: str | None = None
        self.sent_at: float | None = None

    def __repr__(self) -> str:
        return f"<Reservation {self._phase.value}{' ' + self.tag if self.tag else ''}>"

    @property
    def open(self) -> bool:
        """Admitted and not used yet."""
        return self._phase is _Phase.RESERVED

    async def __aenter__(self) -> Reservation:
        if self._phase is not _Phase.IDLE:
            raise RuntimeError("a Reservation is entered once")
        submitter = self._submitter
        stats = submitter.gate.statistics()
        kind: Literal["slot", "window"] = (
            "slot" if stats.in_progress >= submitter.limits.concurrent else "window"
        )
        # A deadline scope only for a reservation that has one (thousands of waiting
        # workers, one per account, each hold their scopes while they wait).
        deadline = (
            contextlib.nullcontext()
            if self._not_after is None
            else anyio.move_on_after(max(self._not_after - time.time(), 0.0))
        )
        with submitter.telemetry.gate_wait(kind), deadline:
            self._permit = await submitter.gate.acquire(
                probe=submitter.probe, priority=self._priority
            )
        if self._permit is None:
            raise NotSentInTime("the gate did not admit it before its send-by deadline")
        self._phase = _Phase.RESERVED
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Settle whatever is still open (see the class docstring)."""
        if self._phase is _Phase.RESERVED:
            await self._settle(_Phase.SETTLED, "discard")
        elif self._phase in (_Phase.SENT, _Phase.UNKNOWN):
            assert self.tag is not None
            # Whatever its request created, it created before now: the probe settles from here.
            await self._settle(_Phase.SETTLED, "orphan", self.tag, time.time())
            logger.info("submission %s: outcome unknown, its slot waits for the probe", self.tag)

    # -- the transitions (only the Submitter makes them) -------------------------------------
    def _sending(self, tag: str, not_after: float | None = None) -> float:
        if self._phase is not _Phase.RESERVED:
            raise RuntimeError(f"this reservation is {self._phase.value}, not open")
        if not_after is not None and time.time() >= not_after:
            raise NotSentInTime(f"submission {tag} was not sent: its send-by deadline passed")
        self.tag, self.sent_at = tag, time.time()
        self._phase = _Phase.SENT
        return self.sent_at

    async def _settle(self, phase: _Phase, verb: str, *args: Any) -> None:
        assert self._permit is not None
        self._phase = phase
        with anyio.CancelScope(shield=True):
            await getattr(self._permit, verb)(*args)


def _cost_nothing(exc: BaseException) -> bool:
    return isinstance(exc, APIConnectionError) and not exc.request_sent


class _Look(enum.Enum):
    ABSENT = "absent"  # read successfully, settled: nothing was created
    NOT_YET = "not yet"  # read successfully, but the service may not list it yet
    UNREADABLE = "unreadable"  # the list could not be read: nothing is known


@attrs.define
class Submitter:
    """Sends submissions for one account by the protocol of this module.

    :param transport: sends the POST.
    :param gate: the account's gate.
    :param list_page: reads one page of the list (one try).
    :param read_generation: reads one generation (with the client's retries), for the probe.
    :param limits: the account's limits (``settle_time``, ``generation_timeout``).
    """

    transport: Transport
    gate: AccountGate
    list_page: Lister
    read_generation: Callable[[str], Awaitable[Generation]]
    limits: Limits
    max_retries: int
    backoff: tuple[float, float]
    telemetry: Telemetry = attrs.field(factory=Telemetry)

    def reserve(
        self, priority: Priority = Priority.INTERACTIVE, not_after: float | None = None
    ) -> Reservation:
        """A reservation to enter with ``async with`` (given up at ``not_after``)."""
        return Reservation(self, Priority(priority), not_after)

    # -- submit --------------------------------------------------------------------------------
    async def submit(
        self,
        request: Request,
        *,
        reservation: Reservation | None = None,
        recover_since: float | None = None,
        priority: Priority = Priority.INTERACTIVE,
        raise_rate_limited: bool = False,
        not_after: float | None = None,
    ) -> Submission:
        """Send ``request`` until it created a generation (once), or raise.

        :param reservation: an open reservation to send the first try through.
        :param recover_since: an earlier call with the same tag may have been sent since
            this Unix time: look for what it created first (holding the slot meanwhile).
        :param raise_rate_limited: raise a ``RATE_LIMIT_ERROR`` (nothing was created)
            instead of waiting for the window in the gate, e.g. to hand the job to another
            account.
        :param not_after: Unix time after which no try is sent (:class:`NotSentInTime`;
            a try sent before it is followed to its outcome as usual).
        """
        if reservation is not None and not reservation.open:
            raise RuntimeError("submit() needs an open reservation (inside its async with)")
        if reservation is not None and reservation._submitter.gate is not self.gate:
            raise ValueError("this reservation belongs to another account's gate")
        if recover_since is not None:
            found = await self._recover(request, recover_since, reservation, priority)
            if found is not None:
                return found
            reservation = None
        waits = wait_times(*self.backoff)
        next(waits)
        attempt = 0
        while True:
            current = reservation or self.reserve(priority, not_after)
            if reservation is None:
                async with current:
                    result = await self._attempt(current, request, not_after)
            else:
                reservation = None
                result = await self._attempt(current, request, not_after)
            if isinstance(result, Submission):
                return result
            attempt += 1
            if not _worth_retrying(result) or attempt > self.max_retries:
                raise result
            if isinstance(result, RateLimitError):
                if raise_rate_limited and not isinstance(result, ConcurrencyLimitError):
                    raise result
                # No pause: the gate now knows why, and waits for the window or the slot.
                logger.info("submission %s: %s; waiting in the gate", request.tag, result.code)
                continue
            await _pause(waits.send(result), result)
            logger.info(
                "retrying submission %s (attempt %d) after %s", request.tag, attempt + 1, result
            )

    async def _attempt(
        self, reservation: Reservation, request: Request, not_after: float | None = None
    ) -> Submission | AsyncSDKError:
        """One send through ``reservation``; the submission, or why nothing was created."""
        sent_at = reservation._sending(request.tag, not_after)
        try:
            response = await self.transport.request("POST", request.path, json_body=request.body)
            submission = response.parse(Submission)
        except APIConnectionError as exc:
            if not exc.request_sent:  # provably never left: costs no window place
                await reservation._settle(_Phase.SETTLED, "discard")
                return exc
            cause: AsyncSDKError = exc
        except APIResponseValidationError as exc:
            cause = exc
        except ConcurrencyLimitError as exc:
            self.telemetry.rate_limited("concurrent")
            await self._something_runs(reservation, exc)
            return exc
        except RateLimitError as exc:
            self.telemetry.rate_limited("rate")
            hint = exc.rate_limit if _has_hint(exc.rate_limit) else _WINDOW_FULL
            await reservation._settle(_Phase.SETTLED, "answered", None, hint)
            return exc
        except ServerError as exc:
            if exc.code in NOTHING_CREATED_CODES:
                await reservation._settle(_Phase.SETTLED, "answered", None, exc.rate_limit)
                return exc
            cause = exc
        except APIError as exc:  # 4xx: refused, nothing created
            await reservation._settle(_Phase.SETTLED, "answered", None, exc.rate_limit)
            raise
        else:
            await reservation._settle(
                _Phase.SETTLED, "answered", submission.generation_id, response.rate_limit
            )
            return attrs.evolve(submission, tag=request.tag)
        # Sent, and no readable answer: the outcome is unknown. Whatever the service created,
        # it created before now: the settle time counts from here.
        logger.info("submission %s: no readable answer (%s); looking for it", request.tag, cause)
        found = await self._settle_unknown(reservation, request, sent_at, cause, sent_at)
        return cause if found is None else found

    async def _recover(
        self,
        request: Request,
        since: float,
        reservation: Reservation | None,
        priority: Priority,
    ) -> Submission | None:
        """Settle what an earlier call with this tag did, before sending anything."""
        current = reservation or self.reserve(priority)
        if reservation is None:
            await current.__aenter__()
        try:
            # Any earlier send happened before now: the look settles from here.
            sent_at = current._sending(request.tag)
            return await self._settle_unknown(current, request, sent_at, None, since)
        finally:
            await current.close()

    async def _settle_unknown(
        self,
        reservation: Reservation,
        request: Request,
        sent_at: float,
        cause: AsyncSDKError | None,
        since: float,
    ) -> Submission | None:
        """The outcome is unknown: hold the slot under the tag while looking; then adopt
        what was found (``Submission``), or free the slot (``None``: nothing was created).
        Whatever the service created, it created before now: the settle time counts from
        here. :class:`SubmissionUnknownError` leaves the reservation unknown (an orphan)."""
        unknown_at = time.time()
        await reservation._settle(_Phase.UNKNOWN, "unanswered", request.tag, unknown_at)
        found = await self._resolve(request, sent_at, cause, since=since, unknown_at=unknown_at)
        if found is None:
            await reservation._settle(_Phase.SETTLED, "abandon")
            return None
        if found.status.is_terminal:  # it has ended already: it holds no slot
            await reservation._settle(_Phase.SETTLED, "abandon")
        else:
            await reservation._settle(_Phase.SETTLED, "adopt", found.generation_id)
        return self._adopted(found, request)

    def _adopted(self, found: Generation, request: Request) -> Submission:
        if request.idempotency_key is not None and found.prompt not in (None, request.prompt):
            raise ValueError(
                f"idempotency key {request.idempotency_key!r} was used before for another "
                f"prompt (generation {found.generation_id}); use a new key for a new request"
            )
        logger.info("submission %s: adopted generation %s", request.tag, found.generation_id)
        return Submission(
            found.generation_id,
            found.status,
            found.credit_cost,
            request_id=found.request_id,
            tag=request.tag,
        )

    async def _something_runs(self, reservation: Reservation, exc: ConcurrencyLimitError) -> None:
        """A generation runs that no hold knows: keep the slot for it and find it now."""
        if _has_hint(exc.rate_limit):
            self.gate.note_rate_limit(exc.rate_limit, submission=True)  # type: ignore[arg-type]
        await reservation._settle(_Phase.SETTLED, "orphan", None, time.time())
        with anyio.move_on_after(self.transport_timeout):
            await self.probe([h for h in self.gate.holders() if h.orphan and h.tag is None])

    @property
    def transport_timeout(self) -> float:
        return self.transport.timeout

    # -- unknown outcomes ----------------------------------------------------------------------
    async def reconcile(
        self, tag: str, *, sent_at: float, since: float | None = None
    ) -> Submission | None:
        """What the submission ``tag`` sent at ``sent_at`` created (see :meth:`_resolve`);
        ``since``: it may have been sent as early as that (default ``sent_at``)."""
        request = Request("", {"name": tag, "prompt": ""})
        found = await self._resolve(request, sent_at, None, since=since)
        return None if found is None else self._adopted(found, Request("", {"name": tag}))

    async def _resolve(
        self,
        request: Request,
        sent_at: float,
        cause: AsyncSDKError | None,
        *,
        since: float | None = None,
        unknown_at: float | None = None,
    ) -> Generation | None:
        """Look for the generation ``request`` may have created: it, or ``None`` once the
        list, read successfully at least ``settle_time`` after the outcome became unknown
        (``unknown_at``, default ``sent_at``), does not show it; :class:`SubmissionUnknownError`
        when the caller's deadline (or the service's own) comes first. The list is read back
        to ``since`` (default ``sent_at``)."""
        base = sent_at if unknown_at is None else unknown_at
        settled_at = base + self.limits.settle_time
        # Past the service's deadline any generation it created has ended: waiting longer
        # cannot change what the caller may do, so say what is known. One complete look is
        # always made (a rerun long after the send settles with it).
        limits = self.limits
        backstop = base + limits.generation_timeout + limits.margin + limits.settle_time
        caller_deadline = anyio.current_effective_deadline()
        deadline = min(caller_deadline, anyio.current_time() + max(backstop - time.time(), 0.0))
        waits = wait_times(*self.backoff)
        next(waits)
        since = sent_at if since is None else since
        last: _Look | Generation = _Look.UNREADABLE
        while True:
            remaining = caller_deadline - anyio.current_time()
            # Stop looking a little before the caller's deadline, to say why.
            with anyio.move_on_after(max(remaining - min(0.05, remaining / 10), 0.0)):
                last = await self._look(request.tag, since, settled_at)
            if isinstance(last, Generation):
                return last
            if last is _Look.ABSENT:
                logger.info("submission %s created nothing (the list has settled)", request.tag)
                return None
            pause = waits.send(None)
            if last is _Look.NOT_YET:
                pause = min(pause, max(settled_at - time.time(), 0.0) + 0.01)
            if anyio.current_time() + pause >= deadline:
                reason = (
                    "the list could not be read"
                    if last is _Look.UNREADABLE
                    else ("the list did not show it, and had not settled")
                )
                raise SubmissionUnknownError(
                    request.tag, sent_at, request.prompt, reason
                ) from cause
            await anyio.sleep(pause)

    async def _look(self, tag: str, since: float, settled_at: float) -> Generation | _Look:
        """One complete look through the list, newest first, back to ``since``."""
        started = time.time()
        try:
            found = await self.find(tag, since=since)
        except AsyncSDKError as exc:
            if not is_retryable(exc):
                raise
            logger.debug("looking for %s: %s", tag, exc)
            return _Look.UNREADABLE
        if found is not None:
            return found
        return _Look.ABSENT if started >= settled_at else _Look.NOT_YET

    async def find(self, tag: str, *, since: float) -> Generation | None:
        """The generation named ``tag`` created since Unix time ``since``, or ``None`` after
        a complete read of the list back to then. Raises what the list answers."""
        horizon = since - CLOCK_SKEW
        offset = 0
        while True:
            page = await self.list_page(limit=_PAGE, offset=offset)
            for generation in page.generations:
                if generation.name == tag:
                    return generation
            offset += len(page.generations)
            oldest = page.generations[-1].created_at if page.generations else None
            if (
                not page.generations
                or offset >= page.total
                or (oldest is not None and oldest.timestamp() < horizon)
            ):
                return None

    # -- the probe -----------------------------------------------------------------------------
    async def probe(self, holders: Sequence[Holder]) -> None:
        """Resolve the holds nobody settles: unwatched generations are polled (a read that
        sees one ended frees it); orphans are looked up by tag, or, untagged, given one of
        the account's running generations. Failures leave them as they are."""
        try:
            for holder in holders:
                if holder.orphan:
                    await self._resolve_orphan(holder)
                elif holder.generation_id is not None and not holder.watched:
                    await self.read_generation(holder.generation_id)
        except AsyncSDKError as exc:
            logger.debug("probe of the slot holders failed: %s", exc)

    async def _resolve_orphan(self, holder: Holder) -> None:
        since = holder.since if holder.since is not None else time.time()
        settled_at = since + self.limits.settle_time
        if holder.tag is not None:
            look = await self._look(holder.tag, since, settled_at)
            if isinstance(look, Generation):
                ended = look.status.is_terminal
                await self.gate.resolve(holder.key, None if ended else look.generation_id)
            elif look is _Look.ABSENT:
                await self.gate.resolve(holder.key, None)
            return
        started = time.time()
        page = await self.list_page(limit=20, offset=0)
        held = {h.generation_id for h in self.gate.holders()}
        running = [
            g.generation_id
            for g in page.generations
            if not g.status.is_terminal and g.generation_id not in held
        ]
        if running:
            await self.gate.resolve(holder.key, running[0])
        elif started >= settled_at:
            await self.gate.resolve(holder.key, None)


def _has_hint(info: RateLimitInfo | None) -> bool:
    return info is not None and (info.remaining is not None or info.retry_after is not None)


def _worth_retrying(exc: AsyncSDKError) -> bool:
    """A failed try after which nothing was created, and another may succeed."""
    return is_retryable(exc) or isinstance(exc, ConcurrencyLimitError) or _cost_nothing(exc)


async def _pause(seconds: float, error: AsyncSDKError) -> None:
    """Sleep before a retry, or raise ``error`` now if the caller's deadline ends first."""
    if anyio.current_time() + seconds > anyio.current_effective_deadline():
        raise error
    await anyio.sleep(seconds)
