"""1. Per-call overhead: ``get_generation()`` versus a hand-written aiohttp GET.

The emulator runs in another process; one succeeded generation is read over and over through
one keep-alive session, sequentially and from 32 concurrent tasks, by three clients in turn
(sdk, aiohttp, httpx, sdk, aiohttp, httpx, ...):

- **asyncsdk**: ``AsyncClient.get_generation(id)``: the gate's read turn, the retrying
  wrapper, the transport, structuring into a frozen ``Generation``, the slot bookkeeping;
- **raw aiohttp** (the floor): ``session.get(url, headers=auth)``, ``await resp.json()``,
  check the status, take ``["data"]``: what a careful hand-written client does;
- **typed wrapper**: raw aiohttp, then the record built into a ``Generation`` by a
  hand-written constructor call (no converter, no retries, no gate): the least a typed
  client can do;
- **raw httpx**: the same as raw aiohttp with ``httpx.AsyncClient``, for context.

Each figure is the ratio of a client's time per call to raw aiohttp's in the same repetition.
Targets (issue 12): asyncsdk within 1.10x, sequentially and with 32 tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import httpx

from asyncsdk import AsyncClient, Generation, GenerationStatus
from asyncsdk._wire import parse_datetime

from ._common import (
    EmulatorProcess,
    Spread,
    Table,
    interleaved,
    limits_for,
    progress,
    run_main,
    summary,
)

TIME_SCALE = 0.01
TASKS = 32
TARGETS = {"sequential": 1.10, "concurrent": 1.10}
#: httpx is 3-20x slower here: it makes fewer calls per repetition (the figure is per call).
SLOW = {"raw httpx": 8}

Call = Callable[[], Awaitable[Any]]


async def timed(call: Call, calls: int, tasks: int) -> tuple[float, float]:
    """Seconds per call, wall-clock and this process's CPU, ``calls`` in all, spread over
    ``tasks`` concurrent tasks."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    shares = [calls // tasks + (i < calls % tasks) for i in range(tasks)]
    started, cpu = time.perf_counter(), time.process_time()
    if tasks == 1:
        await worker(calls)
    else:
        await asyncio.gather(*(worker(n) for n in shares))
    return (time.perf_counter() - started) / calls, (time.process_time() - cpu) / calls


async def finished_generation(emu: EmulatorProcess, session: aiohttp.ClientSession) -> str:
    """Submit one generation with plain aiohttp and wait until it has succeeded."""
    headers = {"Authorization": f"Bearer {emu.tokens[0]}"}
    url = emu.base_url + "/image-generation/google/nano-banana"
    async with session.post(url, json={"prompt": "a red kite at dawn"}, headers=headers) as r:
        generation_id: str = (await r.json())["data"]["generationId"]
    while True:
        async with session.get(
            f"{emu.base_url}/image-generation/{generation_id}", headers=headers
        ) as r:
            if (await r.json())["data"]["status"] == "succeeded":
                return generation_id
        await asyncio.sleep(0.01)


async def run(quick: bool) -> list[Table]:
    repetitions = 1 if quick else 15
    calls = {"sequential": 60 if quick else 800, "concurrent": 120 if quick else 2000}
    async with (
        EmulatorProcess(time_scale=TIME_SCALE) as emu,
        aiohttp.ClientSession() as session,
        httpx.AsyncClient() as hx,
        AsyncClient(emu.tokens[0], base_url=emu.base_url, limits=limits_for(TIME_SCALE)) as sdk,
    ):
        generation_id = await finished_generation(emu, session)
        url = f"{emu.base_url}/image-generation/{generation_id}"
        headers = {"Authorization": f"Bearer {emu.tokens[0]}"}

        async def raw_aiohttp() -> Any:
            async with session.get(url, headers=headers) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                return body["data"]

        async def typed_wrapper() -> Any:
            async with session.get(url, headers=headers) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
                return _generation(body["data"])

        async def raw_httpx() -> Any:
            response = await hx.get(url, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            return response.json()["data"]

        async def asyncsdk() -> Any:
            return await sdk.get_generation(generation_id)

        clients: dict[str, Call] = {
            "asyncsdk": asyncsdk,
            "raw aiohttp": raw_aiohttp,
            "typed wrapper": typed_wrapper,
            "raw httpx": raw_httpx,
        }
        results: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for mode, tasks in (("sequential", 1), ("concurrent", TASKS)):
            count = calls[mode]
            for call in clients.values():  # warm up connections and code paths
                await timed(call, min(count, 200), tasks)
            progress(f"overhead: {mode}, {repetitions} x {len(clients)} x {count} calls")
            results[mode] = await interleaved(
                {
                    name: _bind(call, max(count // SLOW.get(name, 1), tasks), tasks)
                    for name, call in clients.items()
                },
                repetitions,
            )
    return [_table(results, repetitions, calls)]


def _generation(d: dict[str, Any]) -> Generation:
    """The typed wrapper's record: one constructor call, no conversions but the status and
    the timestamp."""
    return Generation(
        d["generationId"],
        GenerationStatus(d["status"]),
        d.get("name"),
        d.get("prompt"),
        d.get("aspectRatio"),
        d.get("modelProvider"),
        d.get("outputNumber"),
        d.get("outputSuccess"),
        d.get("outputFailed"),
        d.get("currentImage"),
        d.get("deletedImage"),
        tuple(d.get("outputImages") or ()),
        d.get("creditCost"),
        d.get("failureReason"),
        d.get("predictTime"),
        d.get("totalTime"),
        parse_datetime(d["createdAt"]) if d.get("createdAt") else None,
        d.get("isPublic"),
        tuple(d.get("imageInput") or ()),
    )


def _bind(call: Call, calls: int, tasks: int) -> Callable[[], Awaitable[tuple[float, float]]]:
    return lambda: timed(call, calls, tasks)


def _ratios(values: Sequence[float], baseline: Sequence[float]) -> Spread:
    return Spread.of([v / b for v, b in zip(values, baseline, strict=True)])


def _table(
    results: dict[str, dict[str, list[tuple[float, float]]]],
    repetitions: int,
    calls: dict[str, int],
) -> Table:
    table = Table(
        "1. Per-call overhead: get_generation() vs raw aiohttp GET + json()",
        [
            "mode",
            "client",
            "us per call",
            "ratio to raw aiohttp",
            "target",
            "verdict",
            "client CPU us per call",
            "CPU ratio",
        ],
    )
    for mode, by_client in results.items():
        floor = [wall for wall, _ in by_client["raw aiohttp"]]
        floor_cpu = [cpu for _, cpu in by_client["raw aiohttp"]]
        for name, measured in by_client.items():
            values = [wall for wall, _ in measured]
            cpus = [cpu for _, cpu in measured]
            ratio = _ratios(values, floor)
            micros = Spread.of([v * 1e6 for v in values])
            target = TARGETS[mode] if name == "asyncsdk" else None
            verdict = "" if target is None else ("met" if ratio.median <= target else "MISSED")
            label = f"{mode} ({TASKS} tasks)" if mode == "concurrent" else mode
            table.add(
                label,
                name,
                micros.fmt(".0f"),
                ratio.fmt(".3f") + "x",
                f"<= {target:.2f}x" if target else "",
                verdict,
                Spread.of([c * 1e6 for c in cpus]).fmt(".0f"),
                _ratios(cpus, floor_cpu).fmt(".3f") + "x",
            )
    ratios = {
        mode: {
            name: _ratios([w for w, _ in measured], [w for w, _ in by["raw aiohttp"]])
            for name, measured in by.items()
        }
        for mode, by in results.items()
    }
    sdk = "{:.3f}x / {:.3f}x".format(*(ratios[m]["asyncsdk"].median for m in results))
    wrapper = "{:.3f}x / {:.3f}x".format(*(ratios[m]["typed wrapper"].median for m in results))
    summary(
        "get_generation vs raw aiohttp, sequential / 32 tasks",
        sdk,
        f"typed wrapper: {wrapper}",
        "<= 1.10x both",
        all(ratios[m]["asyncsdk"].median <= TARGETS[m] for m in results),
    )
    table.notes += [
        f"Median (min-max) of {repetitions} interleaved repetitions of "
        f"{calls['sequential']} sequential / {calls['concurrent']} concurrent calls each; "
        "ratios are taken per repetition against raw aiohttp.",
        "One succeeded generation read over one keep-alive session; the emulator runs in "
        "another process. Client CPU: this process's CPU time per call (what the SDK adds, "
        "whatever the emulator's speed).",
    ]
    return table


def main() -> None:
    run_main(__doc__ or "", run)


if __name__ == "__main__":
    main()
