"""``python -m asyncsdk.emulator``: serve the emulator until Ctrl-C.

Prints the API base URL, the account tokens and a ready-to-paste line
``export BABYSEA_BASE_URL=... BABYSEA_API_KEY=...``, then serves. Durations are the service's
unless ``--time-scale`` compresses them (0.05 turns the 60-second window into 3 seconds).

    python -m asyncsdk.emulator --port 8080 --token bye_0123abcd --accounts 2 --time-scale 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
from collections.abc import Sequence

from .._config import ENV_API_KEY, ENV_BASE_URL
from ._emulator import Emulator


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m asyncsdk.emulator", description="Serve a BabySea v1 API emulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--token", action="append", default=[], help="an account token (bye_<hex>); repeatable"
    )
    parser.add_argument("--accounts", type=int, default=1, help="accounts in total (at least)")
    parser.add_argument("--credits", type=int, default=1000, help="starting credits per account")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiplies every duration")
    parser.add_argument("--submissions", type=int, default=10, help="submissions per window")
    parser.add_argument("--window", type=float, default=60.0, help="window length, seconds")
    parser.add_argument("--concurrent", type=int, default=1, help="generations in progress")
    parser.add_argument("--processing-time", type=float, default=3.0, help="seconds")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    emulator = Emulator(
        accounts=max(args.accounts, len(args.token)),
        tokens=args.token,
        credits=args.credits,
        submissions=args.submissions,
        window=args.window,
        concurrent=args.concurrent,
        processing_time=args.processing_time,
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
    )
    async with emulator:
        print(f"BabySea emulator at {emulator.base_url}", flush=True)
        for token in emulator.tokens:
            print(f"  token {token}", flush=True)
        print("Point the SDK and the asyncsdk command at it (paste into a shell):", flush=True)
        keys = ",".join(emulator.tokens)
        print(
            f"export {ENV_BASE_URL}={shlex.quote(emulator.base_url)}"
            f" {ENV_API_KEY}={shlex.quote(keys)}",
            flush=True,
        )
        if args.time_scale != 1.0:
            print(f"  (and pass --time-scale {args.time_scale:g} to asyncsdk)", flush=True)
        print("Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
