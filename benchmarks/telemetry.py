"""Telemetry: what the instrumentation of one ``generate()`` costs, with and without OpenTelemetry.

One ``generate()`` makes these telemetry calls (see ``asyncsdk._telemetry``): a ``call`` span
for ``generate`` and for each of ``submit`` and ``wait``, one ``gate_wait``, one
``set_generation``, a ``poll`` per status read (4 here) and a ``status`` per change (3). That
sequence is timed, in one process and in turn, for:

- **none**: the same control flow with the telemetry calls left out (the floor);
- **no-op twin**: ``Telemetry()``, what a client has without OpenTelemetry (nothing imported);
- **OTel API, no SDK**: ``OtelTelemetry`` with ``opentelemetry-api`` and no provider set;
- **OTel SDK**: a real ``TracerProvider`` (spans to an in-memory exporter) and ``MeterProvider``.

Each is set against one ``get_generation()`` (a status read over loopback from an emulator in a
thread) timed in the same run: the cheapest call a ``generate()`` makes, several times.
Target: the no-op twin adds under 1% of one status read per ``generate()``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncsdk import Generation, GenerationStatus
from asyncsdk._telemetry import OtelTelemetry, Telemetry
from asyncsdk.testing import EmulatorThread, client_for

from ._common import Spread, Table, interleaved, progress, run_main

MODEL = "google/nano-banana"
STATUSES = [
    Generation("g-1", GenerationStatus(s), model_provider=MODEL, credit_cost=2)
    for s in ("starting", "processing", "succeeded")
]
POLLS = 4
TARGET = 0.01


def instrumented(telemetry: Telemetry) -> Callable[[], None]:
    """One generate()'s telemetry calls, in the order the client makes them."""

    def run() -> None:
        with telemetry.call("generate", MODEL, "a prompt") as outer:
            with telemetry.call("submit", MODEL, "a prompt") as submit:
                with telemetry.gate_wait("window"):
                    pass
                submit.set_generation("g-1", 2)
            with telemetry.call("wait", None, None) as wait:
                for index in range(POLLS):
                    telemetry.poll(wait)
                    if index < len(STATUSES):
                        telemetry.status(wait, STATUSES[index])
            outer.set_generation("g-1", 2)

    return run


def bare() -> None:
    """The same control flow without the telemetry calls."""
    for index in range(POLLS):
        if index < len(STATUSES):
            pass


def per_call(function: Callable[[], None], loops: int) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        started = time.perf_counter()
        for _ in range(loops):
            function()
        return (time.perf_counter() - started) / loops

    return measure


def otel_variants() -> tuple[dict[str, Telemetry], InMemorySpanExporter]:
    """The two OpenTelemetry variants, and the SDK's exporter (cleared between repetitions)."""
    tracer_provider = TracerProvider()
    exporter = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    sdk = OtelTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return {"OTel API, no SDK": OtelTelemetry(), "OTel SDK": sdk}, exporter


async def run(quick: bool) -> list[Table]:
    loops, repetitions, reads = (300, 3, 50) if quick else (20_000, 9, 2_000)
    variants, exporter = otel_variants()
    functions: dict[str, Callable[[], None]] = {
        "none": bare,
        "no-op twin": instrumented(Telemetry()),
        **{name: instrumented(telemetry) for name, telemetry in variants.items()},
    }

    with EmulatorThread(window=0.5, starting_time=0.0, processing_time=0.0) as served:
        async with client_for(served.emulator) as client:
            submission = await client.submit(MODEL, "a read over and over")
            generation_id = submission.generation_id
            await client.wait(generation_id)

            async def one_read() -> float:
                started = time.perf_counter()
                for _ in range(reads):
                    await client.get_generation(generation_id)
                return (time.perf_counter() - started) / reads

            progress(f"telemetry: {repetitions} repetitions of {loops} generate()s each")
            measures = {name: per_call(f, loops) for name, f in functions.items()}

            async def clear_then_read() -> float:
                exporter.clear()
                return await one_read()

            results = await interleaved(
                {**measures, "get_generation()": clear_then_read}, repetitions
            )

    reads_seconds = results.pop("get_generation()")
    floor = results["none"]
    table = Table(
        "Telemetry per generate(): cost against one status read",
        ["variant", "telemetry per generate()", "added to the floor", "share of one status read"],
    )
    for name, seconds in results.items():
        added = [max(0.0, s - f) for s, f in zip(seconds, floor, strict=True)]
        share = [a / r for a, r in zip(added, reads_seconds, strict=True)]
        table.add(
            name,
            Spread.of([s * 1e6 for s in seconds]).fmt(".2f", " µs"),
            Spread.of([a * 1e6 for a in added]).fmt(".2f", " µs"),
            Spread.of([s * 100 for s in share]).fmt(".3f", "%"),
        )
    read = Spread.of([r * 1e6 for r in reads_seconds]).fmt(".0f", " µs")
    table.notes.append(
        f"one get_generation() over loopback: {read}; a generate() makes several of them. "
        f"Target: the no-op twin adds under {TARGET:.0%} of one read."
    )
    return [table]


if __name__ == "__main__":
    run_main(__doc__ or "", run)
