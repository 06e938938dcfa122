"""The ``asyncsdk`` command: a thin shell over the library (parse, call, render).

::

    asyncsdk generate MODEL PROMPT [--out DIR]     one generation, images saved
    asyncsdk batch JOBS.jsonl|JOBS.csv [--out DIR] [--journal PATH] [--results PATH]
                   [--max-credits N] [--start-within SECONDS] [--retry-failed] [--dry-run]
    asyncsdk status | account | list [--all] | download GENERATION_ID [--out DIR]
    asyncsdk emulator [...]       the embedded service (as python -m asyncsdk.emulator)
    asyncsdk demo                 three accounts, two dozen prompts, on a fast clock

Keys come from ``--keys-file`` (one per line, one account each) or ``BABYSEA_API_KEY``
(several separated by commas). ``--time-scale`` compresses the client's view of the limits,
to talk to an emulator started with the same ``--time-scale``. Live progress and tables use
rich (``pip install 'asyncsdk[cli]'``); without it the output is plain text. ``--json``
prints machine-readable results instead. Global options may come before or after the command.

Arguments are parsed before the library is imported (``--help``, ``--version`` and usage
errors never load aiohttp); every input is checked before anything is paid for (the jobs
file, the output directory, the results file, the journal), and files are read off the event
loop.

Exit codes: 0 everything succeeded, 1 some job or request failed (or the run stopped at its
budget), 2 bad input or usage (also the service's 400 answers to a single ``generate``),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._display import ResultsFile, plural, print_json, run_batch
from ._version import __version__

if TYPE_CHECKING:
    from ._batch import BatchRunner
    from ._client import AsyncClient
    from ._jobs import AccountCheck
    from ._journal import Journal

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ENV_API_KEY, ENV_BASE_URL = "BABYSEA_API_KEY", "BABYSEA_BASE_URL"


class UsageError(Exception):
    """Bad input from the command line; exit code 2."""


class _Session:
    """What an interrupted command should still say (filled in as the command runs)."""

    generation: str | None = None
    journal: str | None = None


def _error(message: str) -> None:
    print(f"asyncsdk: {message}", file=sys.stderr, flush=True)


# -- configuration -----------------------------------------------------------------------------
async def _keys(args: argparse.Namespace) -> list[str]:
    import anyio

    if args.keys_file:
        try:
            text = await anyio.Path(args.keys_file).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsageError(f"--keys-file: {exc.strerror}: {args.keys_file}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--keys-file: not UTF-8 text: {args.keys_file}") from None
        lines = (line.strip() for line in text.splitlines())
        keys = [line for line in lines if line and not line.startswith("#")]
        if not keys:
            raise UsageError(f"--keys-file: no keys in {args.keys_file}")
        return keys
    keys = [k.strip() for k in os.environ.get(ENV_API_KEY, "").split(",") if k.strip()]
    if not keys:
        raise UsageError(f"no API key: set {ENV_API_KEY} or pass --keys-file")
    return keys


def _client(args: argparse.Namespace, key: str) -> AsyncClient:
    from ._client import AsyncClient
    from ._config import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, Limits

    scale = args.time_scale
    return AsyncClient(
        key,
        base_url=args.base_url,
        limits=Limits(window=60.0 * scale, generation_timeout=50.0 * scale),
        poll_interval=min(1.0, 2 * scale),  # compressed with the clock, at most 1 s
        backoff_base=DEFAULT_BACKOFF_BASE * min(1.0, scale),
        backoff_max=DEFAULT_BACKOFF_MAX * min(1.0, scale),
        allow_insecure_http=args.allow_insecure_http,
    )


async def _writable_directory(option: str, path: Path) -> None:
    """Create ``path`` if needed and prove it can be written, before anything is paid."""
    import anyio

    from ._batch import check_directory

    try:
        await anyio.to_thread.run_sync(check_directory, path)
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None


async def cmd_status(args: argparse.Namespace) -> int:
    from ._wire import converter

    async with _client(args, (await _keys(args))[0]) as client:
        status = await client.status()
    if args.json:
        print_json(converter.unstructure(status))
    else:
        print(f"{status.message}: account {status.account_id}, key {status.api_key_name!r}")
    return EXIT_OK


async def cmd_account(args: argparse.Namespace) -> int:
    from ._wire import converter

    async with _client(args, (await _keys(args))[0]) as client:
        info = await client.account()
    if args.json:
        print_json(converter.unstructure(info))
    else:
        c = info.credits
        print(f"{info.account.name} <{info.account.email}> ({info.account.id})")
        print(f"credits: {c.total} (purchased {c.purchased}, free {c.free}, refunded {c.refunded})")
        print(f"api key: {info.api_key.name} ({info.api_key.prefix}...)")
    return EXIT_OK


async def cmd_list(args: argparse.Namespace) -> int:
    from ._wire import converter

    async with _client(args, (await _keys(args))[0]) as client:
        if args.all:
            generations = [g async for g in client.iter_generations()]
        else:
            page = await client.list_generations(limit=args.limit, offset=args.offset)
            generations = list(page.generations)
    if args.json:
        print_json([converter.unstructure(g) for g in generations])
        return EXIT_OK
    for g in generations:
        created = g.created_at.isoformat(timespec="seconds") if g.created_at else "?"
        print(f"{g.generation_id}  {g.status.value:<10} {created}  {g.prompt!r}")
    return EXIT_OK


async def cmd_download(args: argparse.Namespace) -> int:
    key = (await _keys(args))[0]
    await _writable_directory("--out", Path(args.out))
    async with _client(args, key) as client:
        paths = await client.download(args.generation_id, args.out)
    for path in paths:
        print(path)
    return EXIT_OK


async def cmd_generate(args: argparse.Namespace) -> int:
    from ._wire import converter

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
    key = (await _keys(args))[0]
    await _writable_directory("--out", Path(args.out))  # before anything is paid
    async with _client(args, key) as client:
        submission = await client.submit(args.model, args.prompt, **options)
        _Session.generation = submission.generation_id
        generation = await client.wait(submission.generation_id, timeout=args.timeout)
        _Session.generation = None
        paths = await client.download(generation, args.out)
    if args.json:
        print_json({**converter.unstructure(generation), "paths": [str(p) for p in paths]})
    else:
        print(f"{generation.generation_id} succeeded ({generation.credit_cost} credits)")
        for path in paths:
            print(f"  {path}")
    return EXIT_OK


# -- batch ---------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


async def _journal_check(
    journal: Journal, path: str, default_model: str, retry_failed: bool
) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    """Refuse a job changed under an id the journal knows (exit 2); the journal states of
    the file's jobs, and the (model, images) of those that would be submitted."""
    from ._jobfile import read_jobs

    def triples() -> Iterator[tuple[str, str, Hashable]]:
        for job in read_jobs(path, default_model=default_model):
            yield job.id, job.request, (job.model, job.output_number)

    checked = await journal.check(triples(), rerun_failed=retry_failed)
    if checked.changed is not None:
        job_id, what = checked.changed
        raise UsageError(
            f"job {job_id!r} differs from the job the journal {journal.path} recorded under"
            f" that id ({what}): give it a new id, or use another journal"
        )
    to_run: dict[tuple[str, int], int] = {}
    for key, count in checked.to_run.items():
        assert isinstance(key, tuple)
        to_run[key] = count
    return checked.states, to_run


def _print_plan(
    args: argparse.Namespace,
    runner: BatchRunner,
    checks: Sequence[AccountCheck],
    per_model: Mapping[str, tuple[int, int]],
    shapes: Mapping[tuple[str, int], int],
    states: Mapping[str, int] | None,
    total: int,
) -> None:
    """The dry run's report: jobs per model, estimated credits, balances, the time."""
    usable = [c for c in checks if c.can_afford is not False and c.error is None]
    to_run = sum(shapes.values())
    credits: dict[str, int | None] = {}
    for (model, images), count in shapes.items():
        estimate = runner.estimate(model, images)
        known = credits.get(model, 0)
        credits[model] = None if estimate is None or known is None else known + estimate * count
    for model in per_model:
        credits.setdefault(model, 0)
    limits = runner.clients[0].limits
    seconds = (
        to_run / (len(usable) * limits.submissions) * limits.window if usable and to_run else 0.0
    )
    known_total = sum(c for c in credits.values() if c is not None)
    unknown = sorted(m for m, c in credits.items() if c is None)
    if args.json:
        print_json(
            {
                "dry_run": True,
                "file": args.jobs,
                "jobs": total,
                "to_run": to_run,
                "models": {
                    m: {"jobs": j, "images": i, "credits": credits.get(m)}
                    for m, (j, i) in per_model.items()
                },
                "journal": dict(states) if states is not None else None,
                "accounts": [
                    {
                        "account": c.label,
                        "balance": c.balance,
                        "can_afford": c.can_afford,
                        "error": None if c.error is None else str(c.error),
                    }
                    for c in checks
                ],
                "estimated_credits": None if unknown else known_total,
                "known_credits": known_total,
                "unknown_models": unknown,
                "max_credits": args.max_credits,
                "minimum_seconds": round(seconds, 3),
                "submitted": 0,
            }
        )
        return
    print(f"{args.jobs}: {plural(total, 'job')}, every line valid")
    width = max(len(m) for m in per_model)
    for model, (jobs, images) in sorted(per_model.items()):
        cost = credits.get(model)
        price = (
            f"~{cost} credits"
            if cost is not None
            else "credits unknown (never seen in the accounts' history or the journal)"
        )
        print(
            f"  {model:<{width}}  {plural(jobs, 'job'):>9}  {plural(images, 'image'):>10}  {price}"
        )
    if states is not None:
        done = total - to_run
        print(f"journal {args.journal}: {to_run} to run, {done} done or in flight already")
    print("accounts:")
    for c in checks:
        if c.error is not None:
            line = f"balance unknown ({c.error})"
        else:
            line = plural(c.balance or 0, "credit")
            if c.can_afford is False:
                line += f", can't afford a job ({c.cheapest or 1} credits)"
        print(f"  {c.label}: {line}")
    cost_line = f"about {known_total} credits" + (
        f" plus the jobs of {', '.join(unknown)} (price unknown)" if unknown else ""
    )
    print(f"estimated cost: {cost_line}")
    if args.max_credits is not None:
        over = known_total > args.max_credits
        print(
            f"budget: --max-credits {args.max_credits}"
            + (": the run would stop before its last job" if over else "")
        )
    if usable:
        print(
            f"time: at least {_duration(seconds)} ({plural(to_run, 'job')} /"
            f" ({plural(len(usable), 'account')} x {limits.submissions} per"
            f" {limits.window:g} s))"
        )
    else:
        print("time: no account can run a job")
    print("dry run: nothing was submitted")


async def cmd_batch(args: argparse.Namespace) -> int:
    import anyio

    from ._batch import BatchRunner
    from ._jobfile import read_jobs, scan_file
    from ._journal import Journal

    if args.retry_failed and not args.journal:
        raise UsageError("--retry-failed needs --journal (it re-runs what the journal failed)")
    if args.max_credits is not None and args.max_credits < 0:
        raise UsageError(f"--max-credits must be >= 0, got {args.max_credits}")
    if args.start_within is not None and not args.start_within > 0:
        raise UsageError(f"--start-within must be > 0 seconds, got {args.start_within}")
    try:
        summary = await anyio.to_thread.run_sync(
            lambda: scan_file(args.jobs, default_model=args.model)
        )
    except OSError as exc:
        raise UsageError(f"{args.jobs}: {exc.strerror or exc}") from None
    keys = await _keys(args)
    out = Path(args.out) if args.out else None
    if out is not None and not args.dry_run:
        await _writable_directory("--out", out)
    journal = Journal(args.journal) if args.journal else None
    if journal is not None and args.dry_run and not journal.path.exists():
        journal = None  # a dry run creates no file: every job is new
    _Session.journal = args.journal
    results_file = ResultsFile(Path(args.results)) if args.results and not args.dry_run else None
    clients = [_client(args, key) for key in keys]
    try:
        states: dict[str, int] | None = None
        shapes: dict[tuple[str, int], int] = {
            (model, images): count for (model, images), count in summary.shapes.items()
        }
        if journal is not None:
            try:
                states, shapes = await _journal_check(
                    journal, args.jobs, args.model, args.retry_failed
                )
            except UsageError:
                raise
            except Exception as exc:  # not a journal (sqlite3.DatabaseError), unreadable
                raise UsageError(f"--journal {args.journal}: {exc}") from None
        runner = BatchRunner(
            clients,
            journal=journal,
            download_to=out,
            max_credits=args.max_credits,
            retry_failed=args.retry_failed,
        )
        if args.dry_run:
            checks = await runner.check_accounts(list(shapes))
            _print_plan(args, runner, checks, summary.per_model(), shapes, states, summary.jobs)
            return EXIT_OK
        if args.max_credits is not None:
            for check in await runner.check_accounts(list(shapes)):
                if check.can_afford is False:
                    _error(
                        f"{check.label} has {plural(check.balance or 0, 'credit')}, less than"
                        f" a job costs ({check.cheapest or 1}): it runs nothing"
                    )
                elif check.error is not None:
                    _error(f"{check.label}: balance unknown ({check.error})")
        if results_file is not None:
            try:
                await results_file.open()
            except OSError as exc:
                raise UsageError(f"--results {args.results}: {exc.strerror or exc}") from None
        start_by = time.time() + args.start_within if args.start_within is not None else None
        jobs = read_jobs(args.jobs, default_model=args.model, start_by=start_by)
        results = await run_batch(
            runner,
            jobs,
            total=summary.jobs,
            as_json=args.json,
            time_scale=args.time_scale,
            out=out,
            results_file=results_file,
        )
    finally:
        with anyio.CancelScope(shield=True):
            if results_file is not None:
                await results_file.aclose()
            if journal is not None:
                await journal.aclose()
            for client in clients:
                await client.aclose()
    if runner.stopped:
        left = summary.jobs - len(results)
        where = " (pending in the journal: rerun to go on)" if journal is not None else ""
        _error(f"{runner.stopped}; {plural(left, 'job')} not started{where}")
        return EXIT_FAILED
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


async def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import demo

    return await demo(out=Path(args.out), jobs=args.jobs, accounts=args.accounts, scale=args.scale)


# -- entry point ---------------------------------------------------------------------------------
def _add_global_options(parser: argparse.ArgumentParser, *, here: bool) -> None:
    """The options every command accepts, before or after its name. On the commands'
    parsers (``here=False``) they default to "not given", so they never override a value
    given before the command."""

    def default(value: Any) -> Any:
        return value if here else argparse.SUPPRESS

    parser.add_argument(
        "--base-url",
        metavar="URL",
        default=default(None),
        help=f"API root (default: ${ENV_BASE_URL}, else the public service)",
    )
    parser.add_argument(
        "--keys-file",
        metavar="FILE",
        default=default(None),
        help="file with one API key per line, one account each; blank lines and lines"
        f" starting with # are skipped (default: ${ENV_API_KEY}, several separated by commas)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON (one object per line) instead of text (default: text)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        metavar="FACTOR",
        default=default(1.0),
        help="multiply the service's durations (window, timeouts, retry pauses) by FACTOR,"
        " to talk to an emulator started with the same --time-scale (default: 1)",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=default(False),
        help="allow sending the key over plain http:// to a host other than this machine"
        " (an emulator on another host; default: refused)",
    )


def build_parser() -> argparse.ArgumentParser:
    from ._jobfile import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="asyncsdk", description="The BabySea image API, from the shell."
    )
    parser.add_argument("--version", action="version", version=f"asyncsdk {__version__}")
    _add_global_options(parser, here=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, here=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common], **kwargs)

    p = command("generate", "one generation; its images saved")
    p.add_argument("model", help="model identifier, e.g. google/nano-banana")
    p.add_argument("prompt", help="what to draw (1-2000 characters)")
    p.add_argument("--name", help="a label for the generation, 3-30 characters (default: none)")
    p.add_argument("--output-number", type=int, metavar="N", help="images, 1-4 (default: 1)")
    p.add_argument("--aspect-ratio", metavar="W:H", help="e.g. 16:9 (default: 1:1)")
    p.add_argument(
        "--output-format", choices=["png", "jpg", "webp"], help="image format (default: png)"
    )
    p.add_argument(
        "--image",
        action="append",
        metavar="PATH_OR_URL",
        help="an input image (image-to-image); repeatable, up to 10 (default: none)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop waiting for the generation after this long (default: the service's"
        " auto-cancel time)",
    )
    p.add_argument(
        "--out",
        default="out",
        metavar="DIR",
        help="save the images here, created if needed (default: out)",
    )
    p.set_defaults(run=cmd_generate)

    p = command("batch", "run a JSONL or CSV file of jobs across the accounts")
    p.add_argument(
        "jobs",
        help="a .jsonl or .csv file (fields: prompt, and optionally model, id, name,"
        " output_number, aspect_ratio, output_format, images, model extras)",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model of the jobs that name none (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="save each job's images here as <job id>-<n>.png, created if needed"
        " (default: images are not saved)",
    )
    p.add_argument(
        "--journal",
        metavar="PATH",
        help="SQLite journal: rerun with it to resume without paying twice (default: none)",
    )
    p.add_argument(
        "--results",
        metavar="PATH",
        help="write one JSON line per job (id, status, generation id, images, credits,"
        " error code, retryable) as each finishes (default: none)",
    )
    p.add_argument(
        "--max-credits",
        type=int,
        metavar="N",
        help="never submit a job that could take this run's spending past N credits; stop"
        " there, the rest stays pending (default: no cap)",
    )
    p.add_argument(
        "--start-within",
        type=float,
        metavar="SECONDS",
        help="a job not started this many seconds after the run began ends 'expired',"
        " never paid late (default: no deadline)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --journal: also run again the jobs that failed with an error retrying"
        " could help (default: they are reported as failed)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check every line and show jobs per model, estimated credits, balances and"
        " the time the limits imply; submit nothing (default: run)",
    )
    p.set_defaults(run=cmd_batch)

    command("status", "check the key and the connection").set_defaults(run=cmd_status)
    command("account", "the account and its credits").set_defaults(run=cmd_account)

    p = command("list", "recent generations, newest first")
    p.add_argument(
        "--limit", type=int, default=20, metavar="N", help="generations, 1-100 (default: 20)"
    )
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip this many (default: 0)")
    p.add_argument("--all", action="store_true", help="every generation (default: one page)")
    p.set_defaults(run=cmd_list)

    p = command("download", "save a generation's images")
    p.add_argument("generation_id", help="the generation's id")
    p.add_argument(
        "--out", default="out", metavar="DIR", help="directory, created if needed (default: out)"
    )
    p.set_defaults(run=cmd_download)

    sub.add_parser(
        "emulator",
        help="serve the embedded emulator (options: asyncsdk emulator --help)",
        add_help=False,
    )

    p = command("demo", "a batch across three emulated accounts")
    p.add_argument(
        "--out", default="out", metavar="DIR", help="save the images here (default: out)"
    )
    p.add_argument("--jobs", type=int, default=24, metavar="N", help="prompts (default: 24)")
    p.add_argument("--accounts", type=int, default=3, metavar="N", help="accounts (default: 3)")
    p.add_argument(
        "--scale",
        type=float,
        default=0.1,
        metavar="FACTOR",
        help="1 s of demo is 1/FACTOR s of service time (default: 0.1)",
    )
    p.set_defaults(run=cmd_demo)

    # asyncsdk temporal ...: durable batches on Temporal (the temporal extra). Its parsers are
    # built here; its commands import Temporal only when they run.
    from .temporal._cli import add_commands as add_temporal_commands

    add_temporal_commands(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "emulator" in argv and argv.index("emulator") == _command_index(argv):
        from .emulator.__main__ import main as emulator_main

        emulator_main(argv[argv.index("emulator") + 1 :])
        return EXIT_OK
    args = build_parser().parse_args(argv)
    # Only now the library: --help, --version and usage errors never import aiohttp.
    import anyio

    from ._errors import APIError, AsyncSDKError, BadRequestError, ImageInputError
    from ._jobfile import JobFileError

    if args.base_url is None:
        args.base_url = os.environ.get(ENV_BASE_URL, "").strip() or None
    try:
        code: int = anyio.run(args.run, args)
        return code
    except (UsageError, JobFileError) as exc:
        _error(f"error: {exc}")
        return EXIT_USAGE
    except ValueError as exc:  # a bad argument the library refused
        _error(f"error: {exc}")
        return EXIT_USAGE
    except APIError as exc:
        refused = exc.status in (400, 422) or (
            exc.status is None and isinstance(exc, (BadRequestError, ImageInputError))
        )
        _error(f"{'error: ' if refused else ''}{type(exc).__name__}: {exc}")
        return EXIT_USAGE if refused else EXIT_FAILED
    except AsyncSDKError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        message = "interrupted"
        if _Session.generation is not None:
            message += (
                f"; generation {_Session.generation} is still running (paid for):"
                f" asyncsdk download {_Session.generation} saves its images when it ends"
            )
        if _Session.journal is not None:
            message += f"; the journal {_Session.journal} keeps what was done: rerun to resume"
        _error(message)
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
