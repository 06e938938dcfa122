"""The emulator in its own process, with a window onto its counters for the benchmarks.

``python -m benchmarks._server --accounts 100 --time-scale 0.05 ...`` serves an
:class:`asyncsdk.emulator.Emulator` on 127.0.0.1 (a free port) and prints one JSON line,
``{"base_url": ..., "tokens": [...]}``, then serves until killed. It is the stock emulator
(``python -m asyncsdk.emulator``) plus what the stock command line cannot express:

- every duration setting (starting time, generation timeout), and ``--jitter``: each
  generation's processing time is drawn uniformly in ``processing_time * (1 +/- jitter)``,
  deterministically from its prompt, because a service whose generations all take exactly the
  same time flatters any poll schedule that learns durations;
- ``GET /_bench/stats``: the emulator's counters (429s served, generations created, the most in
  progress at once, requests by route), so a client process can check "zero 429s served";
- ``POST /_bench/reset``: zero those counters between repetitions;
- ``--drop-after P`` (with ``--chaos-seed``): each submission's answer is lost after the
  generation was created with probability ``P`` (the emulator's seeded ``chaos()``), and the
  counters tell how many jobs were charged twice (``double_charged``: a second generation with
  the same prompt on the same account);
- ``--webhook-url`` / ``--webhook-secret``: signed webhook deliveries, as the stock emulator's
  ``webhook_url`` / ``webhook_secret``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import zlib
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from asyncsdk.emulator import Emulator

__all__ = ["main", "processing_time"]


def processing_time(base: float, jitter: float, prompt: str) -> float:
    """The nominal processing seconds of the generation with this prompt."""
    if jitter <= 0:
        return base
    draw = random.Random(zlib.crc32(prompt.encode())).uniform(-jitter, jitter)
    return base * (1.0 + draw)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--credits", type=int, default=1_000_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--submissions", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--concurrent", type=int, default=1)
    parser.add_argument("--generation-timeout", type=float, default=50.0)
    parser.add_argument("--starting-time", type=float, default=0.5)
    parser.add_argument("--processing-time", type=float, default=3.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument("--drop-after", type=float, default=0.0)
    parser.add_argument("--chaos-seed", type=int, default=1)
    return parser.parse_args(argv)


def _double_charged(emulator: Emulator) -> int:
    """Generations beyond the first with the same prompt on the same account, since the last
    reset (every job of a benchmark has a prompt of its own)."""
    extra = 0
    for token, created in emulator.stats.created.items():
        if created > 1:
            prompts = [g["prompt"] for g in emulator.generations(token)][-created:]
            extra += len(prompts) - len(set(prompts))
    return extra


def _stats(emulator: Emulator) -> dict[str, Any]:
    stats = emulator.stats
    throttled: dict[str, int] = {}
    for by_code in stats.throttled.values():
        for code, count in by_code.items():
            throttled[code] = throttled.get(code, 0) + count
    return {
        "throttled": throttled,
        "created": sum(stats.created.values()),
        "max_in_progress": max(stats.max_in_progress.values(), default=0),
        "requests": {f"{method} {route}": n for (method, route), n in stats.requests.items()},
        "double_charged": _double_charged(emulator),
    }


async def _serve(args: argparse.Namespace) -> None:
    base, jitter = args.processing_time, args.jitter
    emulator = Emulator(
        accounts=args.accounts,
        credits=args.credits,
        submissions=args.submissions,
        window=args.window,
        concurrent=args.concurrent,
        generation_timeout=args.generation_timeout,
        starting_time=args.starting_time,
        processing_time=lambda _model, prompt: processing_time(base, jitter, prompt),
        port=args.port,
        time_scale=args.time_scale,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
    )

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(_stats(emulator))

    async def reset(_: web.Request) -> web.Response:
        emulator.stats.reset()
        return web.json_response({"reset": True})

    if args.drop_after > 0:
        emulator.faults.chaos(args.chaos_seed, drop_after=args.drop_after)
    emulator.app.router.add_get("/_bench/stats", stats)
    emulator.app.router.add_post("/_bench/reset", reset)
    async with emulator:
        line = json.dumps({"base_url": emulator.base_url, "tokens": emulator.tokens})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse(argv)))


if __name__ == "__main__":
    main()
