"""``make demo`` / ``asyncsdk demo``: the first thing a new user sees.

Starts the embedded emulator in this process with three accounts on a compressed clock, runs
two dozen prompts across them through :class:`~asyncsdk.BatchRunner` with the live progress
display, saves the PNGs under ``./out/`` and prints the summary. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ._client import AsyncClient
from ._config import Limits
from ._jobs import Job

PROMPTS = (
    "a red kite over a windy beach at dawn",
    "a lighthouse in a storm, oil painting",
    "a bowl of ramen, studio photo",
    "a fox curled up in autumn leaves",
    "an isometric city block at night",
    "a paper boat on a puddle",
    "a snow-covered cabin with warm windows",
    "a hummingbird in front of a red flower",
    "a vintage bicycle leaning on a blue wall",
    "a field of sunflowers under a thunderstorm",
    "a cup of coffee with latte art, top view",
    "a tiny robot watering a plant",
    "a mountain lake reflecting pink clouds",
    "a stack of old books with a candle",
    "a jellyfish glowing in deep water",
    "a desert road with a single cactus",
    "a cat asleep on a sunny windowsill",
    "a hot air balloon over green hills",
    "a street market with lanterns in the rain",
    "a whale breaching at sunset",
    "a greenhouse full of ferns",
    "a chess board mid-game, macro shot",
    "a train crossing a stone viaduct",
    "a bonsai tree on a wooden table",
)


def _processing_time(model: str, prompt: str) -> float:
    """2 to 5 s (service time), varied by prompt, so the accounts finish out of step."""
    return 2.0 + int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) / 0xFFFF * 3.0


async def demo(*, out: Path, jobs: int = 24, accounts: int = 3, scale: float = 0.1) -> int:
    """Run the demo; the CLI's exit code."""
    from ._batch import BatchRunner
    from ._display import rich_console, run_batch
    from .emulator import Emulator

    console = rich_console()
    say = console.print if console is not None else print
    emulator = Emulator(
        accounts=accounts, time_scale=scale, starting_time=0.5, processing_time=_processing_time
    )
    async with emulator:
        say(
            f"[bold]asyncsdk demo[/]: the embedded BabySea emulator at {emulator.base_url}\n"
            f"{accounts} accounts, each allowed 10 submissions a minute and 1 generation at a "
            f"time.\n[yellow]Compressed clock: 1 s here is {1 / scale:g} s of service time[/] "
            f"(window {60 * scale:g} s, auto-cancel {50 * scale:g} s).\n"
            if console is not None
            else f"asyncsdk demo: emulator at {emulator.base_url}, {accounts} accounts, "
            f"compressed clock (1 s = {1 / scale:g} s of service time)"
        )
        limits = Limits(window=60.0 * scale, generation_timeout=50.0 * scale)
        clients = [
            AsyncClient(token, base_url=emulator.base_url, limits=limits, poll_interval=scale)
            for token in emulator.tokens
        ]
        batch = [
            Job("google/nano-banana", PROMPTS[i % len(PROMPTS)], id=f"demo-{i + 1:02d}")
            for i in range(jobs)
        ]
        runner = BatchRunner(
            clients, download_to=out, names=[f"account {i + 1}" for i in range(accounts)]
        )
        try:
            results = await run_batch(
                runner, batch, total=len(batch), as_json=False, time_scale=scale, out=out
            )
        finally:
            for client in clients:
                await client.aclose()
        throttled = sum(sum(c.values()) for c in emulator.stats.throttled.values())
        saved = sorted(r.paths[0] for r in results if r.paths)
        say(
            f"\n{len(saved)} images saved under {out}/ (e.g. {saved[0] if saved else '-'}); "
            f"the service answered {throttled} rate-limit errors (429)."
        )
    return 0 if all(r.ok for r in results) else 1
