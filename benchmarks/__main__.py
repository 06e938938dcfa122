"""``python -m benchmarks`` (``make bench``): run every benchmark and print its tables.

Each benchmark runs in its own process (a clean heap, and the scale benchmark's peak RSS is
its own), one after the other, with the emulator in yet another process. Options:

- ``--quick``: each benchmark for about a second (what ``tests/test_benchmarks_smoke.py``
  runs): a smoke run, not a measurement;
- ``--only NAME``: run only these (``overhead``, ``scheduler``, ``polling``, ``telemetry``,
  ``handrolled``, ``scale``, ``redis_scale``, ``temporal``);
- ``--record FILE``: also write the machine's facts and the tables into FILE, between the
  ``<!-- results: start -->`` and ``<!-- results: end -->`` markers (the notes around them in
  ``benchmarks/RESULTS.md`` are kept).

At the end it prints issue 12's table: one row per figure the benchmarks noted
(:func:`benchmarks._common.summary`), the SDK's figure next to the baseline measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import ROOT, SUMMARY_PREFIX, Table, machine_facts

BENCHMARKS = (
    "overhead",
    "scheduler",
    "polling",
    "telemetry",
    "handrolled",
    "scale",
    "redis_scale",
    "temporal",
)
START, END = "<!-- results: start -->", "<!-- results: end -->"


def run_one(
    name: str, quick: bool, summaries: list[dict[str, object]] | None = None
) -> tuple[int, str]:
    """Run ``benchmarks.<name>``, echoing its tables as they come; (exit code, tables). The
    rows it notes for issue 12's table go to ``summaries``."""
    command = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if quick else [])]
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(SUMMARY_PREFIX):
                if summaries is not None:
                    summaries.append(json.loads(line[len(SUMMARY_PREFIX) :].rsplit("-->", 1)[0]))
                continue
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


def issue_table(summaries: list[dict[str, object]]) -> Table:
    """Issue 12's table, from the rows the benchmarks noted."""
    table = Table(
        "Issue 12: the SDK against the baselines measured in this run",
        ["figure", "asyncsdk", "baseline (same run)", "target", "verdict"],
    )
    for row in summaries:
        met = row["met"]
        verdict = "" if met is None else ("met" if met else "MISSED")
        table.add(row["figure"], row["sdk"], row["baseline"], row["target"], verdict)
    return table


def facts_block() -> str:
    facts = machine_facts()
    return "\n".join(f"- **{key}**: {value}" for key, value in facts.items()) + "\n"


def record(path: Path, body: str) -> None:
    """Put ``body`` between the markers of ``path`` (appending them if missing)."""
    text = path.read_text() if path.exists() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a second each: smoke only")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--record", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)

    facts = facts_block()
    print("## asyncsdk benchmarks\n\n" + facts, flush=True)
    sections, failed = [], []
    summaries: list[dict[str, object]] = []
    started = time.monotonic()
    for name in args.only:
        code, tables = run_one(name, args.quick, summaries)
        sections.append(tables)
        if code != 0:
            failed.append(name)
    if summaries:
        rendered = issue_table(summaries).render()
        print(rendered, flush=True)
        sections.append(rendered)
    took = time.monotonic() - started
    print(f"({len(args.only)} benchmarks in {took:.0f} s)", flush=True)
    if args.record is not None and not failed:
        mode = " (quick mode: not a measurement)" if args.quick else ""
        body = f"Recorded by `python -m benchmarks --record`{mode}, {took:.0f} s in all.\n\n"
        record(args.record, body + facts + "\n" + "\n".join(sections))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
