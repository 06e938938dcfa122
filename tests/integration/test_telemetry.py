"""OpenTelemetry around a real client and emulator.

- Without the ``otel`` extra (simulated in a child by a meta-path blocker) ``import asyncsdk``
  and client calls import nothing from ``opentelemetry``.
- ``opentelemetry-instrumentation-aiohttp-client`` traces the SDK's HTTP requests: the SDK
  does not make HTTP spans of its own.
- The span tree of a full ``generate()`` with ``AsyncClient(..., telemetry=True)``, run in a
  child that sets the global providers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from asyncsdk.testing import EmulatorThread, client_for

pytestmark = pytest.mark.anyio
CHILD_TIMEOUT = 90


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ASYNCSDK_"))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,  # the child is killed past it
        check=False,
        env=env,
    )


WITHOUT_THE_EXTRA = """
import sys

attempts = []

class Absent:
    '''opentelemetry is not installed: every import of it fails, and is noted.'''

    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Absent())

import anyio
import asyncsdk
from asyncsdk.testing import EmulatorThread, client_for

async def main():
    with EmulatorThread(window=0.5, starting_time=0.02, processing_time=0.05) as served:
        async with client_for(served.emulator) as client:
            await client.status()
            generation = await client.generate("google/nano-banana", "a red kite")
            assert generation.status is asyncsdk.GenerationStatus.SUCCEEDED

anyio.run(main)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print({"attempts": attempts, "loaded": loaded})
"""


def test_without_the_extra_nothing_is_imported() -> None:
    done = run_child(WITHOUT_THE_EXTRA)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "{'attempts': [], 'loaded': []}"


@pytest.fixture
def http_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


async def test_the_aiohttp_instrumentation_traces_the_sdks_requests(
    http_spans: InMemorySpanExporter,
) -> None:
    with EmulatorThread(window=0.5) as served:
        token = served.emulator.tokens[0]
        async with client_for(served.emulator) as client:
            await client.status()
            await client.account()
    spans = http_spans.get_finished_spans()
    assert [span.name for span in spans] == ["GET", "GET"]
    for span, path in zip(spans, ("/api/v1/status", "/api/v1/data/account"), strict=True):
        attributes = dict(span.attributes or {})
        url = attributes.get("url.full", attributes.get("http.url"))
        assert span.kind is SpanKind.CLIENT
        assert url == f"{served.emulator.url}{path}"
        assert (
            attributes.get("http.response.status_code", attributes.get("http.status_code")) == 200
        )
        assert token not in json.dumps(attributes)


GENERATE_WITH_TELEMETRY = """
import json
import anyio
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(tracer_provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from asyncsdk.testing import EmulatorThread, client_for

async def main():
    with EmulatorThread(window=0.5, starting_time=0.05, processing_time=0.1) as served:
        async with client_for(served.emulator, telemetry=True) as client:
            generation = await client.generate("google/nano-banana", "a red kite at dawn")
    return generation.generation_id

generation_id = anyio.run(main)
spans = [
    {
        "name": s.name,
        "id": s.context.span_id,
        "parent": s.parent.span_id if s.parent else None,
        "kind": s.kind.name,
        "attributes": dict(s.attributes or {}),
        "events": [[e.name, dict(e.attributes or {})] for e in s.events],
    }
    for s in exporter.get_finished_spans()
]
points = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            points[metric.name] = [
                {"attributes": dict(p.attributes), "value": getattr(p, "value", None),
                 "sum": getattr(p, "sum", None), "count": getattr(p, "count", None)}
                for p in metric.data.data_points
            ]
print(json.dumps({"generation_id": generation_id, "spans": spans, "metrics": points}))
"""


def by_name(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [span] = [span for span in spans if span["name"] == name]
    return span


def test_the_span_tree_of_generate() -> None:
    done = run_child(GENERATE_WITH_TELEMETRY)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    spans, points, generation_id = result["spans"], result["metrics"], result["generation_id"]

    generate = by_name(spans, "generate google/nano-banana")
    assert generate["parent"] is None and generate["kind"] == "CLIENT"
    assert generate["attributes"] == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "babysea",
        "gen_ai.request.model": "google/nano-banana",
        "gen_ai.output.type": "image",
        "server.address": "127.0.0.1",
        "server.port": generate["attributes"]["server.port"],
        "gen_ai.response.id": generation_id,
        "babysea.generation.id": generation_id,
        "babysea.credits": 2,
        "babysea.generation.status": "succeeded",
    }
    submit = by_name(spans, "submit google/nano-banana")
    assert submit["parent"] == generate["id"]
    assert submit["attributes"]["gen_ai.response.id"] == generation_id
    gates = [span for span in spans if span["name"].startswith("gate wait ")]
    assert gates and all(span["parent"] == submit["id"] for span in gates)
    wait = [span for span in spans if span["name"].startswith("wait")]
    assert len(wait) == 1 and wait[0]["parent"] == generate["id"]
    statuses = [
        event[1]["babysea.generation.status"]
        for event in wait[0]["events"]
        if event[0] == "babysea.generation.status"
    ]
    assert statuses[-1] == "succeeded" and len(statuses) == len(set(statuses))
    assert "a red kite at dawn" not in done.stdout  # prompts are not recorded by default

    assert points["babysea.client.generations"] == [
        {
            "attributes": {
                "babysea.generation.status": "succeeded",
                "gen_ai.request.model": "google/nano-banana",
            },
            "value": 1,
            "sum": None,
            "count": None,
        }
    ]
    [polls] = points["babysea.client.generation.polls"]
    assert polls["count"] == 1 and polls["sum"] >= 1
    [credits] = points["babysea.client.credits.spent"]
    assert credits["value"] == 2
    assert "babysea.client.rate_limited" not in points  # the promise: no 429
    assert {p["attributes"]["babysea.gate.kind"] for p in points["babysea.client.gate.wait"]}
    durations = {
        p["attributes"]["gen_ai.operation.name"] for p in points["gen_ai.client.operation.duration"]
    }
    assert "generate_content" in durations
