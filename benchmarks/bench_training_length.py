"""How long should `vmfml train` run by default? Test accuracy, Recall@1 and wall time of the
default command (`--epochs auto`) and of a sweep of explicit epochs, on real image folders.

    python benchmarks/make_folders.py /tmp/folders
    python benchmarks/bench_training_length.py /tmp/folders --out benchmarks/results/training_length.jsonl
    python benchmarks/bench_training_length.py --report benchmarks/results/training_length.jsonl

Every run is a `vmfml train` process with the defaults except the epochs (and, for the pretrained
EfficientNet-Lite0 folder, the model settings a user would give). One record per finished run is
appended to the JSONL file, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# name -> (folder, extra flags, epochs of the sweep)
SETUPS: dict[str, tuple[str, list[str], list[int]]] = {
    "fashion-2k": ("fashion-2k", [], [5, 10, 20, 40, 80]),
    "digits-5k-20px": ("digits-5k-20px", [], [5, 10, 20, 40, 80]),
    "digits-10k": ("digits-10k", [], [5, 10, 20, 40]),
    "animals-10k": ("animals-10k", [], [5, 10, 20, 40]),
    "fashion-2k-efficientnet-96px": (
        "fashion-2k",
        ["--model", "efficientnet_lite0", "--pretrained", "true", "--image-size", "96"],
        [3, 10, 30],
    ),
}


# Optimizer steps per epoch of each setup with the defaults (batch 256, 20% test, 10% validation):
# fashion-2k trains on 1,440 images, the 5,000 digits on 3,600, the 10,000-image folders on 7,200.
STEPS_PER_EPOCH = {
    "fashion-2k": 5,
    "digits-5k-20px": 14,
    "digits-10k": 28,
    "animals-10k": 28,
    "fashion-2k-efficientnet-96px": 5,
}


def run(folder: Path, flags: list[str], epochs: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "vmfml", "train", "--data", str(folder), "--out-dir", out]
        cmd += [*flags, "--epochs", epochs, "--plots", "false", "--progress", "false"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        metrics = json.loads((Path(out) / "metrics.json").read_text())
        history = json.loads((Path(out) / "history.json").read_text())
    return {
        "epochs_run": len(history),
        "accuracy": metrics["accuracy"],
        "recall@1": metrics["recall@1"],
        "seconds": seconds,
        "kept_epoch": metrics.get("kept", {}).get("epoch"),
        "epochs_planned": metrics["run"]["epochs"],
        "stop": metrics.get("kept", {}).get("reason"),
    }


def sweep(root: Path, out: Path, names: list[str], default: bool) -> None:
    done = set()
    if out.exists():
        done = {(r["setup"], r["epochs"]) for r in map(json.loads, out.read_text().splitlines())}
    for name in names:
        folder, flags, epochs = SETUPS[name]
        for value in [*map(str, epochs), *(["auto"] if default else [])]:
            if (name, value) in done:
                continue
            record = {"setup": name, "epochs": value, **run(root / folder, flags, value)}
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


def epochs_run(record: dict[str, Any]) -> int:
    """Epochs trained (records made before `epochs_run` was kept: from the stop reason)."""
    if "epochs_run" in record:
        return int(record["epochs_run"])
    if str(record["stop"]).startswith("early stop"):
        stale = int(str(record["stop"]).split("for ")[1].split(" epochs")[0])
        return int(record["kept_epoch"]) + stale
    return int(record["epochs_planned"])


def report(path: Path, steps_per_epoch: dict[str, int]) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    lines = [
        "| folder | run | epochs planned / run (kept) | optimizer steps run | test accuracy "
        "| Recall@1 | wall time |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["setup"] for r in records):
        rows = [r for r in records if r["setup"] == name]
        sweep_rows = [r for r in rows if r["epochs"] != "auto"]
        best = max(sweep_rows, key=lambda r: r["accuracy"]) if sweep_rows else None
        for r in rows:
            label = "default (auto)" if r["epochs"] == "auto" else f"--epochs {r['epochs']}"
            if r is best:
                label += " (best of sweep)"
            run = epochs_run(r)
            lines.append(
                f"| {name} | {label} | {r['epochs_planned']} / {run} ({r['kept_epoch']}) | "
                f"{run * steps_per_epoch[name]} | {100 * r['accuracy']:.1f} | "
                f"{100 * r['recall@1']:.1f} | {r['seconds']:.0f} s |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", help="folder of the image folders")
    parser.add_argument("--out", type=Path, default=Path("training_length.jsonl"))
    parser.add_argument("--only", nargs="*", choices=sorted(SETUPS), default=list(SETUPS))
    parser.add_argument("--default", action="store_true", help="also run the default (auto)")
    parser.add_argument("--report", type=Path, help="print the markdown table of a JSONL file")
    args = parser.parse_args()
    if args.report:
        print(report(args.report, STEPS_PER_EPOCH))
        return
    if args.root is None:
        parser.error("give the folder of the image folders (benchmarks/make_folders.py)")
    sweep(args.root, args.out, args.only, args.default)


if __name__ == "__main__":
    main()
