"""``asyncsdk._telemetry`` with the OpenTelemetry SDK's in-memory exporter and metric reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from asyncsdk import Generation, GenerationStatus
from asyncsdk._telemetry import OtelTelemetry, Telemetry, make_telemetry

MODEL = "google/nano-banana"


@attrs.define
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def telemetry(self, **options: Any) -> Telemetry:
        return make_telemetry(
            True,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )

    def finished(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.spans.get_finished_spans()}

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def generation(status: str, generation_id: str = "g-1", cost: int = 2) -> Generation:
    return Generation(
        generation_id, GenerationStatus(status), model_provider=MODEL, credit_cost=cost
    )


def test_a_call_span_follows_the_genai_conventions(otel: Otel) -> None:
    telemetry = otel.telemetry(base_url="https://api.babysea.ai/api/v1")
    with telemetry.call("generate", MODEL, "a secret prompt") as span:
        with telemetry.gate_wait("slot"):
            pass
        span.set_generation("g-1", credits=2)
        for status in ("starting", "processing", "succeeded"):
            telemetry.poll(span)
            telemetry.status(span, generation(status))
    spans = otel.finished()
    call, gate = spans["generate google/nano-banana"], spans["gate wait slot"]
    assert call.kind is SpanKind.CLIENT
    assert dict(call.attributes or {}) == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "babysea",
        "gen_ai.request.model": MODEL,
        "gen_ai.output.type": "image",
        "server.address": "api.babysea.ai",
        "server.port": 443,
        "gen_ai.response.id": "g-1",
        "babysea.generation.id": "g-1",
        "babysea.credits": 2,
        "babysea.generation.status": "succeeded",
    }
    assert gate.parent is not None and gate.parent.span_id == call.context.span_id
    assert dict(gate.attributes or {}) == {"babysea.gate.kind": "slot"}
    assert [dict(e.attributes or {})["babysea.generation.status"] for e in call.events] == [
        "starting",
        "processing",
        "succeeded",
    ]
    assert "a secret prompt" not in json.dumps([dict(s.attributes or {}) for s in spans.values()])


def test_prompts_are_recorded_only_when_asked(otel: Otel) -> None:
    with otel.telemetry(record_prompts=True).call("submit", MODEL, "a red kite"):
        pass
    [span] = otel.spans.get_finished_spans()
    assert span.name == "submit google/nano-banana"
    assert json.loads(str((span.attributes or {})["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "a red kite"}]}
    ]


def test_a_failed_call_has_an_error_type_and_an_error_status(otel: Otel) -> None:
    telemetry = otel.telemetry()
    with pytest.raises(TimeoutError), telemetry.call("wait", None, None):
        raise TimeoutError("still processing")
    [span] = otel.spans.get_finished_spans()
    assert span.name == "wait"
    assert (span.attributes or {})["error.type"] == "TimeoutError"
    assert (span.attributes or {})["gen_ai.operation.name"] == "wait"
    assert span.status.status_code is StatusCode.ERROR
    [point] = otel.points("gen_ai.client.operation.duration")
    assert point.attributes["error.type"] == "TimeoutError" and point.count == 1


def test_metrics(otel: Otel) -> None:
    telemetry = otel.telemetry()
    with telemetry.call("generate", MODEL, None) as span:
        with telemetry.gate_wait("window"):
            telemetry.rate_limited("rate")
        telemetry.rate_limited("concurrent")
        telemetry.rate_limited("concurrent")
        for _ in range(3):
            telemetry.poll(span)
        telemetry.status(span, generation("succeeded", "g-1", cost=4))
        telemetry.status(span, generation("succeeded", "g-1", cost=4))  # counted once
    with telemetry.call("wait", None, None) as span:
        telemetry.poll(span)
        telemetry.status(span, generation("failed", "g-2", cost=4))

    limited = {
        p.attributes["babysea.rate_limit.kind"]: p.value
        for p in otel.points("babysea.client.rate_limited")
    }
    assert limited == {"rate": 1, "concurrent": 2}
    [gate] = otel.points("babysea.client.gate.wait")
    assert gate.attributes == {"babysea.gate.kind": "window"} and gate.count == 1
    ended = {
        p.attributes["babysea.generation.status"]: p.value
        for p in otel.points("babysea.client.generations")
    }
    assert ended == {"succeeded": 1, "failed": 1}
    polls = {
        p.attributes["babysea.generation.status"]: p.sum
        for p in otel.points("babysea.client.generation.polls")
    }
    assert polls == {"succeeded": 3, "failed": 1}
    [credits] = otel.points("babysea.client.credits.spent")
    assert (credits.value, credits.attributes) == (4, {"gen_ai.request.model": MODEL})
    spans = otel.finished()
    events = [e.name for e in spans["generate google/nano-banana"].events]
    assert (
        events
        == ["babysea.rate_limited", "babysea.rate_limited"] + ["babysea.generation.status"] * 2
    )
    assert [e.name for e in spans["gate wait window"].events] == ["babysea.rate_limited"]


def test_clients_share_the_instruments_of_a_meter_provider(otel: Otel) -> None:
    first, second = otel.telemetry(), otel.telemetry()
    first.rate_limited("rate")
    second.rate_limited("rate")
    [point] = otel.points("babysea.client.rate_limited")
    assert point.value == 2


def test_the_no_op_twin_records_nothing_and_shares_its_objects(otel: Otel) -> None:
    telemetry = make_telemetry(False)
    assert type(telemetry) is Telemetry and not telemetry.enabled
    with telemetry.call("generate", MODEL, "p") as span, telemetry.gate_wait("window"):
        span.set_generation("g-1", 2)
        telemetry.poll(span)
        telemetry.status(span, generation("succeeded"))
        telemetry.rate_limited("rate")
    assert telemetry.call("submit", MODEL, None) is telemetry.call("wait", None, None)
    assert otel.spans.get_finished_spans() == ()


def test_by_default_telemetry_follows_the_applications_tracer_provider() -> None:
    """Decided from ``sys.modules`` and the global provider, in a fresh interpreter."""
    code = textwrap.dedent(
        """
        import sys
        from asyncsdk._telemetry import OtelTelemetry, make_telemetry
        assert type(make_telemetry()) is not OtelTelemetry, "no OpenTelemetry loaded"
        assert not any(m.startswith("opentelemetry") for m in sys.modules)
        from opentelemetry import trace
        assert type(make_telemetry()) is not OtelTelemetry, "no provider set"
        from opentelemetry.sdk.trace import TracerProvider
        trace.set_tracer_provider(TracerProvider())
        assert type(make_telemetry()) is OtelTelemetry
        assert type(make_telemetry(False)) is not OtelTelemetry
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_asking_for_telemetry_without_the_extra_names_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Absent:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, Absent())
        from asyncsdk._telemetry import make_telemetry
        try:
            make_telemetry(True)
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'asyncsdk[otel]'" in done.stdout


def test_otel_telemetry_is_the_enabled_kind(otel: Otel) -> None:
    assert isinstance(otel.telemetry(), OtelTelemetry) and otel.telemetry().enabled
