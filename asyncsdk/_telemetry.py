"""OpenTelemetry traces and metrics for the client (the ``asyncsdk[otel]`` extra).

One :class:`Telemetry` per client. :class:`Telemetry` itself is the no-op twin: every method
returns a shared, stateless object or nothing, and nothing from ``opentelemetry`` is imported.
:func:`make_telemetry` returns an :class:`OtelTelemetry` instead when telemetry is asked for
(``True``) or, by default (``None``), when the application already runs OpenTelemetry: the
``opentelemetry.trace`` module is loaded and a tracer provider is set. That check only looks
at ``sys.modules``: an application that does not use OpenTelemetry imports none of it.

Spans, following the GenAI semantic conventions (client spans named
``"{operation} {model}"``)::

    generate google/nano-banana            gen_ai.operation.name = generate_content
    │ gen_ai.provider.name = babysea, gen_ai.request.model, gen_ai.output.type = image,
    │ gen_ai.response.id and babysea.generation.id (the generation), babysea.credits,
    │ babysea.generation.status (final), error.type (when the call raised);
    │ gen_ai.input.messages (the prompt) only with record_prompts=True
    ├── gate wait window                   babysea.gate.kind = window | slot
    ├── POST (opentelemetry-instrumentation-aiohttp-client, when installed: not duplicated here)
    └── events: babysea.generation.status (one per status change), babysea.rate_limited

``submit`` spans carry ``gen_ai.operation.name = generate_content`` as well (a submission
starts one); ``wait`` spans carry ``wait``, the SDK's own operation (no predefined value fits).

Metrics (meter ``asyncsdk``):

======================================  =========  ==========================================
instrument                              unit       attributes
======================================  =========  ==========================================
gen_ai.client.operation.duration        s          operation, provider, model, error.type
babysea.client.rate_limited (counter)   {429}      babysea.rate_limit.kind: rate | concurrent
babysea.client.gate.wait (histogram)    s          babysea.gate.kind: window | slot
babysea.client.generation.polls (hist)  {poll}     gen_ai.request.model, status
babysea.client.credits.spent (counter)  {credit}   gen_ai.request.model
babysea.client.generations (counter)    {gen.}     gen_ai.request.model, status (final)
======================================  =========  ==========================================

A generation's final status, polls and credits are counted once per client, when it is first
seen ending; credits count only for ``succeeded`` generations (a failed one is refunded).

How the client calls it::

    with telemetry.call("generate", model, prompt) as span:
        with telemetry.gate_wait("window"):
            ...                                   # the gate admits the submission
        telemetry.rate_limited("concurrent")      # on each 429 received
        span.set_generation(generation_id, credits)
        telemetry.poll(span)                      # on each status read
        telemetry.status(span, generation)        # on each status change
"""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from ._version import __version__

if TYPE_CHECKING:
    from ._models import Generation

__all__ = [
    "PROVIDER",
    "GateKind",
    "OtelTelemetry",
    "RateLimitKind",
    "SpanHandle",
    "Telemetry",
    "make_telemetry",
]

GateKind = Literal["window", "slot"]
RateLimitKind = Literal["rate", "concurrent"]

PROVIDER: Final = "babysea"
INSTRUMENTATION: Final = "asyncsdk"
#: ``gen_ai.operation.name`` of each SDK operation (see the module docstring).
OPERATION_NAMES: Final[Mapping[str, str]] = {
    "generate": "generate_content",
    "submit": "generate_content",
    "wait": "wait",
}
#: How many ended generations a client remembers as already counted.
_COUNTED_MEMORY: Final = 4096

# Attribute names: the GenAI semantic conventions', then the SDK's own (``babysea.``).
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
OUTPUT_TYPE: Final = "gen_ai.output.type"
RESPONSE_ID: Final = "gen_ai.response.id"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
GENERATION_ID: Final = "babysea.generation.id"
GENERATION_STATUS: Final = "babysea.generation.status"
CREDITS: Final = "babysea.credits"
GATE_KIND: Final = "babysea.gate.kind"
RATE_LIMIT_KIND: Final = "babysea.rate_limit.kind"
STATUS_EVENT: Final = "babysea.generation.status"
RATE_LIMITED_EVENT: Final = "babysea.rate_limited"


class SpanHandle:
    """What :meth:`Telemetry.call` yields: the call's span, to complete as the call goes."""

    __slots__ = ()

    def set_generation(self, generation_id: str, credits: int | None = None) -> None:
        """The generation this call created or waits for, and what it costs."""


class _NoCall:
    """The no-op twin's context manager: shared, stateless, re-entrant."""

    __slots__ = ()

    def __enter__(self) -> SpanHandle:
        return _NO_HANDLE

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_HANDLE: Final = SpanHandle()
_NO_CALL: Final = _NoCall()


class Telemetry:
    """Telemetry that records nothing: what a client has without OpenTelemetry."""

    __slots__ = ()

    #: Whether this records anything.
    enabled: bool = False

    def call(
        self, operation: str, model: str | None, prompt: str | None
    ) -> AbstractContextManager[SpanHandle]:
        """A span around one ``generate`` / ``submit`` / ``wait`` call."""
        return _NO_CALL

    def gate_wait(self, kind: GateKind) -> AbstractContextManager[object]:
        """A child span around the time spent waiting in the gate for the window or a slot."""
        return _NO_CALL

    def status(self, handle: SpanHandle, generation: Generation) -> None:
        """The generation changed status (an event; metrics once it has ended)."""

    def poll(self, handle: SpanHandle) -> None:
        """One status read of the call's generation."""

    def rate_limited(self, kind: RateLimitKind) -> None:
        """A 429 was received: ``rate`` (RATE_LIMIT_ERROR) or ``concurrent``."""


def make_telemetry(
    enabled: bool | None = None,
    *,
    record_prompts: bool = False,
    base_url: str | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Telemetry:
    """The telemetry of one client.

    :param enabled: ``True``: record (ImportError naming the extra without it); ``False``: the
        no-op; ``None``: record if the application runs OpenTelemetry (see the module
        docstring), else the no-op, importing nothing.
    :param record_prompts: put each prompt on its span (``gen_ai.input.messages``).
    :param base_url: the client's API root, for ``server.address`` / ``server.port``.
    :param tracer_provider: / :param meter_provider: default: the global ones.
    """
    if enabled is False:
        return _NO_TELEMETRY
    if enabled is None and not _application_runs_opentelemetry():
        return _NO_TELEMETRY
    try:
        return OtelTelemetry(
            record_prompts=record_prompts,
            base_url=base_url,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
    except ImportError as exc:
        raise ImportError(
            "telemetry needs opentelemetry-api: pip install 'asyncsdk[otel]'"
        ) from exc


def _application_runs_opentelemetry() -> bool:
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


_NO_TELEMETRY: Final = Telemetry()


class _Handle(SpanHandle):
    __slots__ = ("model", "polls", "span")

    def __init__(self, span: Any, model: str | None) -> None:
        self.span = span
        self.model = model
        self.polls = 0

    def set_generation(self, generation_id: str, credits: int | None = None) -> None:
        self.span.set_attribute(RESPONSE_ID, generation_id)
        self.span.set_attribute(GENERATION_ID, generation_id)
        if credits is not None:
            self.span.set_attribute(CREDITS, credits)


class _Instruments:
    """The meter's instruments, made once per meter provider and shared by its clients
    (making them again would only log a duplicate-instrument warning per client)."""

    def __init__(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration"
        )
        self.rate_limited = meter.create_counter(
            "babysea.client.rate_limited",
            unit="{429}",
            description="429 answers received, by kind (the SDK's promise is zero)",
        )
        self.gate_wait = meter.create_histogram(
            "babysea.client.gate.wait",
            unit="s",
            description="Time a submission waited in the account's gate",
        )
        self.polls = meter.create_histogram(
            "babysea.client.generation.polls",
            unit="{poll}",
            description="Status reads per generation, counted when it ends",
        )
        self.credits = meter.create_counter(
            "babysea.client.credits.spent",
            unit="{credit}",
            description="Credits of the generations that succeeded",
        )
        self.generations = meter.create_counter(
            "babysea.client.generations",
            unit="{generation}",
            description="Generations seen ending, by final status",
        )


#: The instruments of each meter provider passed in (by identity, holding the provider so
#: that its id is not reused), and under ``None`` those of the global one.
_INSTRUMENTS: dict[int | None, tuple[Any, _Instruments]] = {}


def _instruments_for(meter_provider: Any) -> _Instruments:
    from opentelemetry import metrics

    key = None if meter_provider is None else id(meter_provider)
    entry = _INSTRUMENTS.get(key)
    if entry is None or entry[0] is not meter_provider:
        # The global meter is a proxy until the application sets its provider, and then
        # forwards to it: made once, it serves every client whenever that happens.
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider=meter_provider)
        entry = _INSTRUMENTS[key] = (meter_provider, _Instruments(meter))
    return entry[1]


class OtelTelemetry(Telemetry):
    """Telemetry recorded through the OpenTelemetry API (see the module docstring)."""

    __slots__ = (
        "_base",
        "_counted",
        "_error",
        "_instruments",
        "_record_prompts",
        "_span_kind",
        "_trace",
        "_tracer",
    )

    enabled = True

    def __init__(
        self,
        *,
        record_prompts: bool = False,
        base_url: str | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer(
            INSTRUMENTATION, __version__, tracer_provider=tracer_provider
        )
        self._span_kind = trace.SpanKind.CLIENT
        self._instruments = _instruments_for(meter_provider)
        self._record_prompts = record_prompts
        self._base: dict[str, Any] = {PROVIDER_NAME: PROVIDER, OUTPUT_TYPE: "image"}
        if base_url:
            parts = urlsplit(base_url)
            if parts.hostname:
                self._base[SERVER_ADDRESS] = parts.hostname
                self._base[SERVER_PORT] = parts.port or (443 if parts.scheme == "https" else 80)
        self._counted: collections.OrderedDict[str, None] = collections.OrderedDict()

    @contextmanager
    def call(self, operation: str, model: str | None, prompt: str | None) -> Iterator[SpanHandle]:
        operation_name = OPERATION_NAMES.get(operation, operation)
        attributes = {OPERATION_NAME: operation_name, **self._base}
        if model:
            attributes[REQUEST_MODEL] = model
        if prompt is not None and self._record_prompts:
            message = {"role": "user", "parts": [{"type": "text", "content": prompt}]}
            attributes[INPUT_MESSAGES] = json.dumps([message])
        name = f"{operation} {model}" if model else operation
        metric = {OPERATION_NAME: operation_name, PROVIDER_NAME: PROVIDER}
        if model:
            metric[REQUEST_MODEL] = model
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            name, kind=self._span_kind, attributes=attributes
        ) as span:
            try:
                yield _Handle(span, model)
            except BaseException as exc:
                metric[ERROR_TYPE] = type(exc).__qualname__
                span.set_attribute(ERROR_TYPE, metric[ERROR_TYPE])
                raise
            finally:
                self._instruments.duration.record(time.perf_counter() - started, metric)

    @contextmanager
    def gate_wait(self, kind: GateKind) -> Iterator[object]:
        started = time.perf_counter()
        with self._tracer.start_as_current_span(f"gate wait {kind}", attributes={GATE_KIND: kind}):
            try:
                yield None
            finally:
                self._instruments.gate_wait.record(time.perf_counter() - started, {GATE_KIND: kind})

    def status(self, handle: SpanHandle, generation: Generation) -> None:
        if not isinstance(handle, _Handle):
            return
        status = str(generation.status.value)
        handle.span.add_event(
            STATUS_EVENT, {GENERATION_STATUS: status, GENERATION_ID: generation.generation_id}
        )
        if not generation.status.is_terminal:
            return
        handle.span.set_attribute(GENERATION_STATUS, status)
        if generation.generation_id in self._counted:
            return
        self._counted[generation.generation_id] = None
        while len(self._counted) > _COUNTED_MEMORY:
            self._counted.popitem(last=False)
        model = generation.model_provider or handle.model
        labels = {GENERATION_STATUS: status, **({REQUEST_MODEL: model} if model else {})}
        self._instruments.generations.add(1, labels)
        self._instruments.polls.record(handle.polls, labels)
        if status == "succeeded" and generation.credit_cost:
            spent = {REQUEST_MODEL: model} if model else {}
            self._instruments.credits.add(generation.credit_cost, spent)

    def poll(self, handle: SpanHandle) -> None:
        if isinstance(handle, _Handle):
            handle.polls += 1

    def rate_limited(self, kind: RateLimitKind) -> None:
        self._instruments.rate_limited.add(1, {RATE_LIMIT_KIND: kind})
        self._trace.get_current_span().add_event(RATE_LIMITED_EVENT, {RATE_LIMIT_KIND: kind})
