"""Which validated epoch should a run keep? Rules for choosing it, replayed on real folders.

On a small folder one validation image moves the score by 1/len(val) (0.36 points for 280 images),
so many epochs tie and the rule for ties decides the kept epoch and when early stopping acts. One
run per folder and seed trains every planned epoch (`--patience 0`, every other setting the
default) and records, beside each epoch's validation metrics, the test metrics of that epoch (for
this measurement only: a run never looks at its test set before the end). Each rule is then
replayed on the recorded history with the default `--patience 10` in the second half: the run's
weights do not depend on the rule, so the replay gives the kept epoch, the stop epoch and the test
score at the kept epoch that the rule would have given.

    python benchmarks/make_folders.py /tmp/folders --only fashion-2k digits-5k-20px
    python benchmarks/bench_kept_epoch.py /tmp/folders --folder fashion-2k --seed 0 \
        --out benchmarks/results/kept_epoch.jsonl
    python benchmarks/bench_kept_epoch.py --report benchmarks/results/kept_epoch.jsonl

`--replay-results benchmarks/results/cpu-converged/results.jsonl` replays the rules on the
histories a `vmfml bench` profile recorded (with its own patience) and lists the runs whose kept
epoch a rule other than the old one would change.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATIENCE = 10  # the default --patience


def record_run(root: Path, folder: str, seed: int, out: Path) -> None:
    """Train on `root/folder` with the defaults (no early stop) and append its history."""
    from vmfml.train import loop
    from vmfml.train.config import load_config

    captured: dict[str, Any] = {}
    real_build, real_validate = loop.build_datasets, loop.validate

    def build(config: Any) -> Any:
        captured["data"] = data = real_build(config)
        return data

    def validate_and_test(model: Any, loss: Any, val: Any, disjoint: bool, *args: Any) -> Any:
        metrics = real_validate(model, loss, val, disjoint, *args)
        test = real_validate(model, loss, captured["data"].test, disjoint, *args)
        return {**metrics, **{"test_" + k[4:]: v for k, v in test.items()}}

    loop.build_datasets, loop.validate = build, validate_and_test
    with tempfile.TemporaryDirectory() as run_dir:
        settings = {
            "data": str(root / folder),
            "seed": seed,
            "patience": 0,
            "plots": False,
            "progress": False,
            "threads": 1,
            "out_dir": run_dir,
        }
        result = loop.train(load_config(None, settings))
    row = {
        "folder": folder,
        "seed": seed,
        "epochs": result.metrics["run"]["epochs"],
        "val_images": len(captured["data"].val),
        "history": result.history,
    }
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


# rule name -> the key that ranks a validated epoch, and whether a tie goes to the later epoch
RULES: dict[str, tuple[Callable[[dict[str, Any]], tuple[float, ...]], bool]] = {
    "score, earliest of a tie (old)": (lambda r: (r["val_score"],), False),
    "score, latest of a tie": (lambda r: (r["val_score"],), True),
    "score, then MAP@R": (lambda r: (r["val_score"], r["val_map@r"]), False),
    "MAP@R alone": (lambda r: (r["val_map@r"],), False),
}
# The rule vmfml adopted (`validation_rank` in train/validation.py).
ADOPTED = "score, then MAP@R"


def replay(
    history: list[dict[str, Any]],
    epochs: int,
    key: Callable[..., tuple[float, ...]],
    later: bool,
    patience: int = PATIENCE,
) -> tuple[int, int]:
    """(kept epoch, last epoch run) of a rule with early stopping as the run applies it (epoch 0:
    a pretrained network validated before training)."""
    best: tuple[float, ...] = (-math.inf,)
    kept, stale = 0, 0
    for record in history:
        score = key(record)
        if score > best or (later and score == best):
            best, kept, stale = score, record["epoch"], 0
        else:
            stale += 1
        if patience > 0 and stale >= patience and 2 * record["epoch"] >= epochs:
            return kept, record["epoch"]
    return kept, history[-1]["epoch"]


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for test_key in ("test_score", "test_recall@1"):
        print(f"\n{test_key} at the kept epoch (kept epoch / last epoch run), in points\n")
        names = " | ".join(f"{r['folder']} seed {r['seed']}" for r in rows)
        print(f"| rule | {names} | mean |")
        print("|" + " --- |" * (len(rows) + 2))
        for name, (key, later) in RULES.items():
            cells, scores = [], []
            for row in rows:
                history = row["history"]
                kept, stop = replay(history, row["epochs"], key, later)
                scores.append(history[kept - 1][test_key])
                cells.append(f"{100 * scores[-1]:.2f} ({kept}/{stop})")
            mean = 100 * sum(scores) / len(scores)
            print(f"| {name} | " + " | ".join(cells) + f" | {mean:.2f} |")
        best = [max(row["history"], key=lambda r: r[test_key]) for row in rows]
        cells = [f"{100 * b[test_key]:.2f} ({b['epoch']})" for b in best]
        mean = 100 * sum(b[test_key] for b in best) / len(best)
        print("| best test epoch (oracle) | " + " | ".join(cells) + f" | {mean:.2f} |")
    print("\nvalidation images: " + ", ".join(f"{r['folder']} {r['val_images']}" for r in rows))
    print("test_score: the classifier's accuracy on the test images (the run's score)")


def replay_results(path: Path) -> None:
    """The runs of a `vmfml bench` results file whose kept epoch another rule would change."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("status") == "ok" and r.get("history")]
    old_key, _ = RULES["score, earliest of a tie (old)"]
    changed: dict[str, list[str]] = {name: [] for name in RULES}
    stale: list[str] = []
    for row in rows:
        history = [r for r in row["history"] if "val_score" in r]
        before = row["metrics"].get("before_training")
        settings = row["settings"]
        pretrained = settings.get("pretrained") or settings.get("weights")
        if before and pretrained and settings.get("keep_start", True):
            history = [{**before, "epoch": 0}, *history]
        if not history:
            continue
        epochs, patience = settings["epochs"], settings.get("patience", PATIENCE)
        old = replay(history, epochs, old_key, False, patience)[0]
        kept = row["metrics"]["kept"]["epoch"]
        adopted = replay(history, epochs, *RULES[ADOPTED], patience)[0]
        assert kept in (old, adopted), (row["method"], row["seed"], kept, old, adopted)
        if kept != adopted:  # made under the old rule, which kept another epoch
            stale.append(f"{row['run_id']} {row['phase']} {row['method']} seed {row['seed']}")
        if kept != old:
            continue  # made under the adopted rule: its kept epoch is already the new one
        for name, (key, later) in RULES.items():
            new = replay(history, epochs, key, later, patience)[0]
            if new != old:
                changed[name].append(
                    f"{row['phase']} {row['method']} seed {row['seed']}: {old} -> {new}"
                )
    print(f"{len(rows)} runs of {path}")
    for name, runs in changed.items():
        listed = "".join(f"\n  {r}" for r in runs[:10]) + ("\n  ..." if len(runs) > 10 else "")
        print(f"{name}: {len(runs)} kept epochs change{listed}")
    print(
        f"records whose kept epoch the adopted rule ({ADOPTED}) changes, to be made again "
        f"(`vmfml bench --rerun ID,...`): {len(stale)}" + "".join(f"\n  {r}" for r in stale)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?")
    parser.add_argument("--folder", default="fashion-2k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kept_epoch.jsonl"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("--replay-results", type=Path)
    args = parser.parse_args()
    if args.replay_results:
        replay_results(args.replay_results)
    elif args.report:
        report(args.report)
    else:
        record_run(args.root, args.folder, args.seed, args.out)


if __name__ == "__main__":
    main()
