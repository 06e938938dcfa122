"""``RedisGate``: the per-account gate of :mod:`asyncsdk._limits`, held in Redis.

Same guarantees as :class:`~asyncsdk._limits.LocalGate`, across processes and hosts: never more
than ``Limits.submissions`` submissions in any ``Limits.window`` for an account, never more than
``Limits.concurrent`` generations in progress. Every decision is one Lua script, run atomically
by Redis on *its* clock (``TIME``, in milliseconds), so hosts whose clocks disagree still agree
on the window; the client never reads, decides and then writes.

Keys (all of one account share the hash tag ``{h}``, so they live in one cluster slot; ``h`` is
a SHA-256 of the account key, itself already a hash, so no API key ever reaches Redis)::

    <ns>:{h}:window   ZSET  permit -> when its window entry expires (+inf while in flight)
    <ns>:{h}:slots    ZSET  lease  -> when the lease expires (the slot frees)
    <ns>:{h}:leases   HASH  lease  -> {"g": generation id or "", "c": cap (never renewed past),
                                       "a": 1 while admitted and not yet settled,
                                       "w": watched by its holder, "f": fixed (not renewed),
                                       "o": orphaned (nobody settles it; the probe resolves it),
                                       "t": the orphan's tag, "s": when it was sent (Unix ms)}
    <ns>:{h}:queue    ZSET  waiter -> ticket number (arrival order)
    <ns>:{h}:beats    ZSET  waiter -> when its heartbeat expires
    <ns>:{h}:seq      STR   ticket and phantom counter
    <ns>:{h}:conf     STR   the Limits every process on the account must share
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
generation started elsewhere. ``release(generation_id)`` frees every hold of that generation,
whoever took it: any process that sees it end may say so. An orphaned hold (its submitter was
gone while the outcome is unknown, or a generation the service says runs that nobody here
started) is offered, with its tag, to the head waiter's probe in any process, and
``resolve(lease, generation)`` gives it the generation the probe found or frees it.

**Fairness and waiting.** In each process one task per account at a time (anyio's FIFO lock)
takes a ticket (``INCR``) into the queue; only the queue's head is admitted, so processes are
served in ticket order and one busy process cannot starve the others. Waiters keep a heartbeat,
so a killed waiter leaves the queue within ``lease_ttl``. A waiter sleeps on a pub/sub channel
that every freeing script publishes to, with a fallback timer computed by the script (when the
window frees, when the first lease expires, when the head's heartbeat runs out), never longer
than a third of the heartbeat. A cancelled waiter leaves the queue (and undoes an admission it
did not live to see); a deadline that ends before the window frees fails at once with
``RateLimitError``, as in the local gate.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import anyio
import attrs

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - tested in a subprocess without redis
    raise ImportError("RedisGate needs the redis extra: pip install 'asyncsdk[redis]'") from exc

from ._config import Limits
from ._errors import AsyncSDKError
from ._limits import (
    GateStatistics,
    Holder,
    Permit,
    Priority,
    Probe,
    capped_hint,
    check_deadline,
    counting,
    resets_in_seconds,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._models import RateLimitInfo

__all__ = ["DEFAULT_NAMESPACE", "RedisAccountGate", "RedisGate", "RedisGateError"]

logger = logging.getLogger("asyncsdk")

DEFAULT_NAMESPACE: Final = "asyncsdk"
#: Longest lease when ``lease_ttl`` is not given (shorter when the generation timeout is).
DEFAULT_LEASE_TTL: Final = 10.0
DEFAULT_PROBE_INTERVAL: Final = 1.0
#: Options of a client made by ``RedisGate.from_url``: fail within seconds, not minutes.
_CLIENT_DEFAULTS: Final[dict[str, Any]] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 5.0,
}
#: Added to a computed wake-up, so that the waiter does not wake just before the change.
_EPSILON: Final = 0.002
_REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)
_KEY_NAMES: Final = ("window", "slots", "leases", "queue", "beats", "seq", "conf")


class RedisGateError(AsyncSDKError):
    """Redis, which holds the gate, is unreachable or failing: nothing was submitted.

    :ivar url: the Redis URL, without its password.
    :ivar reason: what went wrong.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"the Redis gate at {url} failed ({reason}); "
            "no submission is sent without it: check that Redis is up and reachable"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.url, self.reason))


# -- the scripts -----------------------------------------------------------------------------
# Every script gets the seven keys above and ARGV[1..8] = channel, limit, window, margin,
# concurrent, generation timeout, lease ttl, key retention (times in ms); its own ARGV follow.
# Each returns {status, a, b, entries in window, slots taken, queue length,
# {{lease, gid, watched, orphaned, tag, sent at ms}, ...}}.
_PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local WINDOW, SLOTS, LEASES, QUEUE, BEATS, SEQ, CONF =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local channel = ARGV[1]
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local concurrent = tonumber(ARGV[5])
local gen_timeout = tonumber(ARGV[6])
local lease_ttl = tonumber(ARGV[7])
local retention = tonumber(ARGV[8])
local changed = false

-- TIME is truncated to the millisecond: +1 keeps an entry live at least a full window.
local function settle_entry(member)
  local at = now + 1 + window + margin
  local score = redis.call('ZSCORE', WINDOW, member)
  if (not score) or score == 'inf' or tonumber(score) < at then
    redis.call('ZADD', WINDOW, at, member)
  end
end

local function read_lease(member)
  local raw = redis.call('HGET', LEASES, member)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function write_lease(member, lease, expires)
  redis.call('HSET', LEASES, member, cjson.encode(lease))
  redis.call('ZADD', SLOTS, expires, member)
end

local function drop_lease(member)
  if redis.call('ZREM', SLOTS, member) == 1 then changed = true end
  redis.call('HDEL', LEASES, member)
end

local function holder_of(gid)
  local all = redis.call('HGETALL', LEASES)
  for i = 1, #all, 2 do
    if cjson.decode(all[i + 1]).g == gid then return all[i] end
  end
  return nil
end

local function prune()
  local expired = redis.call('ZRANGEBYSCORE', SLOTS, '-inf', now)
  if #expired > 0 then
    for _, member in ipairs(expired) do
      redis.call('HDEL', LEASES, member)
    end
    redis.call('ZREMRANGEBYSCORE', SLOTS, '-inf', now)
    changed = true
  end
  -- An entry in flight whose lease is gone: its holder died, what it sent has arrived by now.
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', WINDOW, '+inf', '+inf')) do
    if not redis.call('ZSCORE', SLOTS, member) then settle_entry(member) end
  end
  redis.call('ZREMRANGEBYSCORE', WINDOW, '-inf', now)
  local dead = redis.call('ZRANGEBYSCORE', BEATS, '-inf', now)
  if #dead > 0 then
    redis.call('ZREM', QUEUE, unpack(dead))
    redis.call('ZREMRANGEBYSCORE', BEATS, '-inf', now)
    changed = true
  end
end

local function resync(remaining, resets_in)
  remaining = tonumber(remaining)
  if not remaining then return end
  resets_in = tonumber(resets_in)
  local missing = (limit - math.max(remaining, 0)) - redis.call('ZCARD', WINDOW)
  for i = 1, missing do
    local horizon = window
    if i == 1 and resets_in then horizon = math.min(math.max(resets_in, 0), window) end
    redis.call('ZADD', WINDOW, now + horizon + margin, 'phantom.' .. redis.call('INCR', SEQ))
  end
end

local function finish(status, a, b)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], retention) end
  if changed then redis.call('PUBLISH', channel, status) end
  local holders = {}
  local all = redis.call('HGETALL', LEASES)
  for i = 1, #all, 2 do
    local lease = cjson.decode(all[i + 1])
    holders[#holders + 1] = {all[i], lease.g, lease.w, lease.o or 0, lease.t or '',
                             tostring(lease.s or '')}
  end
  return {status, a or '', b or '', redis.call('ZCARD', WINDOW), redis.call('ZCARD', SLOTS),
          redis.call('ZCARD', QUEUE), holders}
end
"""

_SCRIPTS: Final = {
    # ARGV[9] waiter, [10] its ticket or '', [11] heartbeat ms, [12] limits, [13..14] resync.
    # -> ok | slot (head, wait for a lease: b = ms to the first expiry) | window (head, slot
    #    free: b = ms until the window has room, -1 unknown) | queued (b = ms until the head's
    #    heartbeat runs out) | conflict (a = the other limits); a = the ticket otherwise.
    "acquire": """
prune()
local member = ARGV[9]
if redis.call('ZSCORE', WINDOW, member) == 'inf' and redis.call('ZSCORE', SLOTS, member) then
  return finish('ok', ARGV[10], 0)  -- a resent call: already admitted
end
local conf = redis.call('GET', CONF)
if conf and conf ~= ARGV[12] and redis.call('ZCARD', WINDOW) + redis.call('ZCARD', SLOTS)
    + redis.call('ZCARD', QUEUE) > 0 then
  return finish('conflict', conf, 0)
end
redis.call('SET', CONF, ARGV[12])
resync(ARGV[13], ARGV[14])
local ticket = redis.call('ZSCORE', QUEUE, member)
if not ticket then
  -- new, or dropped as dead while it was only slow: back in at its old place
  ticket = tonumber(ARGV[10]) or redis.call('INCR', SEQ)
  redis.call('ZADD', QUEUE, ticket, member)
end
ticket = tostring(tonumber(ticket))
redis.call('ZADD', BEATS, now + tonumber(ARGV[11]), member)
local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
if head ~= member then
  local beat = redis.call('ZSCORE', BEATS, head)
  if not beat then return finish('queued', ticket, -1) end
  return finish('queued', ticket, tonumber(beat) - now)
end
local taken = redis.call('ZCARD', SLOTS)
local used = redis.call('ZCARD', WINDOW)
if taken < concurrent and used < limit then
  redis.call('ZREM', QUEUE, member)
  redis.call('ZREM', BEATS, member)
  redis.call('ZADD', WINDOW, '+inf', member)
  write_lease(member, {g = '', c = now + gen_timeout + margin, a = 1, w = 0, f = 0, o = 0},
              now + lease_ttl)
  changed = true
  return finish('ok', ticket, 0)
end
if taken >= concurrent then
  local first = redis.call('ZRANGE', SLOTS, 0, 0, 'WITHSCORES')
  return finish('slot', ticket, tonumber(first[2]) - now)
end
-- the window must drop to limit - 1 entries: wait for the (used - limit + 1)-th to expire
local nth = redis.call('ZRANGE', WINDOW, used - limit, used - limit, 'WITHSCORES')
if nth[2] == 'inf' then return finish('window', ticket, -1) end
return finish('window', ticket, tonumber(nth[2]) - now)
""",
    # ARGV[9] waiter: leave the queue; undo an admission whose answer never reached the caller.
    "leave": """
prune()
local member = ARGV[9]
if redis.call('ZREM', QUEUE, member) == 1 then changed = true end
redis.call('ZREM', BEATS, member)
local lease = read_lease(member)
if lease and lease.a == 1 and redis.call('ZSCORE', WINDOW, member) == 'inf' then
  redis.call('ZREM', WINDOW, member)
  drop_lease(member)
end
return finish('left')
""",
    # ARGV[9] permit, [10] 'none' (nothing created: free the slot) or 'held', [11] generation
    # id or '' (unknown owner), [12] '1' to settle the window entry ('2': only if still in
    # flight), [13..14] resync, [15] '1' when orphaned, [16] tag, [17] sent at (Unix ms).
    # -> free | held | lost (the lease had expired: recorded as a fixed hold)
    "settle": """
prune()
local member, mode, gid = ARGV[9], ARGV[10], ARGV[11]
local orphan = tonumber(ARGV[15]) or 0
local tag, sent = ARGV[16] or '', tonumber(ARGV[17])
if ARGV[12] == '1' or (ARGV[12] == '2' and redis.call('ZSCORE', WINDOW, member) == 'inf') then
  settle_entry(member)
  changed = true
end
if ARGV[12] ~= '0' then resync(ARGV[13], ARGV[14]) end
if mode == 'none' then
  drop_lease(member)
  return finish('free')
end
local cap = now + gen_timeout + margin
local lease = read_lease(member)
if lease then
  if gid ~= '' and holder_of(gid) and holder_of(gid) ~= member then
    drop_lease(member)  -- that generation holds a slot already (e.g. as a foreign one)
    return finish('held')
  end
  lease.g = gid
  lease.c = cap
  lease.a = 0
  lease.o = orphan
  lease.t = tag
  lease.s = sent
  changed = true
  local expires = cap
  if lease.f == 0 then expires = math.min(now + lease_ttl, cap) end
  write_lease(member, lease, expires)
  return finish('held')
end
if gid == '' or not holder_of(gid) then
  write_lease(member, {g = gid, c = cap, a = 0, w = 0, f = 1, o = orphan, t = tag, s = sent}, cap)
end
return finish('lost')
""",
    # ARGV[9] permit: free its slot (compare-and-delete on its own token); ARGV[10] '1' when
    # the submission was never sent, which also gives back its window entry.
    "drop": """
prune()
if ARGV[10] == '1' and redis.call('ZREM', WINDOW, ARGV[9]) == 1 then changed = true end
drop_lease(ARGV[9])
return finish('dropped')
""",
    # ARGV[9] generation id: free every hold of that generation.
    "release": """
prune()
local all = redis.call('HGETALL', LEASES)
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1]).g == ARGV[9] then drop_lease(all[i]) end
end
return finish('released')
""",
    # ARGV[9] generation id, [10] a fresh token: hold a slot for it unless something does.
    "hold_foreign": """
prune()
if not holder_of(ARGV[9]) then
  local cap = now + gen_timeout + margin
  write_lease(ARGV[10], {g = ARGV[9], c = cap, a = 0, w = 0, f = 1, o = 0}, cap)
end
return finish('held')
""",
    # ARGV[9..] pairs of (lease, watched 0/1): extend them; a = the ones that are gone.
    "renew": """
prune()
local lost = {}
for i = 9, #ARGV, 2 do
  local member = ARGV[i]
  local lease = read_lease(member)
  if lease and lease.f == 0 then
    lease.w = tonumber(ARGV[i + 1])
    local expires = now + lease_ttl
    if lease.c >= 0 then expires = math.min(expires, lease.c) end
    write_lease(member, lease, expires)
  else
    lost[#lost + 1] = member
  end
end
return finish('renewed', lost)
""",
    # ARGV[9] an orphaned lease, [10] the generation the probe found for it, or '' (nothing:
    # free it). A generation already held elsewhere frees it too.
    "resolve": """
prune()
local member, gid = ARGV[9], ARGV[10]
local lease = read_lease(member)
if lease and lease.o == 1 then
  local other = gid ~= '' and holder_of(gid)
  if gid == '' or (other and other ~= member) then
    drop_lease(member)
  else
    lease.g = gid
    lease.o = 0
    lease.t = nil
    redis.call('HSET', LEASES, member, cjson.encode(lease))
    changed = true
  end
end
return finish('resolved')
""",
    "stats": """
prune()
return finish('stats')
""",
}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@attrs.frozen
class _Reply:
    """A script's answer (see ``_SCRIPTS``)."""

    status: str
    a: Any
    b: int
    in_window: int
    in_progress: int
    queued: int
    holders: tuple[Holder, ...]

    @classmethod
    def parse(cls, raw: Sequence[Any]) -> _Reply:
        holders = tuple(
            Holder(
                _text(key),
                _text(g) or None,
                orphan=bool(int(o)),
                tag=_text(t) or None,
                since=int(_text(sent)) / 1000 if _text(sent) else None,
                watched=bool(int(w)),
            )
            for key, g, w, o, t, sent in raw[6]
        )
        a = [_text(x) for x in raw[1]] if isinstance(raw[1], list) else _text(raw[1])
        b = int(raw[2]) if raw[2] not in ("", b"") else 0
        return cls(_text(raw[0]), a, b, int(raw[3]), int(raw[4]), int(raw[5]), holders)


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
    return math.ceil(seconds * 1000)


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

    Every process on an account must use the same :class:`~asyncsdk.Limits`. Close the gate
    with ``await gate.aclose()`` (or ``async with gate``) when done; leases still held then
    expire within ``lease_ttl``.
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
        ``rediss://`` or ``unix://``); ``redis_options`` go to ``redis.asyncio.from_url``.

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
        runtime = self._runtime()
        gate = runtime.accounts.get(account_key)
        if gate is None:
            gate = runtime.accounts[account_key] = RedisAccountGate(
                self, runtime, account_key, limits
            )
        elif gate.limits != limits:
            raise ValueError(
                f"this account is already used in this process with {gate.limits!r}; "
                f"a client cannot use it with different limits ({limits!r})"
            )
        return gate

    def _runtime(self) -> _Runtime:
        loop = asyncio.get_running_loop()
        runtime = self._runtimes.get(loop)
        if runtime is None or runtime.closed:
            if self._client is not None:
                client, owned = self._client, False
            else:
                assert self._url is not None
                client, owned = aioredis.Redis.from_url(self._url, **self._options), True
            runtime = self._runtimes[loop] = _Runtime(client, owned=owned)
        return runtime

    async def ping(self) -> None:
        """Check that Redis answers; :class:`RedisGateError` if not."""
        try:
            await self._runtime().client.ping()
        except _REDIS_ERRORS as exc:
            raise RedisGateError(self.url, f"{type(exc).__name__}: {exc}") from exc

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
    """What a RedisGate keeps per event loop: the client, the scripts, the accounts, and one
    background task whose task group hosts the renewers and listeners, and which closes them
    (and an owned client) when cancelled (``aclose()``, or the loop shutting down)."""

    def __init__(self, client: aioredis.Redis, *, owned: bool) -> None:
        self.client = client
        self.owned = owned
        self.scripts = {
            name: client.register_script(_PRELUDE + body) for name, body in _SCRIPTS.items()
        }
        self.accounts: dict[str, RedisAccountGate] = {}
        self.closed = False
        self._tg: TaskGroup | None = None
        self._ready = anyio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._main(), name="asyncsdk-redis-gate"
        )

    async def _main(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._ready.set()
                await anyio.sleep_forever()
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
    and the other processes queued in Redis (one ticket each).
    """

    def __init__(
        self, owner: RedisGate, runtime: _Runtime, account_key: str, limits: Limits
    ) -> None:
        self.limits = limits
        self.url = owner.url
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
        )
        self._fingerprint = (
            f"submissions={limits.submissions} window={limits.window!r} "
            f"concurrent={limits.concurrent} generation_timeout={limits.generation_timeout!r} "
            f"margin={limits.margin!r}"
        )
        self._held: dict[str, str | None] = {}  # our renewed leases -> their generation ids
        self._watched: collections.Counter[str] = collections.Counter()
        self._reads_paused_until = -math.inf
        self._pending_resync: tuple[str, str] | None = None
        self._waiting = 0
        self._queued = False
        self._turnstile = anyio.Lock()
        self._changed: anyio.Event | None = None
        self._listening = False
        self._renewing = False
        self._tg: TaskGroup | None = None
        self._last = _Reply("none", "", 0, 0, 0, 0, ())

    def __repr__(self) -> str:
        return f"<RedisAccountGate {self.url} {self.statistics()}>"

    # -- talking to Redis --------------------------------------------------------------------
    async def _run(self, script: str, *args: str | int) -> _Reply:
        try:
            raw = await self._runtime.scripts[script](keys=self.keys, args=(*self._common, *args))
        except _REDIS_ERRORS as exc:
            raise RedisGateError(self.url, f"{type(exc).__name__}: {exc}") from exc
        reply = _Reply.parse(raw)
        self._last = reply
        if reply.status in ("free", "dropped", "released", "left", "resolved"):
            self._notify()  # wake a waiter of this process without the pub/sub round trip
        return reply

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def _ensure_listener(self) -> None:
        """Subscribe to the account's channel (before the first look, so no news is missed)."""
        if self._listening:
            return
        tg = await self._runtime.task_group()
        pubsub: Any = self._runtime.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
        except _REDIS_ERRORS as exc:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()
            raise RedisGateError(self.url, f"{type(exc).__name__}: {exc}") from exc
        self._listening = True
        tg.start_soon(self._listen, pubsub)

    async def _listen(self, pubsub: Any) -> None:
        delay = 0.05
        try:
            while True:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                except Exception as exc:  # the waiters' own calls report the failure
                    logger.debug("gate listener on %s: %s; retrying in %.2fs", self.url, exc, delay)
                    self._notify()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                delay = 0.05
                if message is not None:
                    self._notify()
        finally:
            self._listening = False
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- the slot ----------------------------------------------------------------------------
    def _hold(self, member: str, generation_id: str | None = None) -> None:
        self._held[member] = generation_id
        if not self._renewing and self._tg is not None:
            self._renewing = True
            self._tg.start_soon(self._renew)

    async def _renew(self) -> None:
        """Extend this process's leases every third of their TTL while it holds any."""
        try:
            while self._held:
                await anyio.sleep(self.lease_ttl / 3)
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
                for member in reply.a:
                    self._held.pop(member, None)
        finally:
            self._renewing = False

    async def release(self, generation_id: str) -> None:
        for member in [m for m, g in self._held.items() if g == generation_id]:
            del self._held[member]
        await self._run("release", generation_id)

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
        # Other processes learn it with the next renewal of the lease (``w``).
        return counting(self._watched, generation_id)

    # -- admission ---------------------------------------------------------------------------
    async def acquire(
        self, *, probe: Probe | None = None, priority: Priority = Priority.INTERACTIVE
    ) -> Permit:
        self._waiting += 1
        try:
            async with self._turnstile:  # FIFO inside the process; tickets across processes
                return await self._queue(probe)
        finally:
            self._waiting -= 1

    async def _queue(self, probe: Probe | None) -> Permit:
        self._tg = await self._runtime.task_group()
        await self._ensure_listener()
        member = f"{secrets.token_hex(8)}"
        ticket = ""
        heartbeat = _ms(self.lease_ttl)
        next_probe = anyio.current_time() + self.probe_interval
        admitted = False
        try:
            while True:
                changed = self._changed = anyio.Event()
                resync = self._pending_resync or ("", "")
                self._pending_resync = None
                reply = await self._run(
                    "acquire", member, ticket, heartbeat, self._fingerprint, *resync
                )
                if reply.status == "ok":
                    admitted = True
                    self._hold(member)
                    return _RedisPermit(self, member)
                if reply.status == "conflict":
                    raise ValueError(
                        f"other processes use this account through {self.url} with "
                        f"different limits ({reply.a}); every process must use the same "
                        f"Limits (this one: {self._fingerprint})"
                    )
                ticket = reply.a
                self._queued = True
                now = anyio.current_time()
                wake = reply.b / 1000 if reply.b >= 0 else math.inf
                if reply.status == "window":
                    check_deadline(self.limits, wake)
                elif reply.status == "slot" and probe is not None:
                    if now >= next_probe:
                        unsettled = [
                            h
                            for h in self.holders()
                            if h.orphan or (h.generation_id is not None and not h.watched)
                        ]
                        if unsettled:
                            await probe(unsettled)
                        next_probe = anyio.current_time() + self.probe_interval
                        continue
                    wake = min(wake, next_probe - now)
                with anyio.move_on_after(max(min(wake + _EPSILON, self.lease_ttl / 3), 0.0)):
                    await changed.wait()
        finally:
            self._queued = False
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
        others = last.queued - (1 if self._queued else 0)
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
