"""6. Against a hand-rolled client: what the SDK saves and what it costs, in the same run.

The hand-rolled client (:class:`HandRolled`) is what a competent engineer writes with the usual
libraries: one shared ``aiohttp.ClientSession``; per account an ``aiolimiter.AsyncLimiter``
of 10 submissions per window and an ``asyncio.Semaphore(1)`` held from the submission until a
poll sees the generation end; a fixed 1 s poll; ``tenacity`` retrying connection failures,
timeouts, 5xx and 429s (waiting ``Retry-After`` when the service says it, else exponential
backoff with jitter).

Both clients run the same jobs on fresh accounts of one emulator process, each repetition in
a fresh client process (the CPU figure is that process's own), the clients alternating:

- ``ACCOUNTS`` accounts x ``JOBS`` jobs, every job a ``generate()`` (SDK) or a ``job()``
  (hand-rolled) started at once, each account's jobs queueing in its own limiter;
- generations of 1.5 s (+/-10%), so that an account could run more than 10 a window: the
  rate limit binds, and a leaky bucket of 10 per window admits more than 10 in some window;
- ``DROP_AFTER`` of the submissions lose their answer after the generation was created (a
  reset connection): a client that sends again pays twice.

Figures: 429s the service answered; jobs charged twice (a second generation with the same
prompt); status polls per generation; the client process's CPU time per job; the time from
the first call to the last job done. Targets (issue 12): no 429s, no double charges, CPU per
job at most the hand-rolled client's.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import anyio
import tenacity
from aiolimiter import AsyncLimiter

from asyncsdk import AsyncClient

from ._common import (
    ROOT,
    EmulatorProcess,
    Spread,
    Table,
    emit_summaries,
    limits_for,
    parse_args,
    progress,
    summary,
)

MODEL = "google/nano-banana"
ACCOUNTS = 20
JOBS = 15
PROCESSING = 1.5
JITTER = 0.1
TIME_SCALE = 0.1
DROP_AFTER = 0.03
REPETITIONS = 3
KINDS = ("asyncsdk", "hand-rolled")


class Transient(Exception):
    """An answer worth another try (5xx, 429), with the pause the service asked for."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _wait(scale: float) -> Any:
    backoff = tenacity.wait_random_exponential(multiplier=0.5 * scale, max=8.0 * scale)

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, Transient) and error.retry_after is not None:
            return float(error.retry_after)
        return float(backoff(state))

    return wait


class HandRolled:
    """One account of the hand-rolled client (see the module docstring)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, scale: float
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.limiter = AsyncLimiter(10, 60.0 * scale)
        self.slot = asyncio.Semaphore(1)
        self.poll = 1.0 * scale
        self.retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(
                (aiohttp.ClientError, asyncio.TimeoutError, Transient)
            ),
            wait=_wait(scale),
            stop=tenacity.stop_after_attempt(8),
            reraise=True,
        )

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async for attempt in self.retrying:
            with attempt:
                async with self.session.request(
                    method, self.base_url + path, json=body, headers=self.headers
                ) as response:
                    if response.status == 429 or response.status >= 500:
                        retry_after = response.headers.get("Retry-After")
                        raise Transient(
                            response.status, float(retry_after) if retry_after else None
                        )
                    response.raise_for_status()
                    return (await response.json())["data"]
        raise AssertionError("unreachable")  # tenacity reraises the last failure

    async def job(self, prompt: str) -> str:
        """Submit ``prompt`` and poll every second until it ends; its final status."""
        async with self.slot:
            async with self.limiter:
                created = await self._call("POST", f"/image-generation/{MODEL}", {"prompt": prompt})
            generation_id = created["generationId"]
            while True:
                await asyncio.sleep(self.poll)
                record = await self._call("GET", f"/image-generation/{generation_id}")
                if record["status"] in ("succeeded", "failed"):
                    return str(record["status"])


async def _sdk(base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> int:
    limits = limits_for(scale)
    failures = 0
    clients = [
        AsyncClient(token, base_url=base_url, limits=limits, poll_interval=1.0 * scale)
        for token in tokens
    ]

    async def one(client: AsyncClient, prompt: str) -> None:
        nonlocal failures
        try:
            await client.generate(MODEL, prompt)
        except Exception:
            failures += 1

    try:
        async with anyio.create_task_group() as tg:
            for a, client in enumerate(clients):
                for j in range(jobs):
                    tg.start_soon(one, client, f"asyncsdk job {a}-{j}")
    finally:
        for client in clients:
            await client.aclose()
    return failures


async def _handrolled(base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> int:
    failures = 0
    async with aiohttp.ClientSession() as session:
        accounts = [HandRolled(session, base_url, token, scale) for token in tokens]

        async def one(account: HandRolled, prompt: str) -> None:
            nonlocal failures
            try:
                if await account.job(prompt) != "succeeded":
                    failures += 1
            except Exception:
                failures += 1

        async with anyio.create_task_group() as tg:
            for a, account in enumerate(accounts):
                for j in range(jobs):
                    tg.start_soon(one, account, f"hand-rolled job {a}-{j}")
    return failures


async def child(kind: str, base_url: str, tokens: Sequence[str], jobs: int, scale: float) -> Any:
    """One repetition of one client, in this (fresh) process."""
    run = _sdk if kind == "asyncsdk" else _handrolled
    cpu, started = time.process_time(), time.perf_counter()
    failures = await run(base_url, tokens, jobs, scale)
    return {
        "cpu": time.process_time() - cpu,
        "elapsed": time.perf_counter() - started,
        "failures": failures,
        "jobs": len(tokens) * jobs,
    }


async def _repetition(
    emu: EmulatorProcess, kind: str, tokens: Sequence[str], jobs: int, scale: float
) -> dict[str, Any]:
    await emu.reset()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.handrolled",
        "--child",
        kind,
        emu.base_url,
        str(jobs),
        str(scale),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate("\n".join(tokens).encode()), 600)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"{kind} child failed with exit code {process.returncode}")
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    stats = await emu.stats()
    figures.update(
        served_429s=stats.served_429s,
        double_charged=stats.double_charged,
        created=stats.created,
        polls=stats.polls,
    )
    return figures


async def run(quick: bool) -> list[Table]:
    accounts = 4 if quick else ACCOUNTS
    jobs = 12 if quick else JOBS
    repetitions = 1 if quick else REPETITIONS
    scale = TIME_SCALE / 4 if quick else TIME_SCALE
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    async with EmulatorProcess(
        accounts=accounts * repetitions * len(KINDS),
        time_scale=scale,
        processing_time=PROCESSING,
        jitter=JITTER,
        drop_after=DROP_AFTER,
        chaos_seed=12,
    ) as emu:
        order = list(KINDS)
        batch = 0
        for index in range(repetitions):
            random.Random(index).shuffle(order)  # neither client always goes first
            for kind in order:
                progress(f"hand-rolled: {kind}, {accounts} accounts x {jobs} jobs, rep {index + 1}")
                tokens = emu.tokens[batch * accounts : (batch + 1) * accounts]
                batch += 1
                results[kind].append(await _repetition(emu, kind, tokens, jobs, scale))
    return [_table(results, accounts, jobs, scale)]


def _table(
    results: dict[str, list[dict[str, Any]]], accounts: int, jobs: int, scale: float
) -> Table:
    def spread(kind: str, figure: str) -> Spread:
        return Spread.of([_figure(r, figure) for r in results[kind]])

    table = Table(
        f"6. Against a hand-rolled client: {accounts} accounts x {jobs} jobs, same run",
        ["figure", "asyncsdk", "hand-rolled", "ratio", "target", "verdict"],
    )
    sdk, hand = results["asyncsdk"], results["hand-rolled"]
    totals = {
        kind: {
            k: sum(r[k] for r in results[kind])
            for k in ("served_429s", "double_charged", "failures")
        }
        for kind in KINDS
    }
    table.add(
        "429s served",
        totals["asyncsdk"]["served_429s"],
        totals["hand-rolled"]["served_429s"],
        "",
        "0",
        "met" if totals["asyncsdk"]["served_429s"] == 0 else "MISSED",
    )
    table.add(
        "jobs charged twice",
        totals["asyncsdk"]["double_charged"],
        totals["hand-rolled"]["double_charged"],
        "",
        "0",
        "met" if totals["asyncsdk"]["double_charged"] == 0 else "MISSED",
    )
    table.add(
        "jobs failed",
        totals["asyncsdk"]["failures"],
        totals["hand-rolled"]["failures"],
        "",
        "0",
        "met" if totals["asyncsdk"]["failures"] == 0 else "MISSED",
    )
    polls = spread("asyncsdk", "polls_per_generation")
    table.add(
        "status polls per generation",
        polls.fmt(".2f"),
        spread("hand-rolled", "polls_per_generation").fmt(".2f"),
        _ratio(sdk, hand, "polls_per_generation").fmt(".2f") + "x",
        "",
        "",
    )
    cpu_ratio = _ratio(sdk, hand, "cpu_per_job_ms")
    table.add(
        "client CPU per job (ms)",
        spread("asyncsdk", "cpu_per_job_ms").fmt(".2f"),
        spread("hand-rolled", "cpu_per_job_ms").fmt(".2f"),
        cpu_ratio.fmt(".2f") + "x",
        "<= 1.00x",
        "met" if cpu_ratio.median <= 1.0 else "MISSED",
    )
    table.add(
        "time to the last job (s, real)",
        spread("asyncsdk", "elapsed").fmt(".1f"),
        spread("hand-rolled", "elapsed").fmt(".1f"),
        _ratio(sdk, hand, "elapsed").fmt(".2f") + "x",
        "",
        "",
    )
    table.notes += [
        f"Median (min-max) of {len(sdk)} repetitions per client, alternating, each in a fresh "
        f"client process on fresh accounts of one emulator process; counts are totals.",
        f"Time compressed {1 / scale:g}x (window {60 * scale:g} s, generations of "
        f"{PROCESSING * scale:g} s +/-{JITTER:.0%}, poll interval {scale:g} s for both); "
        f"{DROP_AFTER:.0%} of submissions lose their answer after the generation was created.",
        "Ratios are taken per repetition pair. CPU: the client process's own CPU time "
        "(user + system) from the first call to the last job, over the jobs.",
    ]
    summary(
        "client CPU per job",
        spread("asyncsdk", "cpu_per_job_ms").fmt(".2f", " ms"),
        spread("hand-rolled", "cpu_per_job_ms").fmt(".2f", " ms"),
        "<= the hand-rolled client's",
        cpu_ratio.median <= 1.0,
    )
    summary(
        "429s / jobs charged twice",
        f"{totals['asyncsdk']['served_429s']} / {totals['asyncsdk']['double_charged']}",
        f"{totals['hand-rolled']['served_429s']} / {totals['hand-rolled']['double_charged']}",
        "0 / 0",
        totals["asyncsdk"]["served_429s"] == 0 and totals["asyncsdk"]["double_charged"] == 0,
    )
    summary(
        "status polls per generation (this workload)",
        polls.fmt(".2f"),
        spread("hand-rolled", "polls_per_generation").fmt(".2f"),
        "",
        None,
    )
    return table


def _figure(result: dict[str, Any], figure: str) -> float:
    if figure == "polls_per_generation":
        return float(result["polls"]) / float(max(result["created"], 1))
    if figure == "cpu_per_job_ms":
        return float(result["cpu"]) * 1000 / float(result["jobs"])
    return float(result[figure])


def _ratio(a: list[dict[str, Any]], b: list[dict[str, Any]], figure: str) -> Spread:
    return Spread.of([_figure(x, figure) / _figure(y, figure) for x, y in zip(a, b, strict=True)])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        kind, base_url, jobs, scale = argv[1], argv[2], int(argv[3]), float(argv[4])
        tokens = sys.stdin.read().split()
        print(json.dumps(asyncio.run(child(kind, base_url, tokens, jobs, scale))), flush=True)
        return
    args = parse_args(__doc__ or "", argv)
    for table in asyncio.run(run(args.quick)):
        print(table.render(), flush=True)
    emit_summaries()


if __name__ == "__main__":
    main()
