"""How a batch looks in the terminal: the live progress, JSON lines, the summary.

Shared by ``asyncsdk batch`` (:mod:`asyncsdk.cli`), ``asyncsdk demo`` (:mod:`asyncsdk._demo`)
and ``asyncsdk temporal follow``; it depends on the library only, never on the commands.
With rich (``pip install 'asyncsdk[cli]'``) the progress is a live table (one line per
account) and the summary a table; without it, one plain line per job and per summary. With
``--json``, one JSON object per job and a last ``{"summary": ...}`` line.

Like the CLI, this module imports nothing heavy at import time: rich and the library are
imported by the functions that need them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ._batch import BatchRunner
    from ._jobs import BatchProgress, JobResult

__all__ = [
    "THROUGHPUT_WINDOWS",
    "ResultsFile",
    "plural",
    "print_json",
    "progress_view",
    "render_summary",
    "result_json",
    "results_line",
    "rich_console",
    "run_batch",
    "summary_of",
]

#: The summary shows a throughput only for runs at least this many windows long (shorter
#: ones are dominated by the first burst and the last generation).
THROUGHPUT_WINDOWS = 5


def rich_console(file: TextIO = sys.stdout) -> Any:
    """A rich ``Console`` on ``file``, or ``None`` without the cli extra (plain text)."""
    try:
        from rich.console import Console
    except ImportError:  # the cli extra is not installed: plain text
        return None
    return Console(file=file, highlight=False)


def print_json(value: Any) -> None:
    """One JSON line on standard output, flushed."""
    print(json.dumps(value, default=str), flush=True)


def result_json(result: JobResult) -> dict[str, Any]:
    """One result as ``--json`` prints it."""
    from ._wire import converter

    return {
        "id": result.job.id,
        "ok": result.ok,
        "status": result.status.value,
        "account": result.account,
        "generation": converter.unstructure(result.generation) if result.generation else None,
        "credits": result.credits,
        "error": None if result.error is None else str(result.error),
        "error_code": getattr(result.error, "code", None),
        "retryable": result.retryable if result.error is not None else False,
        "paths": [str(p) for p in result.paths],
        "elapsed": round(result.elapsed, 3),
        "from_journal": result.from_journal,
    }


def results_line(result: JobResult) -> dict[str, Any]:
    """One line of ``--results``: what became of the job, keyed by its id."""
    generation = result.generation
    if generation is None and result.error is not None:
        generation = getattr(result.error, "generation", None)  # a failed generation
    return {
        "id": result.job.id,
        "status": result.status.value,
        "generation_id": generation.generation_id if generation is not None else None,
        "images": list(result.generation.output_images) if result.generation else [],
        "paths": [str(p) for p in result.paths],
        "credits": result.credits,
        "error": None if result.error is None else str(result.error),
        "error_code": getattr(result.error, "code", None),
        "retryable": result.retryable if result.error is not None else False,
        "account": result.account,
        "from_journal": result.from_journal,
    }


class ResultsFile:
    """``--results``: one JSON line per job as it finishes, flushed at once (off the loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    async def open(self) -> None:
        """Create (or truncate) the file; ``OSError`` when it cannot be written."""
        import anyio

        self._file = await anyio.open_file(self.path, "w", encoding="utf-8")

    async def write(self, result: JobResult) -> None:
        await self._file.write(json.dumps(results_line(result), default=str) + "\n")
        await self._file.flush()

    async def aclose(self) -> None:
        if self._file is not None:
            await self._file.aclose()


async def run_batch(
    runner: BatchRunner,
    jobs: Any,
    *,
    total: int | None,
    as_json: bool,
    time_scale: float = 1.0,
    out: Path | None = None,
    results_file: ResultsFile | None = None,
) -> list[JobResult]:
    """Run a batch with a live display (or JSON lines); print the summary; the results."""
    console = None if as_json else rich_console()
    results: list[JobResult] = []
    started = time.monotonic()

    async def consume() -> None:
        async with contextlib.aclosing(runner.run(jobs)) as stream:
            async for result in stream:
                results.append(result)
                if results_file is not None:
                    await results_file.write(result)
                if as_json:
                    print_json(result_json(result))
                elif console is None:
                    state = "ok" if result.ok else f"{result.status.value.upper()}: {result.error}"
                    print(f"{result.job.id}: {state}", flush=True)

    if console is not None:
        await _with_live_display(console, runner, consume, total)
    else:
        await consume()
    elapsed = time.monotonic() - started
    summary = summary_of(runner, results, elapsed, time_scale, total=total, out=out)
    if results_file is not None:
        summary["results"] = str(results_file.path)
    if as_json:
        print_json({"summary": summary})
    elif console is not None:
        render_summary(console, summary, results)
    else:
        print(", ".join(f"{k}: {v}" for k, v in summary.items() if v is not None))
    return results


async def _with_live_display(
    console: Any,
    runner: BatchRunner,
    consume: Callable[[], Coroutine[Any, Any, None]],
    total: int | None,
) -> None:
    import anyio
    from rich.live import Live

    with Live(
        progress_view(runner.progress(), total), console=console, refresh_per_second=12
    ) as live:
        async with anyio.create_task_group() as tg:

            async def refresh() -> None:
                while True:
                    live.update(progress_view(runner.progress(), total))
                    await anyio.sleep(1 / 12)

            tg.start_soon(refresh)
            try:
                await consume()
            except Exception as exc:  # re-raised below as itself, not in an ExceptionGroup
                failure: Exception | None = exc
            else:
                failure = None
            tg.cancel_scope.cancel()
        live.update(progress_view(runner.progress(), total))
    if failure is not None:
        raise failure


def progress_view(progress: BatchProgress, total: int | None) -> Any:
    """The live display of ``progress``: a bar, the counts, one line per account."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    finished = progress.done + progress.failed + progress.expired
    of = total if total is not None else max(progress.seen, finished)
    parts = [
        f"[bold]{finished}/{of}[/] jobs",
        f"[green]{progress.done} ok[/]",
        f"[red]{progress.failed} failed[/]",
    ]
    if progress.expired:
        parts.append(f"[yellow]{progress.expired} expired[/]")
    if progress.from_journal:
        parts.append(f"({progress.from_journal} from the journal)")
    parts.append(f"{progress.elapsed:.1f}s")
    head = Table.grid(padding=(0, 1))
    head.add_row(ProgressBar(total=max(of, 1), completed=finished, width=40), "  ".join(parts))
    rows: list[Any] = [head]
    if progress.max_credits is not None:
        rows.append(
            f"credits: {progress.spent} spent + {progress.reserved} in flight"
            f" of --max-credits {progress.max_credits}"
        )
    if progress.stopped:
        rows.append(f"[yellow]{progress.stopped}[/]")
    table = Table(box=None, padding=(0, 2), show_edge=False)
    for column in ("account", "now", "done", "failed", "credits"):
        table.add_column(
            column, justify="right" if column in ("done", "failed", "credits") else "left"
        )
    for a in progress.accounts:
        now = f"[red]out: {a.out}[/]" if a.out else a.state
        table.add_row(a.label, now, str(a.done), str(a.failed), str(a.credits))
    rows.append(table)
    return Group(*rows)


def summary_of(
    runner: BatchRunner,
    results: list[JobResult],
    elapsed: float,
    time_scale: float,
    *,
    total: int | None,
    out: Path | None,
) -> dict[str, Any]:
    """Totals; a throughput in the service's time only for runs long enough to mean it."""
    from ._jobs import JobStatus

    statuses = collections.Counter(r.status for r in results)
    ran = sum(not r.from_journal for r in results if r.submitted_at is not None)
    clients = runner.clients
    window = max(c.limits.window for c in clients)
    summary: dict[str, Any] = {
        "jobs": len(results),
        "succeeded": statuses[JobStatus.SUCCEEDED],
        "failed": statuses[JobStatus.FAILED] + statuses[JobStatus.DOWNLOAD_FAILED],
        "expired": statuses[JobStatus.EXPIRED],
        "from_journal": sum(r.from_journal for r in results),
        "credits": sum(r.credits for r in results if not r.from_journal),
        "elapsed_s": round(elapsed, 2),
        "jobs_per_minute": None,
        "limit_per_minute": None,
        "out": str(out) if out is not None and any(r.paths for r in results) else None,
        "stopped": runner.stopped,
        "not_started": (total - len(results)) if total is not None else None,
    }
    if elapsed >= THROUGHPUT_WINDOWS * window and ran:
        service_minutes = elapsed / time_scale / 60.0
        limit = sum(c.limits.submissions * 60.0 * time_scale / c.limits.window for c in clients)
        summary["jobs_per_minute"] = round(ran / service_minutes, 1)
        summary["limit_per_minute"] = round(limit, 1)
    return summary


def render_summary(console: Any, summary: dict[str, Any], results: list[JobResult]) -> None:
    """The jobs not done (the first twenty) and the totals of :func:`summary_of`, as tables."""
    from rich.table import Table

    failures = [r for r in results if not r.ok]
    if failures:
        table = Table(title="jobs not done", title_justify="left")
        table.add_column("job")
        table.add_column("status")
        table.add_column("why")
        for r in failures[:20]:
            table.add_row(r.job.id, r.status.value, str(r.error))
        if len(failures) > 20:
            table.add_row("...", "", f"and {len(failures) - 20} more")
        console.print(table)
    console.print()
    table = Table(title="summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, label in (
        ("jobs", "jobs"),
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("expired", "expired (not started in time; nothing paid)"),
        ("from_journal", "from an earlier run"),
        ("credits", "credits spent"),
        ("elapsed_s", "elapsed (s)"),
    ):
        if summary[key] or key in ("jobs", "succeeded", "failed", "credits", "elapsed_s"):
            table.add_row(label, str(summary[key]))
    if summary["jobs_per_minute"] is not None:
        table.add_row(
            "throughput (service time)",
            f"{summary['jobs_per_minute']} jobs/min "
            f"(the accounts allow {summary['limit_per_minute']:g}/min sustained)",
        )
    console.print(table)
    if summary["out"]:
        console.print(f"images saved under {summary['out']}/", soft_wrap=True)
    if summary.get("results"):
        console.print(f"results by job id in {summary['results']}", soft_wrap=True)


def plural(n: int, word: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
