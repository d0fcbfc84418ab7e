"""Open-set recognition, loss by loss: does vMF training separate unseen classes better, and which
rejection score separates best? (issue 23; BENCHMARKS.md section 8)

Every method of the benchmark harness (`vmfml.bench.profiles.METHODS`) and CIDER trains the small
CNN on Fashion-MNIST with `--split open-set`: 3 of the 10 classes (drawn once, split seed 0, the
same for every run) are held out whole; the other 7 train on their official training images (10%
held out for validation: the kept epoch and the rejection thresholds) and are tested on their
official test images, against the 3,000 test images of the unseen classes. Each run records its
`open_set` report (AUROC, AUPR, FPR@95 of every score), closed-set accuracy and Recall@1, with the
git commit it ran at. Settings are fixed in advance (the defaults of `vmfml train`, 3 epochs),
never chosen on these figures.

    python benchmarks/bench_open_set.py --seeds 0 1 2            # runs what is not recorded yet
    python benchmarks/bench_open_set.py --report                 # the tables, from the records
    python benchmarks/bench_open_set.py --data mnist-digits ...  # another data set that ships here

The other data sets (MNIST digits, Animal-MNIST: 10,000 images of 10 classes each, split 80/20 by
`--split standard` before 3 classes are held out) train 23 epochs, so that a run takes about
Fashion-MNIST's 441 steps (19 steps an epoch on their 4,912 and 5,040 training images); digits
without flips, which change what a digit is.

Records: benchmarks/results/open-set/records.jsonl for Fashion-MNIST, records-DATA.jsonl for the
others (one JSON object a line; a run recorded there is not run again).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from vmfml.bench.stats import verdict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "open-set"
WORK = ROOT / "runs" / "bench-open-set"
# The settings of each data set's runs, fixed before any of them ran.
DATASETS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 3},  # 147 steps an epoch: 441 steps
    "mnist-digits": {"epochs": 23, "augment": "none"},  # 19 steps an epoch: 437
    "animal-mnist": {"epochs": 23},  # 19 steps an epoch: 437
}
SCORES = ("vmf_likelihood", "max_posterior", "max_cosine", "energy", "knn")
REFERENCE = "vmf-accumulate"
DECIDING = "knn"  # the classifier's default score: the paired comparison is made on it


def methods() -> dict[str, dict[str, Any]]:
    from vmfml.bench.profiles import METHODS

    return dict(METHODS)


def git_state() -> dict[str, Any]:
    """The commit and whether the code had uncommitted changes (the results folders' records
    do not count: `vmfml.bench.runner.git_commit`)."""
    from vmfml.bench.runner import git_commit

    commit, dirty = git_commit(ignore=RESULTS)
    return {"git_commit": commit, "git_dirty": dirty}


def records_file(data: str) -> Path:
    return RESULTS / ("records.jsonl" if data == "fashion-mnist" else f"records-{data}.jsonl")


def fixed(data: str) -> dict[str, Any]:
    """The settings every run on `data` shares (in the key order of Fashion-MNIST's records)."""
    return {"data": data, "split": "open-set", "split_seed": 0, **DATASETS[data], "plots": False,
            "progress": False}  # fmt: skip


def read_records(data: str) -> list[dict[str, Any]]:
    path = records_file(data)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_one(data: str, method: str, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    from vmfml.train.config import load_config
    from vmfml.train.loop import train

    out = WORK / ("" if data == "fashion-mnist" else data) / f"{method}-seed{seed}"
    config = load_config(None, {**fixed(data), **settings, "seed": seed, "out_dir": str(out)})
    if out.exists():
        import shutil

        shutil.rmtree(out)
    start = time.perf_counter()
    metrics = train(config).metrics
    report = metrics["open_set"]
    return {
        "method": method,
        "seed": seed,
        "settings": {**fixed(data), **settings},
        "seconds": round(time.perf_counter() - start, 1),
        "accuracy": metrics.get("accuracy"),
        "recall@1": metrics.get("recall@1"),
        "calibration": metrics.get("calibration"),
        "open_set": report,
    }


def run(data: str, seeds: list[int], only: list[str] | None) -> None:
    # The code is imported once, at this commit: every record of this process names it.
    state = git_state()
    if state["git_dirty"]:
        print("warning: uncommitted changes: the records will say git_dirty", file=sys.stderr)
    done = {(r["method"], r["seed"]) for r in read_records(data)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for method, settings in methods().items():
            if (only and method not in only) or (method, seed) in done:
                continue
            print(f"== {method} seed {seed}", flush=True)
            record = {**run_one(data, method, settings, seed), **state}
            # One line, appended whole: a killed run adds nothing.
            with open(records_file(data), "a") as f:
                f.write(json.dumps(record) + "\n")
            os_report = record["open_set"]["scores"]
            print(
                f"   {record['seconds']} s, accuracy {record['accuracy']:.4f}, AUROC "
                + ", ".join(f"{s} {os_report[s]['auroc']:.4f}" for s in SCORES),
                flush=True,
            )


def report(data: str) -> str:
    records = read_records(data)
    by = {(r["method"], r["seed"]): r for r in records}
    names = [m for m in methods() if any(k[0] == m for k in by)]
    seeds = sorted({k[1] for k in by})

    def values(method: str, key: Any) -> list[float]:
        return [key(by[(method, s)]) for s in seeds if (method, s) in by]

    def cell(xs: list[float]) -> str:
        if not xs:
            return "-"
        mean = sum(xs) / len(xs)
        if len(xs) == 1:
            return f"{100 * mean:.1f}"
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        return f"{100 * mean:.1f} ± {100 * sd:.1f}"

    dirty = sum(r.get("git_dirty", False) for r in records)
    lines = [
        f"{len(records)} runs at seeds {', '.join(map(str, seeds))}; "
        f"{dirty} made on a tree with uncommitted changes.",
        "",
        "AUROC (%, mean ± sd over seeds) of each rejection score; accuracy and FPR@95 of knn:",
        "",
        "| method | accuracy | " + " | ".join(SCORES) + " | FPR@95 (knn) |",
        "|---|---|" + "---|" * len(SCORES) + "---|",
    ]
    for m in names:
        row = [cell(values(m, lambda r: r["accuracy"]))]
        row += [cell(values(m, lambda r, s=s: r["open_set"]["scores"][s]["auroc"])) for s in SCORES]
        row.append(cell(values(m, lambda r: r["open_set"]["scores"]["knn"]["fpr_at_95"])))
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"AUROC of the default score ({DECIDING}, fixed in advance) against {REFERENCE}, paired by "
        "seed (mean difference in points, the rule's word):",
        "",
        f"| method | {DECIDING} AUROC | − {REFERENCE} | verdict |",
        "|---|---|---|---|",
    ]

    def best(r: dict[str, Any]) -> float:
        return float(r["open_set"]["scores"][DECIDING]["auroc"])

    for m in names:
        if m == REFERENCE:
            continue
        paired = [s for s in seeds if (m, s) in by and (REFERENCE, s) in by]
        diffs = [best(by[(m, s)]) - best(by[(REFERENCE, s)]) for s in paired]
        mean = sum(diffs) / len(diffs) if diffs else math.nan
        lines.append(
            f"| {m} | {cell(values(m, best))} | {100 * mean:+.1f} | "
            f"{REFERENCE} {verdict([-d for d in diffs])} {m} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", help="only these methods")
    parser.add_argument("--data", choices=list(DATASETS), default="fashion-mnist")
    parser.add_argument("--report", action="store_true", help="print the tables only")
    args = parser.parse_args()
    if not args.report:
        run(args.data, args.seeds, args.methods)
    print(report(args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
