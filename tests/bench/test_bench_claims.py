"""BENCHMARKS.md's verdicts agree with the records: every paired table of section 5 is recomputed.

A paired table is one whose first header cell is `A vs B (paired by seed)`. Each other header
cell names a results folder and a table cell of its records in backticks (`cpu-converged`
`small_cnn`, or `gpu` `classification` for the four depths); each row names methods A and B in
backticks. A cell lists, per metric (R@1 and MAP@R) or depth, the verdict of the rule fixed in
advance (`vmfml.bench.stats.verdict`), A − B in points (mean ± std over seeds, paired by seed)
and the seeds where A is ahead, e.g. `R@1 **beats** +0.8 ± 0.6 (3/3)`, then † when a run it pairs
was made on a tree with uncommitted changes; "–" where the records hold no such pair. The test
fails when any word, figure or mark differs from the records'. (`vmfml bench report --update
BENCHMARKS.md` writes these cells; this is an independent recomputation.)

`python tests/bench/test_bench_claims.py FOLDER:SETTING ... -- A:B ...` prints such a table.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from vmfml.bench.report import by_cell, latest_records
from vmfml.bench.runner import read_records
from vmfml.bench.stats import paired_differences, summarize, verdict

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIRST_HEADER = "A vs B (paired by seed)"
_RETRIEVAL_METRICS = (("R@1", "recall@1"), ("MAP@R", "map@r"))


@functools.cache
def _cells(folder: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    return by_cell(latest_records(read_records(RESULTS / folder)))


def _points(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "−")


def expected_cell(folder: str, setting: str, a: str, b: str) -> str:
    """The cell for A vs B on one table of one results folder, computed from its records."""
    cells = _cells(folder)
    if setting == "classification":
        depths = sorted({s for (e, s, _) in cells if e == "classification"})
        parts = [
            (f"depth {d.split('=')[1]}", "classification", d, "classifier_accuracy") for d in depths
        ]
    else:
        parts = [(label, "retrieval", setting, key) for label, key in _RETRIEVAL_METRICS]
    items = []
    dirty = False
    for label, experiment, cell, key in parts:
        runs_a, runs_b = cells.get((experiment, cell, a), []), cells.get((experiment, cell, b), [])
        diffs = paired_differences(runs_a, runs_b, key)
        stat = summarize(diffs)
        if stat is None:
            continue
        paired = {r["seed"] for r in runs_a} & {r["seed"] for r in runs_b}
        dirty |= any(r.get("git_dirty") is True for r in (*runs_a, *runs_b) if r["seed"] in paired)
        wins = sum(d > 0 for d in diffs)
        spread = f" ± {100 * stat.std:.1f}" if stat.n > 1 else ""
        items.append(f"{label} **{verdict(diffs)}** {_points(stat.mean)}{spread} ({wins}/{stat.n})")
    if not items:
        return "–"
    return "; ".join(items) + (" †" if dirty else "")


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def paired_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, rows of cells) of every paired table of a markdown text."""
    tables = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and _split_row(line)[0] == FIRST_HEADER:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(_split_row(row))
            tables.append((_split_row(line), rows))
    return tables


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _checked_cells() -> list[tuple[str, str, str, str, str]]:
    """(folder, setting, A, B, the cell's text) of every paired table in BENCHMARKS.md."""
    found = []
    for header, rows in paired_tables((ROOT / "BENCHMARKS.md").read_text()):
        columns = [_backticked(h)[-2:] for h in header[1:]]
        for row in rows:
            a, b = _backticked(row[0])[:2]
            for (folder, setting), cell in zip(columns, row[1:], strict=True):
                found.append((folder, setting, a, b, cell))
    return found


def test_benchmarks_md_has_paired_tables_with_every_claim() -> None:
    checked = _checked_cells()
    assert len(paired_tables((ROOT / "BENCHMARKS.md").read_text())) >= 2
    pairs = {(a, b) for _, _, a, b, _ in checked}
    for a in ("vmf-global", "vmf-global-random"):
        for b in ("softmax", "vmf-learned", "triplet", "contrastive", "lifted_structure", "npair"):
            assert (a, b) in pairs
    words = [w for *_, cell in checked for w in re.findall(r"\*\*(\w+)\*\*", cell)]
    # Every dirty CPU record has been made again at a clean commit: no published cell has a †.
    assert not any(cell.endswith(" †") for *_, cell in checked)
    assert set(words) <= {"beats", "trails", "level"} and len(words) > 100


@pytest.mark.parametrize(
    ("folder", "setting", "a", "b", "cell"),
    _checked_cells(),
    ids=lambda v: v if len(str(v)) < 30 else "cell",
)
def test_each_paired_cell_of_benchmarks_md_agrees_with_the_records(
    folder: str, setting: str, a: str, b: str, cell: str
) -> None:
    assert cell == expected_cell(folder, setting, a, b)


def test_a_wrong_word_is_caught() -> None:
    cell = expected_cell("cpu-converged", "efficientnet_lite0_frozen_bn", "vmf-global", "npair")
    # +0.9 ± 1.0 on 3 of 3 seeds: ahead everywhere, but under twice the standard error.
    assert cell.startswith("R@1 **level** +0.9 ± 1.0 (3/3)") and not cell.endswith("†")
    assert cell.replace("**level**", "**beats**", 1) != cell


def main(argv: list[str]) -> None:
    """Print a paired table: FOLDER:SETTING columns, then -- and A:B rows."""
    split = argv.index("--")
    columns = [c.split(":") for c in argv[:split]]
    print(f"| {FIRST_HEADER} | " + " | ".join(f"`{f}` `{s}`" for f, s in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for pair in argv[split + 1 :]:
        a, b = pair.split(":")
        cells = [expected_cell(f, s, a, b) for f, s in columns]
        print(f"| `{a}` vs `{b}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
