"""``AsyncClient``: a thin façade that composes one account's pieces.

Where each concern lives::

    AsyncClient (this module)   configuration, key hygiene, lifecycle, the public methods
      ├── Transport   (_transport)   the aiohttp session; the one seam for its errors
      ├── gate        (_limits/_redis) the account's window, slot and waiting lanes
      ├── Reader      (_reads)       status, account, lists, records; the one retry policy
      ├── Submitter   (_submission)  the submission protocol: reserve → send → settle
      ├── Watcher     (_watch)       watch() / wait(), bounded by the service's deadline
      ├── Downloader  (_downloads)   output images, atomically
      └── Wakeups     (_wakeups)     webhook deliveries handed in with notify()

``generate()`` is ``submit()`` then ``wait()``. The client opens inside the running loop
(``async with`` or the first request): it joins its origin's shared connection pool and its
account's gate, and leaves both in ``aclose()``; it never closes a session it was given, and
warns (``ResourceWarning``) when it is garbage-collected while still open. A client is light
(an application may open one per tenant and request): what is stateless is shared (the
retry wrapper, timeouts, the duration model of its base URL) and what is rarely used (the
submitter, the watcher and its wakeups, the downloader) is built on first use.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import hashlib
import inspect
import ipaddress
import os
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    Limits,
    env_api_key,
    env_base_url,
)
from ._downloads import Downloader
from ._images import Images
from ._limits import AccountGate, Gate, Priority, local_gate
from ._models import AccountInfo, ApiStatus, Generation, GenerationPage, Submission
from ._polling import DurationModel
from ._reads import Reader
from ._request import FIELDS, build_request
from ._retry import retrying
from ._submission import Request, Reservation, Submitter
from ._telemetry import make_telemetry
from ._transport import Transport
from ._wakeups import Wakeups
from ._watch import Submitted, Watcher

if TYPE_CHECKING:
    from .webhooks import WebhookEvent

__all__ = ["AsyncClient"]


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def account_key(api_key: str, base_url: str) -> str:
    """A stable, irreversible name for the account behind ``api_key`` at ``base_url``."""
    return hashlib.sha256(f"{base_url}\n{api_key}".encode()).hexdigest()[:32]


_DEFAULT_LIMITS = Limits()
#: Submissions a client remembers for :meth:`AsyncClient.wait` (newest kept).
_CREATED_MEMORY = 256
#: The duration model of each base URL, shared by its clients (what a model's generations
#: take is learnt once per process, per model and per account); the last few base URLs.
_DURATIONS: dict[str, DurationModel] = {}
_DURATION_MODELS = 16


def _durations_for(base_url: str) -> DurationModel:
    model = _DURATIONS.pop(base_url, None) or DurationModel()
    _DURATIONS[base_url] = model  # most recently used last
    while len(_DURATIONS) > _DURATION_MODELS:
        del _DURATIONS[next(iter(_DURATIONS))]
    return model


class AsyncClient:
    """Async client for the BabySea image-generation API.

    >>> async def main() -> None:                               # doctest: +SKIP
    ...     async with AsyncClient() as client:  # key from BABYSEA_API_KEY
    ...         g = await client.generate("google/nano-banana", "a red kite at dawn")
    ...         print(await client.download(g, "out"))

    :param api_key: the API token (``bye_...``); ``None`` reads ``BABYSEA_API_KEY``.
    :param base_url: the API root; default ``BABYSEA_BASE_URL`` or the public service.
    :param limits: the account's limits, enforced before each submission.
    :param timeout: seconds per HTTP request (for a download: without a byte).
    :param max_retries: retries of transient failures per call (0 disables them).
    :param poll_interval: first pause between status polls; adaptive afterwards.
    :param gate: where the per-account limits live; default in-process, shared by every
        client of the process with the same key (:class:`asyncsdk.RedisGate` shares them
        across processes).
    :param session: an ``aiohttp.ClientSession`` to use (it is not closed by the client).
    :param allow_insecure_http: allow sending the key over plain ``http://`` to a host that
        is not the loopback interface.
    :param priority: the lane this client's submissions wait in when the account is busy
        (``"interactive"``, the default, or ``"batch"``); each call may override it.
    :param telemetry: OpenTelemetry spans and metrics (extra ``asyncsdk[otel]``): ``None``
        (the default) turns them on when the application runs OpenTelemetry, ``True``
        requires them, ``False`` turns them off.
    :param record_prompts: with telemetry, record prompts on spans (off by default).
    :param max_connections: the size of the connection pool shared by the clients of this
        base URL's origin (in one event loop) that pass the same value; requests beyond it
        queue, outside their timeout. Unused with ``session=``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        limits: Limits | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        gate: Gate | None = None,
        session: Any = None,
        allow_insecure_http: bool = False,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        priority: Priority | str = Priority.INTERACTIVE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        telemetry: bool | None = None,
        record_prompts: bool = False,
    ) -> None:
        api_key = api_key if api_key is not None else env_api_key()
        if not api_key or not api_key.strip():
            raise ValueError(
                f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
            )
        api_key = api_key.strip()
        base_url = (base_url or env_base_url()).rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
            raise ValueError(
                f"refusing to send the API key over plain http to {parts.hostname}; use https, "
                "or pass allow_insecure_http=True if this network is trusted"
            )
        for name, value in (("timeout", timeout), ("poll_interval", poll_interval)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")

        self.base_url = base_url
        self.limits = limits if limits is not None else _DEFAULT_LIMITS
        self.timeout = timeout
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self.priority = Priority(priority)
        self._account_key = account_key(api_key, base_url)
        self._gate_backend: Gate = gate if gate is not None else local_gate
        self._gate: AccountGate | None = None
        self._state = _State.UNOPENED
        #: Generations this client has just created, for :meth:`wait` (see :meth:`submit`).
        self._created: collections.OrderedDict[str, Submitted] | None = None
        self._transport = Transport(
            base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            session=session,
            max_connections=max_connections,
        )
        self._backoff_range = (backoff_base, backoff_max)
        self._reader = Reader(
            self._transport,
            self._open,
            max_retries=max_retries,
            backoff_range=self._backoff_range,
            hint_cap=self.limits.window + self.limits.margin,
            durations=_durations_for(base_url),
            account=self._account_key,
        )
        self._telemetry = make_telemetry(
            telemetry, record_prompts=record_prompts, base_url=base_url
        )
        self._submitter: Submitter | None = None
        self._watcher_: Watcher | None = None
        self._wakeups_: Wakeups | None = None
        self._downloader_: Downloader | None = None

    # -- parts built on first use --------------------------------------------------------------
    @property
    def _wakeups(self) -> Wakeups:
        if self._wakeups_ is None:
            self._wakeups_ = Wakeups()
        return self._wakeups_

    @property
    def _watcher(self) -> Watcher:
        if self._watcher_ is None:
            self._watcher_ = Watcher(
                self._reader,
                self._open,
                limits=self.limits,
                poll_interval=self.poll_interval,
                backoff_range=self._backoff_range,
                wakeups=self._wakeups,
                account=self._account_key,
            )
        return self._watcher_

    @property
    def _downloader(self) -> Downloader:
        if self._downloader_ is None:
            hint_cap = self.limits.window + self.limits.margin
            self._downloader_ = Downloader(
                self._transport, retrying(self.max_retries, self._backoff_range, hint_cap)
            )
        return self._downloader_

    def __repr__(self) -> str:
        return f"<AsyncClient {self.base_url} account={self._account_key[:8]} {self._state.value}>"

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open(self) -> AccountGate:
        """The account gate of an open client (opening it on first use)."""
        if self._state is _State.CLOSED:
            raise RuntimeError("this AsyncClient is closed; create a new one")
        if self._gate is None:
            self._state = _State.OPENED
            self._gate = self._gate_backend.account(self._account_key, self.limits)
        return self._gate

    @property
    def _submissions(self) -> Submitter:
        if self._submitter is None or self._submitter.gate is not self._open():
            self._submitter = Submitter(
                self._transport,
                self._open(),
                self._list_once,
                self._reader.generation,
                self.limits,
                self.max_retries,
                self._backoff_range,
                telemetry=self._telemetry,
            )
        return self._submitter

    async def _list_once(self, *, limit: int, offset: int) -> GenerationPage:
        return await self._reader.list_page(limit=limit, offset=offset, retry=False)

    async def aclose(self) -> None:
        """Leave the connection pool (the last client of it closes it) and the account's
        gate; a session passed in is left open. Safe to call twice."""
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            released = self._leave_gate()
            if inspect.isawaitable(released):
                await released
            await self._transport.aclose()

    def _leave_gate(self) -> object:
        """Tell the gate backend this client is done with its gate (called once, on close)."""
        gate = self._gate
        release = getattr(self._gate_backend, "release_account", None)
        if gate is None or release is None:
            return None
        return release(self._account_key, gate)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) is not _State.OPENED:
            return
        if self._transport.is_open:
            _warn(
                f"unclosed {self!r}: use 'async with AsyncClient()' or 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )
        self._state = _State.CLOSED
        with contextlib.suppress(Exception):  # never raise from a finalizer
            released = self._leave_gate()
            if inspect.iscoroutine(released):
                released.close()  # an async backend cannot be awaited here
            self._transport.abandon()

    @property
    def gate(self) -> AccountGate:
        """This client's account gate (``statistics()`` shows the queue and the window)."""
        return self._gate if self._gate is not None else self._open()

    # -- reads ---------------------------------------------------------------------------------
    async def status(self) -> ApiStatus:
        """Check the connection and the key: ``GET /status``."""
        return await self._reader.status()

    async def account(self) -> AccountInfo:
        """The account, its credits and the API key's name: ``GET /data/account``."""
        return await self._reader.account()

    async def list_generations(self, *, limit: int = 20, offset: int = 0) -> GenerationPage:
        """One page of the account's generations, newest first."""
        return await self._reader.list_page(limit=limit, offset=offset)

    async def iter_generations(self, *, page_size: int = 100) -> AsyncGenerator[Generation, None]:
        """Every generation of the account, newest first, fetching pages as needed.

        Generations created while iterating shift the pages; none is yielded twice.
        """
        seen: set[str] = set()
        offset = 0
        while True:
            page = await self.list_generations(limit=page_size, offset=offset)
            for generation in page.generations:
                if generation.generation_id not in seen:
                    seen.add(generation.generation_id)
                    yield generation
            offset += len(page.generations)
            if not page.generations or offset >= page.total:
                return

    async def get_generation(self, generation_id: str) -> Generation:
        """One generation's current record: ``GET /image-generation/{id}``."""
        return await self._reader.generation(generation_id)

    # -- submissions ---------------------------------------------------------------------------
    def reserve(self, *, priority: Priority | str | None = None) -> Reservation:
        """A place in this account's gate, to enter with ``async with`` and pass to
        :meth:`submit` (``reservation=``): it waits for room in the window and a free slot;
        leaving the block unused gives both back.

        >>> async def main(client: AsyncClient) -> None:              # doctest: +SKIP
        ...     async with client.reserve() as reservation:
        ...         await client.submit("google/nano-banana", "a kite", reservation=reservation)
        """
        return self._submissions.reserve(Priority(priority or self.priority))

    async def _request(self, model: str, prompt: str, **options: Any) -> Request:
        """A checked request (the arguments of :meth:`submit` but the sending ones)."""
        extra = {k: options.pop(k) for k in list(options) if k not in FIELDS}
        return await build_request(model, prompt, **options, extra=extra)

    async def submit(
        self,
        model: str,
        prompt: str,
        *,
        name: str | None = None,
        output_number: int | None = None,
        aspect_ratio: str | None = None,
        output_format: str | None = None,
        images: Images | None = None,
        idempotency_key: str | None = None,
        recover_since: float | None = None,
        reservation: Reservation | None = None,
        priority: Priority | str | None = None,
        **extra: Any,
    ) -> Submission:
        """Submit a generation, after the account's gate admits it; it never pays twice.

        ``images`` makes it image-to-image: one or up to ten URLs, local paths or bytes
        (paths and bytes are sent as ``data:`` URIs; the size limits are checked first).
        Other keyword arguments (``seed=...``) are passed to the model untouched, except a
        close misspelling of a parameter, which raises ``TypeError``.

        The submission carries a tag in ``name`` (``Submission.tag``): a request whose
        answer is lost or unreadable is looked up by it and adopted, never sent twice; when
        that cannot be known before the deadline, :class:`~asyncsdk.SubmissionUnknownError`.

        :param idempotency_key: derive the tag from this key, so that a retry of the same
            logical request (another process, after a crash) is recognised.
        :param recover_since: with ``idempotency_key``: an earlier call with the same key
            may have been sent since this Unix time; adopt what it created instead of
            sending, once the list settles.
        :param reservation: an open :meth:`reserve` to send through.
        :param priority: the waiting lane (default: the client's).
        """
        if recover_since is not None and idempotency_key is None:
            raise ValueError("recover_since needs the idempotency_key of the earlier call")
        request = await build_request(
            model,
            prompt,
            name=name,
            output_number=output_number,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            images=images,
            idempotency_key=idempotency_key,
            extra=extra,
        )
        with self._telemetry.call("submit", model, prompt) as span:
            submission = await self._submissions.submit(
                request,
                reservation=reservation,
                recover_since=recover_since,
                priority=Priority(priority or self.priority),
            )
            span.set_generation(submission.generation_id, submission.credit_cost)
        created = self._created
        if created is None:
            created = self._created = collections.OrderedDict()
        created[submission.generation_id] = Submitted(model, time.time())
        if len(created) > _CREATED_MEMORY:
            created.popitem(last=False)
        return submission

    def _just_created(self, generation_id: str) -> Submitted | None:
        """What :meth:`submit` noted of ``generation_id``, taken (once)."""
        return self._created.pop(generation_id, None) if self._created else None

    async def reconcile(
        self, tag: str, *, sent_at: float, since: float | None = None
    ) -> Submission | None:
        """What the submission tagged ``tag`` (sent at Unix time ``sent_at``) created:
        its :class:`Submission`, or ``None`` once the list, read successfully, settled
        without it. Raises :class:`~asyncsdk.SubmissionUnknownError` if the deadline (the
        caller's, or the service's own) comes first. ``since``: when the send time is only
        known to lie between ``since`` and ``sent_at`` (a crashed worker's), the list is read
        back to ``since`` and settles from ``sent_at``.

        This is how a :class:`~asyncsdk.SubmissionUnknownError` is resolved later.
        """
        return await self._submissions.reconcile(tag, sent_at=sent_at, since=since)

    async def find_submission(self, name: str, prompt: str, *, since: float) -> Generation | None:
        """The generation created with this ``name`` and ``prompt`` since Unix time
        ``since``, or ``None``; one look at the list, which raises if it cannot be read.

        Prefer :meth:`reconcile`, which also waits for the list to settle.
        """
        found = await self._submissions.find(name, since=since)
        if found is not None and found.prompt not in (None, prompt):
            return None
        return found

    # -- live status ---------------------------------------------------------------------------
    def watch(
        self, generation_id: str, *, poll_interval: float | None = None
    ) -> AsyncGenerator[Generation, None]:
        """Yield the generation once per status change, ending after a terminal one.

        Polls adaptively (see :mod:`asyncsdk._polling`); transient read failures are retried
        quietly until the service's own deadline, after which it raises
        :class:`~asyncsdk.GenerationTimeoutError`. If you stop early, close the generator:
        ``async with contextlib.aclosing(client.watch(id)) as events: ...``.
        """
        return self._watcher.watch(generation_id, poll_interval=poll_interval)

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Generation], object] | None = None,
    ) -> Generation:
        """The generation once it has succeeded.

        ``on_update`` is called with each status change on the way (progress displays).
        A generation this client has just submitted is first read when the durations learnt
        for its model say it may have ended (a read at once could only say ``starting``).

        :raises GenerationFailedError: it ended ``failed`` (see ``.generation.failure_reason``).
        :raises GenerationTimeoutError: ``timeout`` seconds passed first (default: the
            service's deadline for the generation), with ``.last_status``.
        """
        submitted = self._just_created(generation_id)
        return await self._wait(
            generation_id, timeout=timeout, on_update=on_update, submitted=submitted
        )

    async def _wait(
        self,
        generation_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Generation], object] | None = None,
        submitted: Submitted | None = None,
    ) -> Generation:
        """:meth:`wait`; ``submitted`` when this client has just created the generation."""
        telemetry = self._telemetry
        with telemetry.call("wait", None, None) as span:
            on_read: Callable[[Generation], object] | None = None
            if telemetry.enabled:  # no closures to keep for the no-op (thousands of waits)
                caller = on_update

                def update(generation: Generation) -> None:
                    telemetry.status(span, generation)
                    if caller is not None:
                        caller(generation)

                def on_read(_: Generation) -> None:
                    telemetry.poll(span)

                on_update = update
            generation = await self._watcher.wait(
                generation_id,
                timeout=timeout,
                on_update=on_update,
                on_read=on_read,
                submitted=submitted,
            )
            span.set_generation(generation.generation_id, generation.credit_cost)
        return generation

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        name: str | None = None,
        output_number: int | None = None,
        aspect_ratio: str | None = None,
        output_format: str | None = None,
        images: Images | None = None,
        idempotency_key: str | None = None,
        recover_since: float | None = None,
        reservation: Reservation | None = None,
        priority: Priority | str | None = None,
        timeout: float | None = None,
        **extra: Any,
    ) -> Generation:
        """Submit and wait: the succeeded generation. The options are those of
        :meth:`submit`; ``timeout`` bounds the wait after the submission (wrap the call in
        ``anyio.fail_after`` for an overall deadline: a full window then fails fast with
        :class:`~asyncsdk.RateLimitError`)."""
        with self._telemetry.call("generate", model, prompt) as span:
            generation = await self._generate(
                model,
                prompt,
                name=name,
                output_number=output_number,
                aspect_ratio=aspect_ratio,
                output_format=output_format,
                images=images,
                idempotency_key=idempotency_key,
                recover_since=recover_since,
                reservation=reservation,
                priority=priority,
                timeout=timeout,
                **extra,
            )
            span.set_generation(generation.generation_id, generation.credit_cost)
            self._telemetry.status(span, generation)
        return generation

    async def _generate(
        self, model: str, prompt: str, *, timeout: float | None, **options: Any
    ) -> Generation:
        submission = await self.submit(model, prompt, **options)
        submitted = self._just_created(submission.generation_id)
        return await self._wait(submission.generation_id, timeout=timeout, submitted=submitted)

    def notify(self, event: WebhookEvent | Mapping[str, Any] | Generation) -> bool:
        """Hand a verified webhook delivery to the client: the event
        :func:`asyncsdk.webhooks.verify` returns (``generation.completed``/``.failed``), the
        event as parsed JSON, or an ended record. Every ``watch()``/``wait()`` of that
        generation wakes at once with it, and polling becomes a slow safety net while
        deliveries flow. ``False`` for a record that has not ended or another event type.

        >>> event = asyncsdk.webhooks.verify(body, signature, secret)   # doctest: +SKIP
        >>> client.notify(event)                                        # doctest: +SKIP
        True
        """
        return self._wakeups.notify(event)

    # -- downloads -----------------------------------------------------------------------------
    async def download(
        self,
        generation: Generation | str,
        directory: str | os.PathLike[str],
        *,
        prefix: str | None = None,
    ) -> list[Path]:
        """Save every output image of a generation into ``directory``; the paths, in order.

        Files are named ``<prefix>-<n>.<ext>`` (the prefix defaults to the generation id;
        nothing is ever taken from the URL) and written atomically (a temporary file renamed
        into place), all images concurrently.
        """
        if isinstance(generation, str):
            generation = await self.get_generation(generation)
        return await self._downloader.download(generation, directory, prefix)
