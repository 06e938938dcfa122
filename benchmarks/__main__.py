"""``python -m benchmarks`` (``make bench``): run every benchmark and print its tables.

Each benchmark runs in its own process (a clean heap, and the scale benchmark's peak RSS is
its own), one after the other, with the emulator in yet another process. Options:

- ``--quick``: each benchmark for about a second (what ``tests/test_benchmarks_smoke.py``
  runs): a smoke run, not a measurement;
- ``--only NAME``: run only these (``overhead``, ``scheduler``, ``polling``, ``scale``,
  ``temporal``);
- ``--record FILE``: also write the machine's facts and the tables into FILE, between the
  ``<!-- results: start -->`` and ``<!-- results: end -->`` markers (the notes around them in
  ``benchmarks/RESULTS.md`` are kept).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import ROOT, machine_facts

BENCHMARKS = ("overhead", "scheduler", "polling", "scale", "temporal")
START, END = "<!-- results: start -->", "<!-- results: end -->"


def run_one(name: str, quick: bool) -> tuple[int, str]:
    """Run ``benchmarks.<name>``, echoing its tables as they come; (exit code, tables)."""
    command = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if quick else [])]
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


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
    started = time.monotonic()
    for name in args.only:
        code, tables = run_one(name, args.quick)
        sections.append(tables)
        if code != 0:
            failed.append(name)
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
