"""``AsyncClient``: the session, the endpoints, and submit / watch / wait / generate / download.

How a call flows::

    submit() ──► gate.acquire() ──► POST ──► permit.answered(id)      slot held by the generation
                  (window + slot,     │
                   FIFO, per account) └─ answer lost ─► reconcile via the list (by tag)
                                                      ├─ found: adopt it (no second charge)
                                                      └─ not there: resubmit
    watch() ──► get_generation() every PollSchedule delay ──► yield on each status change
                     └─ a terminal status releases the generation's slot in the gate
    wait() = last item of watch(), raising on ``failed``; generate() = submit() + wait()

Reads (status, account, lists, polls, downloads) go through one retrying wrapper built with
backoff from the predicate in :mod:`asyncsdk._retry`. Submissions retry by the stricter rules
described there, so that one call never pays for two generations: each submission carries a
tag in ``name`` (``sdk-`` + random hex, unless the caller names it) so that a submission whose
answer was lost can be recognised in the list and adopted instead of being sent again.

The client opens its aiohttp session inside the running loop (``async with`` or the first
request), never closes a session it was given, and warns (``ResourceWarning``) when it is
garbage-collected while still open.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import hashlib
import ipaddress
import logging
import os
import random
import re
import secrets
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
import anyio
import backoff

from ._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    Limits,
    env_api_key,
    env_base_url,
)
from ._errors import (
    NOTHING_CREATED_CODES,
    APIConnectionError,
    APIError,
    AsyncSDKError,
    ConcurrencyLimitError,
    GenerationFailedError,
    GenerationTimeoutError,
    RateLimitError,
    ServerError,
)
from ._images import Images, image_inputs
from ._limits import AccountGate, Gate, Permit, local_gate
from ._models import (
    AccountInfo,
    ApiStatus,
    Generation,
    GenerationPage,
    GenerationStatus,
    Submission,
)
from ._polling import COLD_FACTOR, DurationModel, PollSchedule
from ._retry import is_retryable, wait_times
from ._transport import Response, Transport
from ._wire import converter

__all__ = ["AsyncClient"]

logger = logging.getLogger("asyncsdk")

T = TypeVar("T")

_MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.:-]+$")
#: Characters ``quote()`` leaves alone: a path segment made of them needs no quoting.
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9_.~-]+")
_CONTENT_TYPES: Final = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
#: How many generation ids a client remembers as claimed by its own submissions.
_CLAIMED_MEMORY: Final = 4096
#: Pauses (in poll intervals) between the list look-ups that reconcile a lost answer.
_RECONCILE_STEPS: Final = (0.0, 0.5, 1.0, 2.0)
#: How far the service's clock may run behind ours when matching creation times, in seconds.
_CLOCK_SKEW: Final = 300.0


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


class AsyncClient:
    """Async client for the BabySea image-generation API.

    >>> async def main() -> None:                               # doctest: +SKIP
    ...     async with AsyncClient() as client:  # key from BABYSEA_API_KEY
    ...         g = await client.generate("google/nano-banana", "a red kite at dawn")
    ...         print(await client.download(g, "out"))

    :param api_key: the API token (``bye_...``); ``None`` reads ``BABYSEA_API_KEY``.
    :param base_url: the API root; default ``BABYSEA_BASE_URL`` or the public service.
    :param limits: the account's limits, enforced before each submission.
    :param timeout: seconds per HTTP request.
    :param max_retries: retries of transient failures per call (0 disables them).
    :param poll_interval: first pause between status polls; adaptive afterwards.
    :param gate: where the per-account limits live; default in-process, shared by every
        client of the process with the same key (:class:`asyncsdk.RedisGate` shares them
        across processes).
    :param session: an ``aiohttp.ClientSession`` to use (it is not closed by the client).
    :param allow_insecure_http: allow sending the key over plain ``http://`` to a host that
        is not the loopback interface.
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
        session: aiohttp.ClientSession | None = None,
        allow_insecure_http: bool = False,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
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
        self.limits = limits if limits is not None else Limits()
        self.timeout = timeout
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self._account_key = account_key(api_key, base_url)
        self._gate_backend: Gate = gate if gate is not None else local_gate
        self._gate: AccountGate | None = None
        self._transport = Transport(
            base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            session=session,
        )
        self._state = _State.UNOPENED
        self._backoff = (backoff_base, backoff_max)
        self._durations = DurationModel()
        self._claimed: collections.OrderedDict[str, float] = collections.OrderedDict()
        # Reads and downloads retry by the one predicate of _retry, with backoff's loop.
        retrying = backoff.on_exception(
            wait_times,
            AsyncSDKError,
            max_tries=max_retries + 1,
            giveup=lambda exc: not is_retryable(exc),
            on_backoff=_log_retry,
            jitter=None,  # wait_times jitters already
            logger=None,
            base=backoff_base,
            cap=backoff_max,
            # backoff primes a fresh wait generator on every call, even one that succeeds at
            # once: a shared random generator spares each read seeding its own (~17 us).
            rng=random.Random(),
        )
        # Reads enter backoff's loop only after a first retryable failure (see `_read`).
        self._read_retrying = retrying(self._read_replay)
        self._fetch = retrying(self._download_once)

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

    async def aclose(self) -> None:
        """Close the HTTP session (unless it was passed in). Safe to call twice."""
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            await self._transport.aclose()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPENED and self._transport.is_open:
            _warn(
                f"unclosed {self!r}: use 'async with AsyncClient()' or 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=2,
            )

    @property
    def gate(self) -> AccountGate:
        """This client's account gate (``statistics()`` shows the queue and the window)."""
        return self._gate if self._gate is not None else self._open()

    # -- reads ---------------------------------------------------------------------------------
    async def _read(self, path: str, params: Mapping[str, str | int] | None) -> Response:
        """One read, retried by the one predicate of :mod:`._retry` with backoff's loop.

        The loop is entered only after a first retryable failure, which it replays as its own
        first try (so the tries and waits are backoff's): on a read that succeeds at once, the
        loop's set-up would cost about a third of the SDK's own time per status poll.
        """
        try:
            return await self._read_once(path, params)
        except AsyncSDKError as exc:
            if self.max_retries == 0 or not is_retryable(exc):
                raise
            first = [exc]
        return await self._read_retrying(path, params, first)

    async def _read_replay(
        self, path: str, params: Mapping[str, str | int] | None, first: list[AsyncSDKError]
    ) -> Response:
        if first:
            raise first.pop()
        return await self._read_once(path, params)

    async def _read_once(self, path: str, params: Mapping[str, str | int] | None) -> Response:
        gate = self._open()
        await gate.read_turn()
        response = await self._transport.request("GET", path, params=params)
        if response.rate_limit is not None:
            gate.note_rate_limit(response.rate_limit, submission=False)
        return response

    async def _get(
        self, path: str, cls: type[T], params: Mapping[str, str | int] | None = None
    ) -> T:
        response = await self._read(path, params)
        return _structure(response, response.data, cls)

    async def status(self) -> ApiStatus:
        """Check the connection and the key: ``GET /status``."""
        response = await self._read("/status", None)
        data = dict(response.data or {}, message=response.body.get("message"))
        return _structure(response, data, ApiStatus)

    async def account(self) -> AccountInfo:
        """The account, its credits and the API key's name: ``GET /data/account``."""
        return await self._get("/data/account", AccountInfo)

    async def list_generations(self, *, limit: int = 20, offset: int = 0) -> GenerationPage:
        """One page of the account's generations, newest first."""
        if not 1 <= limit <= 100:
            raise ValueError(f"limit must be between 1 and 100, got {limit!r}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset!r}")
        page = await self._get(
            "/data/list/image", GenerationPage, {"limit": limit, "offset": offset}
        )
        for generation in page.generations:
            await self._saw(generation)
        return page

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
        if not isinstance(generation_id, str) or not generation_id.strip():
            raise ValueError(f"generation_id must be a non-empty string, got {generation_id!r}")
        segment = generation_id.strip()
        if not _UNRESERVED.fullmatch(segment):  # ids are UUIDs: quoting them changes nothing
            segment = quote(segment, safe="")
        generation = await self._get("/image-generation/" + segment, Generation)
        await self._saw(generation)
        return generation

    async def _saw(self, generation: Generation) -> None:
        """Every record read passes here: an ended generation frees its slot."""
        if generation.status.is_terminal:
            self._durations.observe(generation)
            await self.gate.release(generation.generation_id)

    # -- submissions ---------------------------------------------------------------------------
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
        **extra: Any,
    ) -> Submission:
        """Submit a generation, after the account's gate admits it.

        ``images`` makes it image-to-image: one or up to ten URLs, local paths or bytes
        (paths and bytes are sent as ``data:`` URIs; the size limits are checked first).
        Other keyword arguments (``seed=...``) are passed to the model untouched.
        A lost answer is reconciled through the list, so the call never pays twice.
        """
        body = await self._prepare(
            model,
            prompt,
            name=name,
            output_number=output_number,
            aspect_ratio=aspect_ratio,
            output_format=output_format,
            images=images,
            **extra,
        )
        return await self._submit(model, body)

    async def _prepare(
        self,
        model: str,
        prompt: str,
        *,
        name: str | None = None,
        output_number: int | None = None,
        aspect_ratio: str | None = None,
        output_format: str | None = None,
        images: Images | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The JSON body of a submission (same arguments as :meth:`submit`), checked."""
        if not isinstance(model, str) or not _MODEL_ID.match(model):
            raise ValueError(
                f"model must look like 'lab/model' (e.g. 'google/nano-banana'), got {model!r}"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if "image_input" in extra:
            raise ValueError("pass input images as images=..., not image_input=")
        fields = {
            "name": name,
            "output_number": output_number,
            "aspect_ratio": aspect_ratio,
            "output_format": output_format,
        }
        body: dict[str, Any] = {"prompt": prompt}
        body.update((key, value) for key, value in fields.items() if value is not None)
        body.update(extra)
        if images is not None:
            body["image_input"] = await image_inputs(images)
        if body.get("name") is None:
            # The tag that finds a lost answer again in the list (see the module docstring).
            body["name"] = "sdk-" + secrets.token_hex(8)
        return body

    async def _submit(
        self, model: str, body: dict[str, Any], *, permit: Permit | None = None
    ) -> Submission:
        """Send a prepared body through the gate, retrying by the rules in :mod:`._retry`.

        ``permit``: one already taken from this client's gate (the batch runner takes it
        before it picks a job, so that a job goes to the account that can start it first).
        """
        gate = self._open()
        waits = wait_times(*self._backoff)
        next(waits)
        path = f"/image-generation/{model}"
        attempt = 0
        while True:
            current = permit if permit is not None else await gate.acquire(probe=self._probe)
            permit = None  # a permit serves one attempt
            sent_at = time.time()
            try:
                response = await self._transport.request("POST", path, json_body=body)
            except APIConnectionError as exc:
                error: AsyncSDKError = exc
                if exc.request_sent:
                    found = await self._settle_lost(current, body, sent_at)
                    if found is not None:
                        return found
                else:
                    await current.answered(None, None)
            except APIError as exc:
                error = exc
                if isinstance(exc, ServerError) and exc.code not in NOTHING_CREATED_CODES:
                    # A 5xx that does not promise "nothing created": treat as a lost answer.
                    found = await self._settle_lost(current, body, sent_at)
                    if found is not None:
                        return found
                else:
                    await current.answered(None, exc.rate_limit)
                    if isinstance(exc, ConcurrencyLimitError):
                        # The gate now waits for that generation to end: no pause, and it
                        # costs no attempt as long as there is one to wait for.
                        if await self._hold_running(gate):
                            continue
                    elif not isinstance(exc, (RateLimitError, ServerError)):
                        raise  # 400/401/402/404: nothing to retry
            except BaseException:  # cancelled mid-request: the slot's owner is unknown
                with anyio.CancelScope(shield=True):
                    await current.orphan()
                raise
            else:
                submission = _structure(response, response.data, Submission)
                await current.answered(submission.generation_id, response.rate_limit)
                self._claim(submission.generation_id)
                return submission
            attempt += 1
            if attempt > self.max_retries:
                raise error
            await _pause(waits.send(error), error)
            logger.info("retrying submission (attempt %d) after %s", attempt + 1, error)

    async def _settle_lost(
        self, permit: Permit, body: Mapping[str, Any], sent_at: float
    ) -> Submission | None:
        """The answer was lost: adopt the generation if the service created it."""
        with anyio.CancelScope(shield=True):
            await permit.unanswered()
        found = await self._reconcile(body, sent_at)
        if found is None:
            await permit.abandon()
            return None
        await permit.adopt(found.generation_id)
        logger.info("adopted generation %s after a lost answer", found.generation_id)
        return Submission(found.generation_id, found.status, found.credit_cost)

    async def _reconcile(self, body: Mapping[str, Any], sent_at: float) -> Generation | None:
        """Look for the generation a lost submission may have created, a few times."""
        for step in _RECONCILE_STEPS:
            await anyio.sleep(step * self.poll_interval)
            try:
                found = await self.find_submission(body["name"], body["prompt"], since=sent_at)
            except (APIConnectionError, ServerError):
                continue
            if found is not None:
                return found
        return None

    async def find_submission(self, name: str, prompt: str, *, since: float) -> Generation | None:
        """The generation created with this ``name`` and ``prompt`` since Unix time ``since``
        and not yet claimed by this client, or ``None``; claims what it returns.

        This is how a submission whose answer was lost (or whose process was killed) is
        recognised: the list is scanned newest first until records are older than ``since``
        (less a clock-skew allowance).
        """
        horizon = since - _CLOCK_SKEW
        async for generation in self.iter_generations(page_size=20):
            created = generation.created_at
            if created is not None and created.timestamp() < horizon:
                return None
            if (
                generation.name == name
                and generation.prompt == prompt
                and generation.generation_id not in self._claimed
            ):
                self._claim(generation.generation_id)
                return generation
        return None

    def _claim(self, generation_id: str) -> None:
        self._claimed[generation_id] = time.monotonic()
        while len(self._claimed) > _CLAIMED_MEMORY:
            self._claimed.popitem(last=False)

    async def _hold_running(self, gate: AccountGate) -> bool:
        """Another process runs a generation on this account: hold the slot until it ends."""
        page = await self.list_generations(limit=20)
        running = [g.generation_id for g in page.generations if not g.status.is_terminal]
        for generation_id in running:
            await gate.hold_foreign(generation_id)
        return bool(running)

    async def _probe(self, holders: Sequence[str | None]) -> None:
        """Poll the slot holders nobody watches, so that their slots free when they end;
        an orphaned slot (``None``) takes whatever the account is running, if anything."""
        try:
            for generation_id in holders:
                if generation_id is not None:
                    await self.get_generation(generation_id)
            if None in holders:
                page = await self.list_generations(limit=20)
                running = [g.generation_id for g in page.generations if not g.status.is_terminal]
                await self.gate.resolve_orphans(running)
        except AsyncSDKError as exc:
            logger.debug("probe of the slot holders failed: %s", exc)

    # -- live status ---------------------------------------------------------------------------
    async def watch(
        self, generation_id: str, *, poll_interval: float | None = None
    ) -> AsyncGenerator[Generation, None]:
        """Yield the generation once per status change, ending after a terminal one.

        Polls adaptively (see :mod:`asyncsdk._polling`). Each poll has the client's request
        timeout and retries; the ``yield`` has none. If you stop early, close the generator:
        ``async with contextlib.aclosing(client.watch(id)) as events: ...``.
        """
        interval = poll_interval or self.poll_interval
        last: GenerationStatus | None = None
        schedule: PollSchedule | None = None
        with self.gate.watching(generation_id):
            while True:
                generation = await self.get_generation(generation_id)
                if generation.status != last:
                    last = generation.status
                    yield generation
                if generation.status.is_terminal:
                    return
                if schedule is None:
                    created = generation.created_at
                    schedule = PollSchedule(
                        interval,
                        started=created.timestamp() if created else time.time(),
                        expected=self._durations.expected(generation.model_provider),
                        spread=self._durations.spread(generation.model_provider),
                        backoff_cap=interval * COLD_FACTOR,
                    )
                await anyio.sleep(schedule.next_delay(time.time()))

    async def wait(
        self,
        generation_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Generation], object] | None = None,
    ) -> Generation:
        """The generation once it has succeeded.

        ``on_update`` is called with each status change on the way (progress displays).

        :raises GenerationFailedError: it ended ``failed`` (see ``.generation.failure_reason``).
        :raises GenerationTimeoutError: ``timeout`` seconds passed first (``.last_status``).
        """
        last: Generation | None = None
        with anyio.move_on_after(timeout) as scope:
            async with contextlib.aclosing(self.watch(generation_id)) as events:
                async for last in events:
                    if on_update is not None:
                        on_update(last)
        if scope.cancelled_caught or last is None:
            raise GenerationTimeoutError(generation_id, last.status if last else None)
        if last.status is GenerationStatus.FAILED:
            raise GenerationFailedError(last)
        return last

    async def generate(
        self, model: str, prompt: str, *, timeout: float | None = None, **options: Any
    ) -> Generation:
        """Submit and wait: the succeeded generation. Options are those of :meth:`submit`;
        ``timeout`` bounds the wait after submission (wrap the call in ``anyio.fail_after``
        for an overall deadline: a full window then fails fast with ``RateLimitError``)."""
        submission = await self.submit(model, prompt, **options)
        return await self.wait(submission.generation_id, timeout=timeout)

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
        target = Path(directory)
        await anyio.Path(target).mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", prefix or generation.generation_id).lstrip(".")
        paths: list[Path | None] = [None] * len(generation.output_images)

        failures: list[Exception] = []

        async def fetch(index: int, url: str) -> None:
            try:
                paths[index] = await self._fetch(url, target, f"{stem}-{index + 1}")
            except Exception as exc:  # the first failure stops the others (temp files go too)
                failures.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            for index, url in enumerate(generation.output_images):
                tg.start_soon(fetch, index, url)
        if failures:
            raise failures[0]  # the SDK's own error, not an ExceptionGroup
        return [path for path in paths if path is not None]

    async def _download_once(self, url: str, directory: Path, stem: str) -> Path:
        if urlsplit(url).scheme not in ("http", "https"):
            raise APIError(f"refusing to download an output image from {url!r}")
        part = directory / f".{stem}.{secrets.token_hex(4)}.part"
        try:
            async with self._transport.stream(url) as (content_type, chunks):
                kind = (content_type or "").split(";")[0].strip().lower()
                path = directory / f"{stem}.{_CONTENT_TYPES.get(kind, 'png')}"
                async with await anyio.open_file(part, "wb") as file:
                    async for chunk in chunks:
                        await file.write(chunk)
            await anyio.Path(part).replace(path)
            return path
        finally:  # shielded: a cancelled download must still remove its partial file
            with anyio.CancelScope(shield=True), contextlib.suppress(FileNotFoundError):
                await anyio.Path(part).unlink()


async def _pause(seconds: float, error: AsyncSDKError) -> None:
    """Sleep before a retry, or raise ``error`` now if the caller's deadline ends first."""
    deadline = anyio.current_effective_deadline()
    if anyio.current_time() + seconds > deadline:
        raise error
    await anyio.sleep(seconds)


def _structure(response: Response, data: Any, cls: type[T]) -> T:
    """Structure ``data`` (adding the request id); a malformed body is a clear APIError."""
    try:
        if isinstance(data, dict):
            data = {**data, "requestId": response.request_id}
        return converter.structure(data, cls)
    except Exception as exc:
        raise APIError(
            f"unexpected response shape for {cls.__name__}: {type(exc).__name__}: {exc}",
            status=response.status,
            request_id=response.request_id,
        ) from exc


def _log_retry(details: Mapping[str, Any]) -> None:
    logger.info(
        "retrying %s in %.2fs after %s",
        details["args"][0] if details["args"] else "request",
        details["wait"],
        details.get("exception"),
    )
