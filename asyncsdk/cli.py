"""The ``asyncsdk`` command: a thin shell over the library (parse, call, render).

::

    asyncsdk generate MODEL PROMPT [--out DIR]     one generation, images saved
    asyncsdk batch JOBS.jsonl|JOBS.csv [--keys-file F] [--out DIR] [--journal PATH]
    asyncsdk status | account | list [--all] | download GENERATION_ID [--out DIR]
    asyncsdk emulator [...]       the embedded service (as python -m asyncsdk.emulator)
    asyncsdk demo                 three accounts, two dozen prompts, on a fast clock

Keys come from ``--keys-file`` (one per line, one account each) or ``BABYSEA_API_KEY``
(several separated by commas). ``--time-scale`` compresses the client's view of the limits,
to talk to an emulator started with the same ``--time-scale``. Live progress and tables use
rich (``pip install 'asyncsdk[cli]'``); without it the output is plain text. ``--json``
prints machine-readable results instead.

Exit codes: 0 everything succeeded, 1 some job or request failed, 2 bad input or usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from ._batch import BatchProgress, BatchRunner, JobResult
from ._client import AsyncClient
from ._config import ENV_API_KEY, Limits, env_base_url
from ._errors import AsyncSDKError
from ._jobfile import DEFAULT_MODEL, JobFileError, check_file, read_jobs
from ._wire import converter

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input from the command line; exit code 2."""


def _console(file: TextIO = sys.stdout) -> Any:
    try:
        from rich.console import Console
    except ImportError:  # the cli extra is not installed: plain text
        return None
    return Console(file=file, highlight=False)


# -- configuration -----------------------------------------------------------------------------
def _keys(args: argparse.Namespace) -> list[str]:
    if args.keys_file:
        try:
            lines = Path(args.keys_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"--keys-file: {exc.strerror}: {args.keys_file}") from None
        keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not keys:
            raise UsageError(f"--keys-file: no keys in {args.keys_file}")
        return keys
    keys = [k.strip() for k in os.environ.get(ENV_API_KEY, "").split(",") if k.strip()]
    if not keys:
        raise UsageError(f"no API key: set {ENV_API_KEY} or pass --keys-file")
    return keys


def _limits(args: argparse.Namespace) -> Limits:
    scale = args.time_scale
    return Limits(window=60.0 * scale, generation_timeout=50.0 * scale)


def _client(args: argparse.Namespace, key: str) -> AsyncClient:
    return AsyncClient(
        key,
        base_url=args.base_url,
        limits=_limits(args),
        poll_interval=min(1.0, 2 * args.time_scale),  # compressed with the clock, at most 1 s
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str), flush=True)


def _result_json(result: JobResult) -> dict[str, Any]:
    return {
        "id": result.job.id,
        "ok": result.ok,
        "account": result.account,
        "generation": converter.unstructure(result.generation) if result.generation else None,
        "error": None if result.error is None else str(result.error),
        "error_code": getattr(result.error, "code", None),
        "paths": [str(p) for p in result.paths],
        "elapsed": round(result.elapsed, 3),
        "from_journal": result.from_journal,
    }


# -- single-account commands ---------------------------------------------------------------------
async def cmd_status(args: argparse.Namespace) -> int:
    async with _client(args, _keys(args)[0]) as client:
        status = await client.status()
    if args.json:
        _print_json(converter.unstructure(status))
    else:
        print(f"{status.message}: account {status.account_id}, key {status.api_key_name!r}")
    return EXIT_OK


async def cmd_account(args: argparse.Namespace) -> int:
    async with _client(args, _keys(args)[0]) as client:
        info = await client.account()
    if args.json:
        _print_json(converter.unstructure(info))
    else:
        c = info.credits
        print(f"{info.account.name} <{info.account.email}> ({info.account.id})")
        print(f"credits: {c.total} (purchased {c.purchased}, free {c.free}, refunded {c.refunded})")
        print(f"api key: {info.api_key.name} ({info.api_key.prefix}...)")
    return EXIT_OK


async def cmd_list(args: argparse.Namespace) -> int:
    async with _client(args, _keys(args)[0]) as client:
        if args.all:
            generations = [g async for g in client.iter_generations()]
        else:
            page = await client.list_generations(limit=args.limit, offset=args.offset)
            generations = list(page.generations)
    if args.json:
        _print_json([converter.unstructure(g) for g in generations])
        return EXIT_OK
    for g in generations:
        created = g.created_at.isoformat(timespec="seconds") if g.created_at else "?"
        print(f"{g.generation_id}  {g.status.value:<10} {created}  {g.prompt!r}")
    return EXIT_OK


async def cmd_download(args: argparse.Namespace) -> int:
    async with _client(args, _keys(args)[0]) as client:
        paths = await client.download(args.generation_id, args.out)
    for path in paths:
        print(path)
    return EXIT_OK


async def cmd_generate(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {
        key: value
        for key, value in (
            ("name", args.name),
            ("output_number", args.output_number),
            ("aspect_ratio", args.aspect_ratio),
            ("output_format", args.output_format),
            ("images", args.image or None),
        )
        if value is not None
    }
    async with _client(args, _keys(args)[0]) as client:
        generation = await client.generate(args.model, args.prompt, timeout=args.timeout, **options)
        paths = await client.download(generation, args.out)
    if args.json:
        _print_json({**converter.unstructure(generation), "paths": [str(p) for p in paths]})
    else:
        print(f"{generation.generation_id} succeeded ({generation.credit_cost} credits)")
        for path in paths:
            print(f"  {path}")
    return EXIT_OK


# -- batch ---------------------------------------------------------------------------------------
async def run_batch(
    clients: Sequence[AsyncClient],
    jobs: Any,
    *,
    total: int | None,
    out: Path | None,
    journal: Path | None,
    as_json: bool,
    names: Sequence[str] | None = None,
    time_scale: float = 1.0,
) -> list[JobResult]:
    """Run a batch with a live display (or JSON lines); print the summary; the results."""
    runner = BatchRunner(clients, journal=journal, download_to=out, names=names)
    console = None if as_json else _console()
    results: list[JobResult] = []
    started = time.monotonic()

    async def consume() -> None:
        async with contextlib.aclosing(runner.run(jobs)) as stream:
            async for result in stream:
                results.append(result)
                if as_json:
                    _print_json(_result_json(result))
                elif console is None:
                    state = "ok" if result.ok else f"FAILED: {result.error}"
                    print(f"{result.job.id}: {state}", flush=True)

    if console is not None:
        await _with_live_display(console, runner, consume, total)
    else:
        await consume()
    elapsed = time.monotonic() - started
    summary = _summary(results, clients, elapsed, time_scale)
    if as_json:
        _print_json({"summary": summary})
    elif console is not None:
        _render_summary(console, summary, results)
    else:
        print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    return results


async def _with_live_display(
    console: Any, runner: BatchRunner, consume: Any, total: int | None
) -> None:
    from rich.live import Live

    with Live(
        _progress_view(runner.progress(), total), console=console, refresh_per_second=12
    ) as live:
        async with anyio.create_task_group() as tg:

            async def refresh() -> None:
                while True:
                    live.update(_progress_view(runner.progress(), total))
                    await anyio.sleep(1 / 12)

            tg.start_soon(refresh)
            try:
                await consume()
            except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
                failure: Exception | None = exc
            else:
                failure = None
            tg.cancel_scope.cancel()
        live.update(_progress_view(runner.progress(), total))
    if failure is not None:
        raise failure


def _progress_view(progress: BatchProgress, total: int | None) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    finished = progress.done + progress.failed
    of = total if total is not None else max(progress.seen, finished)
    head = Table.grid(padding=(0, 1))
    head.add_row(
        ProgressBar(total=max(of, 1), completed=finished, width=40),
        f"[bold]{finished}/{of}[/] jobs  [green]{progress.done} ok[/]  "
        f"[red]{progress.failed} failed[/]  {progress.elapsed:.1f}s",
    )
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for column in ("account", "now", "done", "failed", "credits"):
        table.add_column(
            column, justify="right" if column in ("done", "failed", "credits") else "left"
        )
    for a in progress.accounts:
        now = f"[red]out: {a.out}[/]" if a.out else a.state
        table.add_row(a.label, now, str(a.done), str(a.failed), str(a.credits))
    return Group(head, table)


def _summary(
    results: list[JobResult], clients: Sequence[AsyncClient], elapsed: float, time_scale: float
) -> dict[str, Any]:
    """Totals, and throughput in the service's minutes against the accounts' combined limit."""
    ok = sum(r.ok for r in results)
    ran = sum(not r.from_journal for r in results)
    service_minutes = elapsed / time_scale / 60.0
    limit = sum(c.limits.submissions * 60.0 * time_scale / c.limits.window for c in clients)
    return {
        "jobs": len(results),
        "succeeded": ok,
        "failed": len(results) - ok,
        "from_journal": len(results) - ran,
        "credits": sum(r.credits for r in results if not r.from_journal),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_minute": round(ran / service_minutes, 1) if service_minutes else 0.0,
        "limit_per_minute": round(limit, 1),
    }


def _render_summary(console: Any, summary: dict[str, Any], results: list[JobResult]) -> None:
    from rich.table import Table

    failures = [r for r in results if not r.ok]
    if failures:
        table = Table(title="failed jobs", title_justify="left")
        table.add_column("job")
        table.add_column("why")
        for r in failures[:20]:
            table.add_row(r.job.id, str(r.error))
        if len(failures) > 20:
            table.add_row("...", f"and {len(failures) - 20} more")
        console.print(table)
    console.print()
    table = Table(title="summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, label in (
        ("jobs", "jobs"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("from_journal", "from an earlier run"),
        ("credits", "credits spent"),
        ("elapsed_s", "elapsed (s)"),
    ):
        table.add_row(label, str(summary[key]))
    table.add_row(
        "throughput (service time)",
        f"{summary['jobs_per_minute']}/min; the accounts' sustained limit "
        f"is {summary['limit_per_minute']:g}/min",
    )
    console.print(table)


async def cmd_batch(args: argparse.Namespace) -> int:
    try:
        total = check_file(args.jobs, default_model=args.model)
    except OSError as exc:
        raise UsageError(f"{args.jobs}: {exc.strerror}") from None
    keys = _keys(args)
    clients = [_client(args, key) for key in keys]
    try:
        results = await run_batch(
            clients,
            read_jobs(args.jobs, default_model=args.model),
            total=total,
            out=Path(args.out) if args.out else None,
            journal=Path(args.journal) if args.journal else None,
            as_json=args.json,
            time_scale=args.time_scale,
        )
    finally:
        for client in clients:
            await client.aclose()
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


async def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import demo

    return await demo(out=Path(args.out), jobs=args.jobs, accounts=args.accounts, scale=args.scale)


# -- entry point ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncsdk", description="The BabySea image API, from the shell."
    )
    parser.add_argument(
        "--base-url", default=None, help="API root (default $BABYSEA_BASE_URL or the service)"
    )
    parser.add_argument("--keys-file", help="file with one API key per line (one account each)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="compress the limits (for an emulator run with it)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="one generation, images saved")
    p.add_argument("model")
    p.add_argument("prompt")
    p.add_argument("--name")
    p.add_argument("--output-number", type=int)
    p.add_argument("--aspect-ratio")
    p.add_argument("--output-format", choices=["png", "jpg", "webp"])
    p.add_argument("--image", action="append", help="input image: path or URL; repeatable")
    p.add_argument("--timeout", type=float)
    p.add_argument("--out", default="out")
    p.set_defaults(run=cmd_generate)

    p = sub.add_parser("batch", help="run a JSONL or CSV file of jobs across the accounts")
    p.add_argument("jobs", help="a .jsonl or .csv file (fields: prompt, model, id, name, ...)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model of jobs that name none")
    p.add_argument("--out", help="save the images here")
    p.add_argument("--journal", help="SQLite journal: rerun with it to resume without paying twice")
    p.set_defaults(run=cmd_batch)

    sub.add_parser("status", help="check the key and the connection").set_defaults(run=cmd_status)
    sub.add_parser("account", help="account and credits").set_defaults(run=cmd_account)

    p = sub.add_parser("list", help="recent generations, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--all", action="store_true")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("download", help="save a generation's images")
    p.add_argument("generation_id")
    p.add_argument("--out", default="out")
    p.set_defaults(run=cmd_download)

    sub.add_parser("emulator", help="serve the embedded emulator", add_help=False)

    p = sub.add_parser("demo", help="a batch across three emulated accounts")
    p.add_argument("--out", default="out")
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--accounts", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.1, help="1 s of demo = 1/scale s of service")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "emulator" in argv and argv.index("emulator") == _command_index(argv):
        from .emulator.__main__ import main as emulator_main

        emulator_main(argv[argv.index("emulator") + 1 :])
        return EXIT_OK
    args = build_parser().parse_args(argv)
    if args.base_url is None:
        args.base_url = env_base_url()
    try:
        code: int = anyio.run(args.run, args)
        return code
    except (UsageError, JobFileError) as exc:
        print(f"asyncsdk: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # a bad argument the library refused
        print(f"asyncsdk: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AsyncSDKError as exc:
        print(f"asyncsdk: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("asyncsdk: interrupted (a journal keeps what was done)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _command_index(argv: list[str]) -> int:
    """Index of the first argument that is not an option (or an option's value)."""
    takes_value = {"--base-url", "--keys-file", "--time-scale"}
    i = 0
    while i < len(argv):
        if argv[i] in takes_value:
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return i
    return -1


if __name__ == "__main__":
    sys.exit(main())
