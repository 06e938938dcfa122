"""The benchmarks still run: each one in its ``--quick`` mode (about a second), in a subprocess.

Benchmarks are scripts, not tests: nothing here checks a figure against a target, only that
every benchmark runs to its table without an error (``make bench`` measures).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, record
from benchmarks._common import Spread, Table, percentile
from benchmarks.scheduler import bound

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_quickly_to_its_table(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("### "), done.stdout[:500]
    assert "|" in done.stdout


def test_the_bound_of_the_limits() -> None:
    # Rate-bound: the first burst of 10 at once, then one full window per further 10.
    assert bound([1.5] * 25, 10, 60.0) == pytest.approx(2 * 60.0 + 5 * 1.5)
    # Slot-bound: one generation after the other.
    assert bound([10.0] * 8, 10, 60.0) == pytest.approx(80.0)
    assert bound([2.0, 3.0], 10, 60.0) == pytest.approx(5.0)


def test_figures_and_tables() -> None:
    spread = Spread.of([3.0, 1.0, 2.0])
    assert (spread.median, spread.low, spread.high) == (2.0, 1.0, 3.0)
    assert spread.fmt(".1f", "x") == "2.0x (1.0-3.0)"
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    table = Table("t", ["a", "bb"])
    table.add("1", "2")
    assert table.render().splitlines()[2:5] == ["| a | bb |", "| - | -- |", "| 1 | 2  |"]


def test_recording_keeps_the_notes_around_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n<!-- results: start -->\nold\n<!-- results: end -->\n\nNotes.\n")
    record(path, "new tables")
    text = path.read_text()
    assert "new tables" in text and "old" not in text
    assert text.startswith("# Results") and text.endswith("Notes.\n")
