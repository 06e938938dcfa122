"""``asyncsdk temporal ...``: workers and durable batches from the shell.

::

    asyncsdk temporal worker [--redis URL] [--address HOST:PORT] [--task-queue Q]
    asyncsdk temporal batch JOBS.jsonl|JOBS.csv [--out DIR] [--results PATH] [--workflow-id ID]
    asyncsdk temporal follow WORKFLOW_ID
    asyncsdk temporal cancel WORKFLOW_ID

The global options (``--keys-file``, ``--base-url``, ``--time-scale``, ``--json``) work as for
the other commands. The parsers are built without importing Temporal; the commands import it
when they run (``pip install 'asyncsdk[temporal]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from ._types import BatchProgress, BatchResult, JobOutcome

__all__ = ["add_commands"]

#: Jobs a batch carries in its workflow's argument; past this the file is read by path.
INLINE_JOBS = 2000
ENV_ADDRESS, ENV_REDIS = "TEMPORAL_ADDRESS", "REDIS_URL"
#: Seconds to wait for a worker to answer about a cancelled batch.
QUERY_PATIENCE = 10.0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``temporal`` and its subcommands to the ``asyncsdk`` parser."""
    from ._types import DEFAULT_TASK_QUEUE

    top = sub.add_parser(
        "temporal",
        help="durable batches across machines, on Temporal (pip install 'asyncsdk[temporal]')",
        description="Durable batches on Temporal: workers on every machine, one workflow per"
        " batch, jobs retried on the living workers, each paid once.",
        parents=[common],
    )
    commands = top.add_subparsers(dest="temporal_command", required=True, metavar="COMMAND")

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--address",
            default=os.environ.get(ENV_ADDRESS, "localhost:7233"),
            metavar="HOST:PORT",
            help=f"the Temporal frontend (default: ${ENV_ADDRESS}, else localhost:7233)",
        )
        parser.add_argument(
            "--namespace", default="default", help="Temporal namespace (default: default)"
        )
        parser.add_argument(
            "--task-queue",
            default=DEFAULT_TASK_QUEUE,
            metavar="QUEUE",
            help=f"the task queue workers serve (default: {DEFAULT_TASK_QUEUE})",
        )

    p = commands.add_parser(
        "worker",
        help="serve batches with this machine's clients of the accounts (until Ctrl-C)",
        description="Serve batch workflows and their jobs. Run one on every machine, with"
        " the same keys and the same --redis: the accounts' limits hold across all of them.",
        parents=[common],
    )
    connection(p)
    p.add_argument(
        "--redis",
        default=os.environ.get(ENV_REDIS),
        metavar="URL",
        help=f"the Redis every worker shares the accounts' gates through (default: ${ENV_REDIS};"
        " without one, run a single worker)",
    )
    p.add_argument(
        "--redis-namespace",
        default="asyncsdk",
        metavar="NAME",
        help="prefix of the gate's Redis keys (default: asyncsdk)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        metavar="SECONDS",
        help="a dead worker's generation slots free within this long (default: 10)",
    )
    p.add_argument(
        "--settle-time",
        type=float,
        metavar="SECONDS",
        help="how long after a send the service is assumed to list what it created"
        " (default: the SDK's, at least 3)",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="jobs this worker runs at once, gate waits included (default: 4 per account)",
    )
    p.set_defaults(run=cmd_worker)

    p = commands.add_parser(
        "batch",
        help="start a batch workflow for a JSONL or CSV file of jobs and follow it",
        description="Start a batch workflow and follow it (Ctrl-C leaves it running). Paths"
        " (--out, --results, a file read by path) are the workers' paths.",
        parents=[common],
    )
    connection(p)
    p.add_argument("jobs", help="a .jsonl or .csv file of jobs (the format of asyncsdk batch)")
    p.add_argument("--model", help="model of the jobs that name none (default: google/nano-banana)")
    p.add_argument(
        "--workflow-id",
        metavar="ID",
        help="the workflow's id; the same id finds the same batch, running or done (default:"
        " derived from the file's content)",
    )
    p.add_argument(
        "--out", metavar="DIR", help="the workers save each job's images here (default: none)"
    )
    p.add_argument(
        "--results",
        metavar="PATH",
        help="the workers append one JSON line per job here (default: the lines are printed"
        " with --json)",
    )
    p.add_argument(
        "--by-path",
        action="store_true",
        help=f"pass the file's path, not its jobs: the workers must see it (default: the jobs"
        f" themselves, up to {INLINE_JOBS}; the path past that)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="jobs running or waiting for an account at once (default: twice the accounts'"
        " generation slots)",
    )
    p.add_argument(
        "--jobs-per-run",
        type=int,
        default=1000,
        metavar="N",
        help="jobs per workflow run before it continues as new (default: 1000)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        metavar="SECONDS",
        help="a job whose worker went silent this long is retried elsewhere (default: 30,"
        " scaled by --time-scale)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="start it, print its id, do not follow it (default: follow it to its end)",
    )
    p.set_defaults(run=cmd_batch)

    for name, run, what in (
        ("follow", cmd_follow, "show a batch's progress until it ends, then its summary"),
        ("cancel", cmd_cancel, "cancel a batch: jobs already sent finish, no new one starts"),
    ):
        p = commands.add_parser(name, help=what, description=what, parents=[common])
        connection(p)
        p.add_argument("workflow_id", help="the batch's workflow id")
        p.set_defaults(run=run)


# -- worker --------------------------------------------------------------------------------------
async def cmd_worker(args: argparse.Namespace) -> int:
    import anyio

    from .._client import AsyncClient
    from .._config import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, Limits
    from ..cli import EXIT_OK, _keys
    from ._worker import run_worker

    keys = await _keys(args)
    scale = args.time_scale
    settle = {} if args.settle_time is None else {"settle_time": args.settle_time}
    limits = Limits(window=60.0 * scale, generation_timeout=50.0 * scale, **settle)
    gate: Any = None
    if args.redis:
        from .._redis import RedisGate

        gate = RedisGate.from_url(
            args.redis, namespace=args.redis_namespace, lease_ttl=args.lease_ttl
        )
    else:
        print(
            "asyncsdk: no --redis: this worker's gates are its own; run no other worker on"
            " these accounts",
            file=sys.stderr,
            flush=True,
        )
    clients = [
        AsyncClient(
            key,
            base_url=args.base_url,
            limits=limits,
            gate=gate,
            poll_interval=min(1.0, 2 * scale),
            backoff_base=DEFAULT_BACKOFF_BASE * min(1.0, scale),
            backoff_max=DEFAULT_BACKOFF_MAX * min(1.0, scale),
            allow_insecure_http=args.allow_insecure_http,
        )
        for key in keys
    ]

    def ready() -> None:
        print(
            f"worker ready: {len(clients)} account(s), task queue {args.task_queue!r}"
            f" at {args.address}",
            flush=True,
        )

    try:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await run_worker(
                clients,
                address=args.address,
                namespace=args.namespace,
                task_queue=args.task_queue,
                on_ready=ready,
                max_concurrent_activities=args.max_concurrent,
            )
    finally:
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()
            if gate is not None:
                await gate.aclose()
    print("worker stopped", flush=True)
    return EXIT_OK


# -- batch -----------------------------------------------------------------------------------------
async def _connect(args: argparse.Namespace) -> Client:
    from temporalio.client import Client

    from ..cli import UsageError

    try:
        return await Client.connect(args.address, namespace=args.namespace)
    except RuntimeError as exc:  # the bridge's "Failed client connect: ..."
        raise UsageError(f"--address {args.address}: cannot reach Temporal ({exc})") from None


async def cmd_batch(args: argparse.Namespace) -> int:
    import anyio
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from .._jobfile import DEFAULT_MODEL, read_jobs, scan_file
    from ..cli import UsageError, _writable_directory
    from ._types import BatchOptions
    from ._worker import start_batch

    model = args.model or DEFAULT_MODEL
    summary = await anyio.to_thread.run_sync(lambda: scan_file(args.jobs, default_model=model))
    if args.out:
        await _writable_directory("--out", Path(args.out))
    scale = args.time_scale
    options = BatchOptions(
        max_in_flight=args.max_in_flight,
        download_to=await _absolute(args.out),
        results_file=await _absolute(args.results),
        jobs_per_run=args.jobs_per_run,
        heartbeat_timeout=args.heartbeat_timeout or max(1.0, 30.0 * scale),
        retry_initial=max(0.1, 1.0 * min(1.0, scale)),
        retry_max=max(1.0, 60.0 * min(1.0, scale)),
    )
    by_path = args.by_path or summary.jobs > INLINE_JOBS
    temporal = await _connect(args)
    started = time.time()
    try:
        if by_path:
            handle = await start_batch(
                temporal,
                jobs_file=await _absolute(args.jobs),
                default_model=model,
                options=options,
                id=args.workflow_id,
                task_queue=args.task_queue,
                task_timeout=max(1.0, 10.0 * min(1.0, scale)),
            )
        else:
            jobs = await anyio.to_thread.run_sync(
                lambda: list(read_jobs(args.jobs, default_model=model))
            )
            handle = await start_batch(
                temporal,
                jobs,
                options=options,
                id=args.workflow_id,
                task_queue=args.task_queue,
                task_timeout=max(1.0, 10.0 * min(1.0, scale)),
            )
    except WorkflowAlreadyStartedError as exc:
        raise UsageError(
            f"the batch {exc.workflow_id} has run already (its jobs were paid for): see"
            f" it with 'asyncsdk temporal follow {exc.workflow_id}', or pass another"
            " --workflow-id to run the jobs again"
        ) from None
    if args.detach:
        print(handle.id, flush=True)
        return 0
    print(f"batch {handle.id}: {summary.jobs} jobs", file=sys.stderr, flush=True)
    return await _follow(args, temporal, handle.id, started=started)


async def _absolute(path: str | None) -> Any:
    """``path`` made absolute (the workers resolve it, not this directory), or ``None``."""
    import anyio

    return None if path is None else str(await anyio.Path(path).absolute())


async def cmd_follow(args: argparse.Namespace) -> int:
    temporal = await _connect(args)
    return await _follow(args, temporal, args.workflow_id, started=None)


async def cmd_cancel(args: argparse.Namespace) -> int:
    temporal = await _connect(args)
    handle = temporal.get_workflow_handle(args.workflow_id)
    await handle.cancel()
    print(
        f"batch {args.workflow_id}: cancelling (jobs already sent finish; no new one starts)",
        file=sys.stderr,
        flush=True,
    )
    return await _follow(args, temporal, args.workflow_id, started=None)


async def _follow(
    args: argparse.Namespace, temporal: Client, workflow_id: str, *, started: float | None
) -> int:
    """Follow the workflow with the live display; the summary; the exit code."""
    import anyio
    from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError
    from temporalio.exceptions import CancelledError
    from temporalio.service import RPCError

    from .._display import rich_console
    from ..cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
    from ._worker import follow
    from ._workflow import BatchWorkflow

    handle: WorkflowHandle[Any, BatchResult] = temporal.get_workflow_handle_for(
        BatchWorkflow.run, workflow_id
    )
    console = None if args.json else rich_console()
    last: list[BatchProgress] = []
    outcome: dict[str, Any] = {}

    async def run() -> None:
        try:
            outcome["result"] = await follow(handle, last.append, interval=0.25)
        except WorkflowFailureError as exc:
            outcome["error"] = exc.cause if isinstance(exc.cause, CancelledError) else exc
            if not isinstance(exc.cause, CancelledError):
                return
            # Cancelled: a worker still answers what its runs did (if none does within a
            # few seconds, the last progress seen stands).
            with anyio.move_on_after(QUERY_PATIENCE):
                while True:
                    try:
                        last.append(await handle.query(BatchWorkflow.progress))
                        outcome["results"] = await handle.query(BatchWorkflow.results)
                        return
                    except (RPCError, WorkflowQueryFailedError):
                        await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:

        async def interrupted() -> None:
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    outcome["interrupted"] = True
                    tg.cancel_scope.cancel()
                    return

        async def body() -> None:
            try:
                if console is not None:
                    await _live(console, last, run, started)
                else:
                    await run()
            except Exception as exc:  # raised below as itself, not in an ExceptionGroup
                outcome["failure"] = exc
            tg.cancel_scope.cancel()

        tg.start_soon(interrupted)
        tg.start_soon(body)
    if "failure" in outcome:
        raise outcome["failure"]
    if outcome.get("interrupted"):
        print(
            f"\nasyncsdk: the batch {workflow_id} goes on in Temporal: 'asyncsdk temporal"
            f" follow {workflow_id}' shows it, 'asyncsdk temporal cancel {workflow_id}' stops it",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERRUPTED
    error = outcome.get("error")
    if error is not None and not isinstance(error, CancelledError):
        print(f"asyncsdk: the batch {workflow_id} failed: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    progress = last[-1] if last else None
    result: BatchResult | None = outcome.get("result")
    results = result.results if result is not None else outcome.get("results")
    summary = _summary(workflow_id, progress, result, args.time_scale, started)
    if args.json:
        for line in (results or {}).values():
            print(json.dumps(line.to_json()), flush=True)
        print(json.dumps({"summary": summary}), flush=True)
    elif console is not None:
        _render(console, summary, results)
    else:
        print(", ".join(f"{k}: {v}" for k, v in summary.items() if v is not None), flush=True)
    ok = progress is not None and progress.total == progress.done and error is None
    return EXIT_OK if ok else EXIT_FAILED


async def _live(
    console: Any,
    last: list[BatchProgress],
    run: Callable[[], Any],
    started: float | None,
) -> None:
    import anyio
    from rich.live import Live

    from .._display import progress_view

    def view() -> Any:
        return progress_view(*_as_batch_progress(last[-1] if last else None, started))

    with Live(view(), console=console, refresh_per_second=8) as live:
        async with anyio.create_task_group() as tg:

            async def refresh() -> None:
                while True:
                    live.update(view())
                    await anyio.sleep(1 / 8)

            tg.start_soon(refresh)
            await run()
            tg.cancel_scope.cancel()
        live.update(view())


def _as_batch_progress(progress: BatchProgress | None, started: float | None) -> tuple[Any, int]:
    """The workflow's progress as ``asyncsdk batch``'s display shows it."""
    from .._jobs import AccountProgress
    from .._jobs import BatchProgress as LocalProgress

    if progress is None:
        return LocalProgress(0, 0, 0, 0, (), 0.0), 0
    accounts = tuple(
        AccountProgress(label, "", tally.done, tally.failed, tally.credits, None)
        for label, tally in sorted(progress.accounts.items())
    )
    since = started if started is not None else progress.started_at
    end = time.time() if progress.running or progress.finished < (progress.total or 0) else None
    elapsed = (end or progress.updated_at) - since
    stopped = (
        "cancelling: the jobs already sent finish, no new one starts"
        if progress.cancelling
        else None
    )
    local = LocalProgress(
        seen=progress.total or progress.finished,
        done=progress.done,
        failed=progress.failed + progress.cancelled,
        running=progress.running,
        accounts=accounts,
        elapsed=max(elapsed, 0.0),
        spent=progress.credits,
        stopped=stopped,
    )
    return local, progress.total or progress.finished


def _summary(
    workflow_id: str,
    progress: BatchProgress | None,
    result: BatchResult | None,
    time_scale: float,
    started: float | None,
) -> dict[str, Any]:
    from .._display import THROUGHPUT_WINDOWS

    summary: dict[str, Any] = {"workflow_id": workflow_id}
    if progress is None:
        return summary
    elapsed = progress.updated_at - (started if started is not None else progress.started_at)
    window = 60.0 * time_scale
    ran = progress.done + progress.failed
    summary.update(
        jobs=progress.total,
        succeeded=progress.done,
        failed=progress.failed,
        cancelled=progress.cancelled,
        retries=progress.retries,
        credits=progress.credits,
        elapsed_s=round(elapsed, 2),
        runs=progress.runs,
        jobs_per_minute=None,
        limit_per_minute=None,
        results=result.results_file if result is not None else None,
    )
    if elapsed >= THROUGHPUT_WINDOWS * window and ran:
        summary["jobs_per_minute"] = round(ran / (elapsed / time_scale / 60.0), 1)
        summary["limit_per_minute"] = 10 * len(progress.accounts)
    return summary


def _render(
    console: Any, summary: Mapping[str, Any], results: Mapping[str, JobOutcome] | None
) -> None:
    from rich.table import Table

    failures = [r for r in (results or {}).values() if not r.ok]
    if failures:
        table = Table(title="jobs not done", title_justify="left")
        for column in ("job", "status", "why"):
            table.add_column(column)
        for r in failures[:20]:
            table.add_row(r.id, r.status, r.error or "")
        if len(failures) > 20:
            table.add_row("...", "", f"and {len(failures) - 20} more")
        console.print(table)
    console.print()
    table = Table(title="summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    labels = (
        ("workflow_id", "workflow"),
        ("jobs", "jobs"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("cancelled", "cancelled (never sent; nothing paid)"),
        ("retries", "attempts retried (a worker died, the network failed)"),
        ("credits", "credits spent"),
        ("elapsed_s", "elapsed (s)"),
        ("runs", "workflow runs (continue-as-new)"),
    )
    for key, label in labels:
        if summary.get(key) or key in ("jobs", "succeeded", "failed", "credits"):
            table.add_row(label, str(summary.get(key)))
    if summary.get("jobs_per_minute") is not None:
        table.add_row(
            "throughput (service time)",
            f"{summary['jobs_per_minute']} jobs/min "
            f"(the accounts allow {summary['limit_per_minute']:g}/min sustained)",
        )
    console.print(table)
    if summary.get("results"):
        console.print(f"results by job id in {summary['results']}")
