"""``RedisGate``: the per-account gate of :mod:`asyncsdk._limits`, held in Redis.

Same guarantees as :class:`~asyncsdk._limits.LocalGate`, across processes and hosts: never more
than ``Limits.submissions`` submissions in any ``Limits.window`` for an account, never more than
``Limits.concurrent`` generations in progress. Every decision is one Lua script (the ``*.lua``
files of this package, see :mod:`asyncsdk._redis._scripts`), run atomically by Redis on *its*
clock (``TIME``, in milliseconds), so hosts whose clocks disagree still agree on the window;
the client never reads, decides and then writes.

Keys (all of one account share the hash tag ``{h}``, so they live in one cluster slot; ``h`` is
a SHA-256 of the account key, itself already a hash, so no API key ever reaches Redis)::

    <ns>:{h}:window   ZSET  permit -> when its window entry expires (+inf while in flight)
    <ns>:{h}:slots    ZSET  lease  -> when the lease expires (the slot frees)
    <ns>:{h}:leases   HASH  lease  -> {"g": generation id or "", "c": cap (never renewed past),
                                       "a": 1 while admitted and not yet settled,
                                       "w": watched by its holder, "f": fixed (not renewed),
                                       "o": orphaned (nobody settles it; the probe resolves it),
                                       "t": the orphan's tag, "s": when it was sent (Unix ms)}
    <ns>:{h}:queue    ZSET  waiter -> its ticket (interactive), or ticket + 2^40 (batch)
    <ns>:{h}:beats    ZSET  waiter -> when its heartbeat expires
    <ns>:{h}:seq      STR   ticket and phantom counter
    <ns>:{h}:conf     STR   the Limits every process on the account must share
    <ns>:{h}:streak   STR   interactive admissions in a row
    <ns>:{h}:events   pub/sub channel: "something freed up, look again"

Every script first prunes (expired window entries, expired leases, waiters whose heartbeat
stopped), then acts, then sets every key's TTL to ``lease_ttl + max(window, timeout) + margin``
(plus a second), so an account nobody uses leaves nothing behind.

**The window** is the one of :class:`~asyncsdk._limits.SubmissionWindow`: an entry per permit,
``+inf`` from admission until the answer, then ``answer + window + margin`` (the answer time is
Redis' time when the settling script runs, which is never earlier than the real answer). An
in-flight entry whose lease expired (its holder was killed) is settled at that moment: whatever
it sent has arrived by then. Server hints (``X-RateLimit-Remaining``) add phantom entries, as in
the local gate, inside the same script that settles the submission.

**The slot** is a lease. Admission creates it with the permit's id as its token and an expiry
``lease_ttl`` ahead; a background task of the holding process renews every lease it holds each
``lease_ttl / 3``, never past its cap: ``generation_timeout + margin`` after admission, then
after the answer. No lease is renewed forever, even one whose settlement never ran. A killed worker
stops renewing, so its slot frees within ``lease_ttl``. Tokens are random and never reused,
and every release is a compare-and-delete on the holder's own token, so a holder
whose lease expired can never release, renew or overwrite the lease of the next holder: when
its late answer comes, the generation it created is recorded as a *fixed* hold (not renewed,
freed when the generation is seen ending or at its cap), the way ``hold_foreign`` records a
generation started elsewhere. ``release_many(generation_ids)`` frees every hold of those
generations, whoever took it: any process that sees one end may say so. It runs one script for
all of them, and none when no hold can be theirs: a process knows the leases it holds, and
every script answers with the account's holders, so a read whose ended records hold nothing
(by a snapshot younger than ``probe_interval``) costs Redis nothing. A hold taken since by
another process is the probe's to free (below), as it would be if nobody here had read it. A
Redis failure there is logged, never raised: the read succeeded, and leases expire.

An orphaned hold (its submitter was gone while the outcome is unknown, or a generation the
service says runs that nobody here started) is offered, with its tag, to the head waiter's
probe in any process, and ``resolve(lease, generation)`` gives it the generation the probe
found or frees it.

**Lanes, fairness and waiting.** Waiters queue in Redis by ticket (``INCR``), in two lanes:
a batch waiter's score is its ticket plus ``2^40``, so interactive waiters come first, FIFO
within a lane; after :data:`~asyncsdk._limits.BATCH_EVERY` interactive admissions in a row
(``streak``) the oldest batch waiter is the head instead, so batch work is never starved. Only
the head is admitted, so processes are served in ticket order and one busy process cannot
starve the others. In each process one task per account and lane at a time (anyio's FIFO lock)
holds a ticket. Waiters keep a heartbeat, so a killed waiter leaves the queue within
``lease_ttl``. A script that changes the head, or frees something while a slot is free,
publishes the head's name on the account's channel, and only that waiter looks again (only the
head can be admitted; the others' tickets keep their place). A waiter sleeps until then, or
until a fallback timer computed by the script (when the window frees, when the first lease
expires, when the head's heartbeat runs out), never longer than a third of the heartbeat. A
cancelled waiter leaves the queue (and undoes an admission it did not live to see); a deadline
that ends before the window frees fails at once with ``RateLimitError``, as in the local gate.

**Connections.** Per event loop a gate uses one pub/sub connection, on which each account
with a waiter is subscribed (``SUBSCRIBE``/``UNSUBSCRIBE`` per channel), and at most
:data:`MAX_COMMANDS` connections for scripts (more callers queue, FIFO): 17 at most, whatever
the number of accounts, and never more than the client's ``max_connections`` (name them with
``from_url(url, client_name=...)`` to see them in ``CLIENT LIST``). An account's gate that has
been idle for :data:`IDLE_AFTER` seconds (no waiter, no lease held here, nothing watched) is
dropped from the registry and unsubscribed; a client still holding it keeps the same object,
which registers again on its next use, so there are never two gates of one account on a loop.

**Failures.** Any Redis error becomes :class:`RedisGateError` (an ``AsyncSDKError``) naming the
URL without its password: the gate never falls back to uncoordinated submissions. Scripts are
idempotent, so redis-py may resend one after a dropped connection. The one case no lease can
cover is a process stalled for longer than ``lease_ttl`` between admission and sending; the
service's 429, which the client handles, is the backstop there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import math
import secrets
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import attrs

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import MaxConnectionsError, RedisError
except ImportError as exc:  # pragma: no cover - tested in a subprocess without redis
    raise ImportError("RedisGate needs the redis extra: pip install 'asyncsdk[redis]'") from exc

from .._config import Limits
from .._errors import AsyncSDKError
from .._limits import (
    BATCH_EVERY,
    GateStatistics,
    Holder,
    Permit,
    Priority,
    Probe,
    capped_hint,
    check_deadline,
    resets_in_seconds,
    tally,
)
from ._scripts import SCRIPTS, AcquireReply, RenewReply, Reply, Snapshot, parse

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .._models import RateLimitInfo

__all__ = ["DEFAULT_NAMESPACE", "RedisAccountGate", "RedisGate", "RedisGateError"]

logger = logging.getLogger("asyncsdk")

DEFAULT_NAMESPACE: Final = "asyncsdk"
#: Longest lease when ``lease_ttl`` is not given (shorter when the generation timeout is).
DEFAULT_LEASE_TTL: Final = 10.0
DEFAULT_PROBE_INTERVAL: Final = 1.0
#: Scripts in flight at once per event loop (each on its own connection); more callers queue.
MAX_COMMANDS: Final = 16
#: Seconds an account's gate stays registered (and subscribed) after its last use.
IDLE_AFTER: Final = 5.0
#: Options of a client made by ``RedisGate.from_url``: fail within seconds, not minutes.
_CLIENT_DEFAULTS: Final[dict[str, Any]] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
}
#: Added to a computed wake-up, so that the waiter does not wake just before the change.
_EPSILON: Final = 0.002
#: Longest wait for Redis to confirm a subscription before the first look (the fallback
#: timers cover a message missed meanwhile).
_CONFIRM_WAIT: Final = 1.0
_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
_KEY_NAMES: Final = ("window", "slots", "leases", "queue", "beats", "seq", "conf", "streak")
#: Statuses after which a waiter of this process looks again at once.
_FREEING: Final = frozenset({"free", "dropped", "released", "left", "resolved"})
_IS_DOWN: Final = "check that Redis is up and reachable"
_POOL_EXHAUSTED: Final = (
    "the Redis client's connection pool is exhausted (Redis itself may be fine): give the "
    "client more connections (max_connections) or share it with fewer users"
)


class RedisGateError(AsyncSDKError):
    """Redis, which holds the gate, is unreachable or failing: nothing was submitted.

    :ivar url: the Redis URL, without its password.
    :ivar reason: what went wrong.
    :ivar advice: what to check.
    """

    def __init__(self, url: str, reason: str, advice: str = _IS_DOWN) -> None:
        self.url = url
        self.reason = reason
        self.advice = advice
        super().__init__(
            f"the Redis gate at {url} failed ({reason}); no submission is sent without it: {advice}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.reason, self.advice))


def _gate_error(url: str, exc: BaseException) -> RedisGateError:
    advice = _POOL_EXHAUSTED if isinstance(exc, MaxConnectionsError) else _IS_DOWN
    return RedisGateError(url, f"{type(exc).__name__}: {exc}", advice)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redact_url(url: str) -> str:
    """``url`` without its password (and without a query, which may carry one).

    >>> redact_url("redis://user:secret@cache:6380/2?password=x")
    'redis://user:***@cache:6380/2'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    user = ""
    if parts.username or parts.password:
        user = (parts.username or "") + (":***" if parts.password else "") + "@"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _describe(client: aioredis.Redis) -> str:
    """A URL-like name for a client the caller made (never its password)."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded up (float noise such as ``0.1 + 0.2`` is not a millisecond)."""
    return math.ceil(round(seconds * 1000, 6))


def limits_fingerprint(limits: Limits) -> str:
    """What every process on an account must agree on, in whole microseconds, so that equal
    :class:`~asyncsdk.Limits` give equal text whatever their number types.

    >>> limits_fingerprint(Limits(window=60)) == limits_fingerprint(Limits(window=60.0))
    True
    >>> limits_fingerprint(Limits(window=0.1 + 0.2)) == limits_fingerprint(Limits(window=0.3))
    True
    """

    def us(seconds: float) -> str:
        return f"{round(seconds * 1_000_000)}us"

    return (
        f"submissions={limits.submissions:g} window={us(limits.window)} "
        f"concurrent={limits.concurrent:g} generation_timeout={us(limits.generation_timeout)} "
        f"margin={us(limits.margin)}"
    )


class RedisGate:
    """A :class:`~asyncsdk.Gate` whose limits live in Redis, shared by every process using it.

    >>> gate = RedisGate.from_url("redis://localhost:6379/0")
    >>> async def main() -> None:                                   # doctest: +SKIP
    ...     async with gate, AsyncClient(gate=gate) as client:
    ...         await client.generate("google/nano-banana", "a red kite at dawn")

    :param client: a ``redis.asyncio.Redis`` to use (it is not closed by the gate); or use
        :meth:`from_url`, which makes one per event loop and closes it.
    :param namespace: the prefix of every key; separate deployments by it.
    :param lease_ttl: seconds a killed process may keep a slot; renewed every third of it
        while the holder lives. Default: 10 s, or the generation timeout when shorter.
    :param probe_interval: how often the head waiter polls slot holders nobody watches.

    Every process on an account must use the same :class:`~asyncsdk.Limits`. A gate uses at
    most 17 Redis connections per event loop, whatever the number of accounts (one for
    pub/sub, :data:`MAX_COMMANDS` for scripts). Close the gate with ``await gate.aclose()``
    (or ``async with gate``) when done; leases still held then expire within ``lease_ttl``.
    """

    def __init__(
        self,
        client: aioredis.Redis | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        lease_ttl: float | None = None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        _url: str | None = None,
        _options: dict[str, Any] | None = None,
    ) -> None:
        if client is None and _url is None:
            raise TypeError("pass a redis.asyncio.Redis client, or use RedisGate.from_url(url)")
        if not namespace or any(c in namespace for c in "{} "):
            raise ValueError(
                f"namespace must be non-empty, without braces or spaces: {namespace!r}"
            )
        if lease_ttl is not None and not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0, got {lease_ttl!r}")
        if not probe_interval > 0:
            raise ValueError(f"probe_interval must be > 0, got {probe_interval!r}")
        self.namespace = namespace
        self.lease_ttl = lease_ttl
        self.probe_interval = probe_interval
        self._client = client
        self._url = _url
        self._options = _options or {}
        #: The URL without its password, as error messages show it.
        self.url = _describe(client) if client is not None else redact_url(_url or "")
        self._runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Runtime] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        lease_ttl: float | None = None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        **redis_options: Any,
    ) -> RedisGate:
        """A gate on the Redis at ``url`` (``redis://[:password@]host[:port][/db]``,
        ``rediss://`` or ``unix://``); ``redis_options`` go to ``redis.asyncio.from_url``
        (e.g. ``client_name="worker-3"``, which names the gate's connections in Redis).

        Nothing connects until the first use, inside the event loop that uses it.
        """
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix://, got {redact_url(url)!r}"
            )
        options = {
            **_CLIENT_DEFAULTS,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
            **redis_options,
        }
        return cls(
            namespace=namespace,
            lease_ttl=lease_ttl,
            probe_interval=probe_interval,
            _url=url,
            _options=options,
        )

    def __repr__(self) -> str:
        return f"<RedisGate {self.url} namespace={self.namespace!r}>"

    def account(self, account_key: str, limits: Limits) -> RedisAccountGate:
        """The gate of ``account_key`` on this event loop (one per account, shared)."""
        return self._runtime().account(self, account_key, limits)

    def _runtime(self) -> _Runtime:
        loop = asyncio.get_running_loop()
        runtime = self._runtimes.get(loop)
        if runtime is None or runtime.closed:
            if self._client is not None:
                client, owned = self._client, False
            else:
                assert self._url is not None
                client, owned = aioredis.Redis.from_url(self._url, **self._options), True
            runtime = self._runtimes[loop] = _Runtime(self.url, client, owned=owned)
        return runtime

    async def ping(self) -> None:
        """Check that Redis answers; :class:`RedisGateError` if not."""
        runtime = self._runtime()
        try:
            async with runtime.commands:
                await runtime.client.ping()
        except _REDIS_ERRORS as exc:
            raise _gate_error(self.url, exc) from exc

    async def aclose(self) -> None:
        """Stop renewing and listening on this event loop; close the client made by
        :meth:`from_url`. Leases still held expire within ``lease_ttl``."""
        runtime = self._runtimes.pop(asyncio.get_running_loop(), None)
        if runtime is not None:
            await runtime.aclose()

    async def __aenter__(self) -> RedisGate:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Runtime:
    """What a RedisGate keeps per event loop: the client, its scripts, the registry of account
    gates, the one pub/sub connection and its listener, and one background task whose task
    group hosts the renewers and the listener, evicts idle gates, and closes them (and an
    owned client) when cancelled (``aclose()``, or the loop shutting down)."""

    def __init__(self, url: str, client: aioredis.Redis, *, owned: bool) -> None:
        self.url = url
        self.client = client
        self.owned = owned
        self.scripts = {name: client.register_script(source) for name, source in SCRIPTS.items()}
        #: Scripts run, by name (what the benchmarks report).
        self.calls: collections.Counter[str] = collections.Counter()
        pool_size = getattr(client.connection_pool, "max_connections", None)
        slots = MAX_COMMANDS
        if isinstance(pool_size, int):  # one connection stays free for pub/sub
            slots = max(1, min(MAX_COMMANDS, pool_size - 1))
        self.commands = anyio.Semaphore(slots)
        #: Gates in use; idle ones rest in ``_resting`` for as long as someone holds them.
        self.accounts: dict[str, RedisAccountGate] = {}
        self._resting: weakref.WeakValueDictionary[str, RedisAccountGate] = (
            weakref.WeakValueDictionary()
        )
        self._pubsub: Any = None
        self._pubsub_lock = anyio.Lock()
        self._channels: dict[str, RedisAccountGate] = {}  # subscribed
        self._confirmed: dict[str, anyio.Event] = {}
        self._listening = False
        self.closed = False
        self._tg: TaskGroup | None = None
        self._ready = anyio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name="asyncsdk-redis-gate"
        )

    # -- the registry ------------------------------------------------------------------------
    def account(self, owner: RedisGate, account_key: str, limits: Limits) -> RedisAccountGate:
        gate = self.accounts.get(account_key) or self._resting.get(account_key)
        if gate is None:
            gate = RedisAccountGate(owner, self, account_key, limits)
        elif gate.limits != limits:
            raise ValueError(
                f"this account is already used in this process with {gate.limits!r}; "
                f"a client cannot use it with different limits ({limits!r})"
            )
        gate._activate()
        return gate

    def activate(self, gate: RedisAccountGate) -> None:
        """``gate`` is in use: keep it registered (again)."""
        key = gate.account_key
        if self.accounts.get(key) is not gate:
            assert self.accounts.get(key) is None, "two gates of one account on one loop"
            self.accounts[key] = gate
            self._resting.pop(key, None)

    async def evict_idle(self, idle_for: float = IDLE_AFTER) -> int:
        """Forget the gates idle for ``idle_for`` seconds (a client holding one keeps it) and
        unsubscribe their channels; how many were evicted."""
        now = time.monotonic()
        idle = [g for g in self.accounts.values() if g.idle and now - g.last_used >= idle_for]
        channels = []
        for gate in idle:
            del self.accounts[gate.account_key]
            self._resting[gate.account_key] = gate
            if self._channels.pop(gate.channel, None) is not None:
                channels.append(gate.channel)
                self._confirmed.pop(gate.channel, None)
        if channels and self._pubsub is not None:
            try:
                async with self._pubsub_lock:
                    await self._pubsub.unsubscribe(*channels)
            except _REDIS_ERRORS as exc:  # resubscribed on reconnect at worst: harmless
                logger.debug("could not unsubscribe %d idle accounts: %s", len(channels), exc)
        return len(idle)

    # -- pub/sub -----------------------------------------------------------------------------
    async def listen(self, gate: RedisAccountGate) -> None:
        """Subscribe ``gate`` to its account's channel on the one pub/sub connection (before
        its first look, so that no news is missed), unless it is already."""
        channel = gate.channel
        confirmed = self._confirmed.get(channel)
        if confirmed is None:
            confirmed = self._confirmed[channel] = anyio.Event()
            self._channels[channel] = gate
            try:
                async with self._pubsub_lock:
                    if self._pubsub is None:
                        self._pubsub = self.client.pubsub()
                    await self._pubsub.subscribe(channel)
            except _REDIS_ERRORS as exc:
                if self._confirmed.get(channel) is confirmed:
                    del self._confirmed[channel]
                    self._channels.pop(channel, None)
                raise _gate_error(self.url, exc) from exc
            if not self._listening:
                self._listening = True
                (await self.task_group()).start_soon(self._listen, self._pubsub)
        if not confirmed.is_set():
            with anyio.move_on_after(_CONFIRM_WAIT):
                await confirmed.wait()

    async def _listen(self, pubsub: Any) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=None)
                except Exception as exc:  # the waiters' own calls report the failure
                    logger.debug("gate listener on %s: %s; retrying in %.2fs", self.url, exc, delay)
                    for gate in list(self._channels.values()):
                        gate._notify()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                delay = 0.05
                if not message:
                    continue
                channel = _text(message.get("channel"))
                if message.get("type") == "message":  # the data: who is the head now
                    listener = self._channels.get(channel)
                    if listener is not None:
                        listener._notify(_text(message.get("data")))
                elif message.get("type") == "subscribe":
                    confirmed = self._confirmed.get(channel)
                    if confirmed is not None:
                        confirmed.set()
        finally:
            self._listening = False
            self._pubsub = None
            self._channels.clear()
            self._confirmed.clear()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- lifecycle ---------------------------------------------------------------------------
    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ready.set()
                while True:
                    await anyio.sleep(IDLE_AFTER)
                    await self.evict_idle()
        finally:
            self.closed = True
            self._tg = None
            if self.owned:
                with anyio.CancelScope(shield=True):
                    await self.client.aclose()

    async def task_group(self) -> TaskGroup:
        if not self.closed:
            await self._ready.wait()
        if self._tg is None:
            raise RuntimeError("this RedisGate is closed")
        return self._tg

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.wait({self._task})


class RedisAccountGate:
    """One account's gate in Redis: implements :class:`~asyncsdk.AccountGate`.

    ``statistics()`` is the latest snapshot the gate learned (every script answers with one);
    ``await fetch_statistics()`` asks Redis. ``waiting`` counts this process's waiting tasks
    and the other processes' tickets in Redis.
    """

    def __init__(
        self, owner: RedisGate, runtime: _Runtime, account_key: str, limits: Limits
    ) -> None:
        self.limits = limits
        self.url = owner.url
        #: The SDK's account key (a hash of the API key; never sent to Redis as such).
        self.account_key = account_key
        self.lease_ttl = (
            owner.lease_ttl
            if owner.lease_ttl is not None
            else min(DEFAULT_LEASE_TTL, limits.generation_timeout)
        )
        self.probe_interval = owner.probe_interval
        self._runtime = runtime
        digest = hashlib.sha256(account_key.encode()).hexdigest()[:32]
        prefix = f"{owner.namespace}:{{{digest}}}"
        self.keys = tuple(f"{prefix}:{name}" for name in _KEY_NAMES)
        self.channel = f"{prefix}:events"
        retention = (
            self.lease_ttl + max(limits.window, limits.generation_timeout) + limits.margin + 1.0
        )
        self._common: tuple[str | int, ...] = (
            self.channel,
            limits.submissions,
            _ms(limits.window),
            _ms(limits.margin),
            limits.concurrent,
            _ms(limits.generation_timeout),
            _ms(self.lease_ttl),
            _ms(retention),
            BATCH_EVERY,
        )
        self._fingerprint = limits_fingerprint(limits)
        self._held: dict[str, str | None] = {}  # our renewed leases -> their generation ids
        self._watched: collections.Counter[str] = collections.Counter()
        self._reads_paused_until = -math.inf
        self._pending_resync: tuple[str, str] | None = None
        self._waiting = 0
        self._queued = 0  # this process's tickets in Redis (one per lane at most)
        self._turnstiles = {lane: anyio.Lock() for lane in Priority}
        self._wakers: dict[str, anyio.Event] = {}  # this process's waiters in Redis
        self._renewing = False
        self._renew_soon: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._last = Snapshot()
        self._last_at = -math.inf  # when the last reply came (monotonic)
        #: When this gate was last used (monotonic): idle gates are evicted after a while.
        self.last_used = time.monotonic()

    def __repr__(self) -> str:
        return f"<RedisAccountGate {self.url} {self.statistics()}>"

    @property
    def idle(self) -> bool:
        """Nobody waits here, this process holds no lease and watches nothing: the gate can
        be forgotten (its state is in Redis)."""
        return (
            not self._waiting
            and not self._held
            and not self._watched
            and self._pending_resync is None
            and time.monotonic() >= self._reads_paused_until
        )

    def _activate(self) -> None:
        self.last_used = time.monotonic()
        self._runtime.activate(self)

    # -- talking to Redis --------------------------------------------------------------------
    async def _run(self, script: str, *args: str | int) -> Reply:
        self.last_used = time.monotonic()
        runtime = self._runtime
        runtime.calls[script] += 1
        try:
            async with runtime.commands:
                raw = await runtime.scripts[script](keys=self.keys, args=(*self._common, *args))
        except _REDIS_ERRORS as exc:
            raise _gate_error(self.url, exc) from exc
        reply = parse(script, raw)
        self._last = reply.snapshot
        self._last_at = time.monotonic()
        if reply.status in _FREEING and reply.snapshot.in_progress < self.limits.concurrent:
            # wake the head, if it waits here, without the pub/sub round trip
            self._notify(reply.snapshot.head)
        return reply

    def _notify(self, head: str | None = None) -> None:
        """Wake the waiter ``head`` if it waits here (every waiter here: ``None``)."""
        if head is None:
            for waker in self._wakers.values():
                waker.set()
        elif (event := self._wakers.get(head)) is not None:
            event.set()

    # -- the slot ----------------------------------------------------------------------------
    def _hold(self, member: str, generation_id: str | None = None) -> None:
        self._held[member] = generation_id
        self._activate()
        if not self._renewing and self._tg is not None:
            self._renewing = True
            self._tg.start_soon(self._renew)

    async def _renew(self) -> None:
        """Extend this process's leases every third of their TTL while it holds any."""
        try:
            while self._held:
                soon = self._renew_soon = anyio.Event()
                with anyio.move_on_after(self.lease_ttl / 3):
                    await soon.wait()
                if not self._held:
                    break
                pairs = [
                    str(x)
                    for member, gid in self._held.items()
                    for x in (member, int(gid is not None and gid in self._watched))
                ]
                try:
                    reply = await self._run("renew", *pairs)
                except Exception as exc:  # keep renewing: the lease outlives short outages
                    logger.warning("could not renew slot leases: %s", exc)
                    continue
                assert isinstance(reply, RenewReply)
                for member in reply.lost:
                    self._held.pop(member, None)
        finally:
            self._renewing = False

    async def release(self, generation_id: str) -> None:
        await self.release_many((generation_id,))

    async def release_many(self, generation_ids: Iterable[str]) -> None:
        """The SDK saw these generations end: free their holds, in one script, or in none
        when no hold can be theirs (see the module docstring). Never raises for Redis."""
        ended = set(generation_ids)
        mine = [member for member, gid in self._held.items() if gid in ended]
        for member in mine:
            del self._held[member]
        if time.monotonic() - self._last_at < self.probe_interval:
            ended &= {h.generation_id for h in self._last.holders}
        if not ended:
            return
        try:
            await self._run("release", *sorted(ended))
        except RedisGateError as exc:  # the read succeeded; the leases expire anyway
            logger.warning("could not free the slots of %d ended generations: %s", len(ended), exc)

    async def hold_foreign(self, generation_id: str) -> None:
        await self._run("hold_foreign", generation_id, "foreign." + secrets.token_hex(8))

    async def resolve(self, key: str, generation_id: str | None) -> None:
        if generation_id is None:
            self._held.pop(key, None)
        elif key in self._held:
            self._held[key] = generation_id
        await self._run("resolve", key, generation_id or "")

    def holders(self) -> list[Holder]:
        return [
            attrs.evolve(h, watched=self._is_watched(h.generation_id, h.watched))
            if h.generation_id is not None
            else h
            for h in self._last.holders
        ]

    def watching(self, generation_id: str) -> contextlib.AbstractContextManager[None]:
        # Other processes learn it with the renewal of the lease (``w``), which a lease held
        # here gets at once: their head waiters then leave it to this watch, not their probe.
        self._activate()
        if self._renew_soon is not None and generation_id in self._held.values():
            self._renew_soon.set()
        return tally(self._watched, generation_id)

    # -- admission ---------------------------------------------------------------------------
    async def acquire(
        self, *, probe: Probe | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Permit:
        lane = Priority(priority)
        self._activate()
        self._waiting += 1
        try:
            async with self._turnstiles[lane]:  # FIFO per lane here; tickets across processes
                return await self._queue(probe, lane)
        finally:
            self._waiting -= 1
            self.last_used = time.monotonic()

    async def _queue(self, probe: Probe | None, lane: Priority) -> Permit:
        self._tg = await self._runtime.task_group()
        await self._runtime.listen(self)
        member = secrets.token_hex(8)
        ticket = ""
        heartbeat = _ms(self.lease_ttl)
        next_probe = anyio.current_time() + self.probe_interval
        admitted = queued = False
        try:
            while True:
                changed = self._wakers[member] = anyio.Event()
                try:
                    resync = self._pending_resync or ("", "")
                    self._pending_resync = None
                    reply = await self._run(
                        "acquire", member, ticket, heartbeat, self._fingerprint, *resync, lane.value
                    )
                    assert isinstance(reply, AcquireReply)
                    if reply.status == "ok":
                        admitted = True
                        self._hold(member)
                        return _RedisPermit(self, member)
                    if reply.status == "conflict":
                        raise ValueError(
                            f"other processes use this account through {self.url} with "
                            f"different limits ({reply.limits}); every process must use the "
                            f"same Limits (this one: {self._fingerprint})"
                        )
                    ticket = reply.ticket
                    if not queued:
                        queued = True
                        self._queued += 1
                    now = anyio.current_time()
                    wake = reply.wait_ms / 1000 if reply.wait_ms is not None else math.inf
                    if reply.status == "window":
                        check_deadline(self.limits, wake)
                    elif reply.status == "slot" and probe is not None:
                        if now >= next_probe:
                            unsettled = [
                                h
                                for h in self.holders()
                                if h.orphan or (h.generation_id is not None and not h.watched)
                            ]
                            next_probe = now + self.probe_interval
                            if unsettled:
                                await probe(unsettled)
                                next_probe = anyio.current_time() + self.probe_interval
                                continue  # look again at once: the probe may have freed one
                        wake = min(wake, next_probe - now)
                    with anyio.move_on_after(max(min(wake + _EPSILON, self.lease_ttl / 3), 0.0)):
                        await changed.wait()
                finally:
                    del self._wakers[member]
        finally:
            if queued:
                self._queued -= 1
            if not admitted:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._run("leave", member)
                    except RedisGateError as exc:  # its heartbeat runs out instead
                        logger.debug("could not leave the queue: %s", exc)

    def _is_watched(self, generation_id: str | None, watched_elsewhere: bool) -> bool:
        return watched_elsewhere or generation_id in self._watched

    def note_rate_limit(self, info: RateLimitInfo, *, submission: bool) -> None:
        if info.remaining is None:
            return
        resets_in = capped_hint(self.limits, resets_in_seconds(info))
        self._activate()
        if submission:
            # Applied by the next acquire, atomically with its decision.
            self._pending_resync = _resync_args(self.limits, info)
        elif info.remaining <= 0:
            pause = resets_in if resets_in is not None else self.limits.window
            self._reads_paused_until = max(self._reads_paused_until, time.monotonic() + pause)

    async def read_turn(self) -> None:
        # Reads are paced per process: their limit is not the account's submission window.
        wait = self._reads_paused_until - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)

    # -- statistics --------------------------------------------------------------------------
    def statistics(self) -> GateStatistics:
        last = self._last
        others = last.queued - self._queued
        return GateStatistics(
            waiting=self._waiting + max(others, 0),
            submissions_in_window=last.in_window,
            submission_limit=self.limits.submissions,
            in_progress=last.in_progress,
            holders=tuple(h.generation_id for h in last.holders),
            orphans=sum(h.orphan for h in last.holders),
        )

    async def fetch_statistics(self) -> GateStatistics:
        """The account's state as Redis has it now."""
        await self._run("stats")
        return self.statistics()


def _resync_args(limits: Limits, info: RateLimitInfo | None) -> tuple[str, str]:
    if info is None or info.remaining is None:
        return ("", "")
    resets_in = capped_hint(limits, resets_in_seconds(info))
    return (str(info.remaining), "" if resets_in is None else str(_ms(resets_in)))


@attrs.define
class _RedisPermit:
    gate: RedisAccountGate
    member: str

    async def answered(self, generation_id: str | None, rate_limit: RateLimitInfo | None) -> None:
        resync = _resync_args(self.gate.limits, rate_limit)
        if generation_id is None:
            self.gate._held.pop(self.member, None)
            await self.gate._run("settle", self.member, "none", "", "1", *resync)
        else:
            await self._take(generation_id, "1", resync)

    async def unanswered(self, tag: str, sent_at: float) -> None:
        await self._take(None, "1", ("", ""), tag=tag, since=sent_at)

    async def orphan(self, tag: str | None, since: float) -> None:
        await self._take(None, "2", ("", ""), orphan=True, tag=tag, since=since)

    async def adopt(self, generation_id: str) -> None:
        await self._take(generation_id, "0", ("", ""))

    async def abandon(self) -> None:
        self.gate._held.pop(self.member, None)
        await self.gate._run("drop", self.member, "0")

    async def discard(self) -> None:
        self.gate._held.pop(self.member, None)
        await self.gate._run("drop", self.member, "1")

    async def _take(
        self,
        generation_id: str | None,
        settle: str,
        resync: tuple[str, str],
        *,
        orphan: bool = False,
        tag: str | None = None,
        since: float | None = None,
    ) -> None:
        if self.member in self.gate._held:
            self.gate._held[self.member] = generation_id
        sent = "" if since is None else str(round(since * 1000))
        reply = await self.gate._run(
            "settle",
            self.member,
            "held",
            generation_id or "",
            settle,
            *resync,
            int(orphan),
            tag or "",
            sent,
        )
        if reply.status == "lost":
            self.gate._held.pop(self.member, None)
            logger.warning(
                "the slot lease of generation %s expired before its answer (was this process "
                "stalled for over %gs?); it is kept as a fixed hold",
                generation_id,
                self.gate.lease_ttl,
            )


# Tracebacks read `asyncsdk.RedisGateError` even before anyone asks the package for the name
# (its lazy `__getattr__` only runs on `asyncsdk.RedisGateError`).
for _public in (RedisGate, RedisGateError):
    _public.__module__ = "asyncsdk"
del _public
