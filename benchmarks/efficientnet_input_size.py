"""The input size of EfficientNet-Lite0 in the retrieval benchmark, chosen on validation classes.

The 28 x 28 px images of the combined 30-class set are upscaled for the ImageNet network. This
measures, before any training, how well its ImageNet features (with the new 128-d head at its
seeded random start, as a run begins) retrieve the 6 validation classes of the converged
profile (2 held out of each source's training classes, split_seed 0), at each candidate size,
and what each size costs in inference images/s. The test classes are not loaded into the choice.

`--test-size N` then evaluates the network before any training at the chosen size on the
validation and test classes, as a run evaluates its kept epoch, for each seed of `--seeds` (the
seed draws the new head's start): the reference row "ImageNet features, no training" of
BENCHMARKS.md 5.8. Each seed's figures are appended to `--record` (default
benchmarks/results/cpu-converged/references.jsonl, kind "untrained") with the commit, whether the
tree had uncommitted changes, and the machine; BENCHMARKS.md's reference rows are generated from it.

    .venv/bin/python benchmarks/efficientnet_input_size.py [--sizes 32 48 64 96] [--test-size 64]
        [--seeds 0 1 2] [--record FILE ('' for none)]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vmfml.bench.runner import append_script_record, script_provenance
from vmfml.metrics import retrieval_metrics
from vmfml.train.batches import embed_dataset
from vmfml.train.config import load_config
from vmfml.train.datasets import build_datasets
from vmfml.train.evaluation import evaluate_model
from vmfml.train.loop import build_model, seed_everything

# The records of the converged profile's table, whose reference rows these figures are.
RECORD = Path(__file__).resolve().parent / "results" / "cpu-converged" / "references.jsonl"


def untrained(size: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """The converged profile's data and EfficientNet-Lite0 at `size` px, as a run starts."""
    config = load_config(
        None,
        {
            "data": "combined-30",
            "split": "class-disjoint",
            "model": "efficientnet_lite0",
            "pretrained": True,
            "image_size": size,
            "val_fraction": 0.4,
            "split_seed": 0,
            "seed": seed,
        },
    )
    data = build_datasets(config)
    seed_everything(config.seed)
    return config, data, build_model(config, data).eval()


def measure(size: int) -> dict[str, float]:
    _, data, model = untrained(size)
    return validation(data, model)


def validation(data: Any, model: Any) -> dict[str, float]:
    """Validation Recall@1 and MAP@R of `model`, and its inference images/s."""
    start = time.perf_counter()
    feats, labels = embed_dataset(
        model, data.val, dict(model.preprocessing), torch.device("cpu"), batch_size=256
    )
    seconds = time.perf_counter() - start
    found = retrieval_metrics(F.normalize(feats, dim=1), labels, ks=(1,), nmi=False, progress=False)
    return {
        "val_recall@1": found["recall@1"],
        "val_map@r": found["map@r"],
        "images_per_s": len(data.val) / seconds,
    }


def test_figures(size: int, seed: int) -> dict[str, Any]:
    """Test-class metrics of the network before any training, as a run's final evaluation, and
    its validation Recall@1."""
    config, data, model = untrained(size, seed)
    metrics, _, _ = evaluate_model(
        model,
        None,
        data.train,
        data.test,
        dict(model.preprocessing),
        torch.device("cpu"),
        config.eval_ks,
        data.disjoint,
        progress=False,
    )
    return {**metrics, "val_recall@1": validation(data, model)["val_recall@1"]}


def add_record_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--record",
        default=str(RECORD),
        help=f"JSONL file {what} are appended to (default {RECORD}; '' for none)",
    )


def write_record(
    path: str,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
    *,
    kind: str,
    size: int,
    seed: int,
    **fields: Any,
) -> None:
    """Append one reference record (EfficientNet-Lite0, split seed 0) of this script's run to
    `path` ('' writes nothing); `metrics`' numbers are kept, as floats."""
    if not path:
        return
    record = {
        "kind": kind,
        "script": f"benchmarks/{Path(sys.argv[0]).name}",
        "argv": sys.argv[1:],
        "model": "efficientnet_lite0",
        "image_size": size,
        "split_seed": 0,
        "seed": seed,
        **fields,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
    }
    append_script_record(path, record, provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 48, 64, 96])
    parser.add_argument("--test-size", type=int, help="then the test figures at this size")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="the head's start, for --test-size"
    )
    add_record_argument(parser, "the test figures")
    args = parser.parse_args()
    provenance = script_provenance(args.record or RECORD)
    print("| input px | val R@1 | val MAP@R | inference images/s |")
    print("|--:|--:|--:|--:|")
    for size in args.sizes:
        m = measure(size)
        print(
            f"| {size} | {100 * m['val_recall@1']:.1f} | {100 * m['val_map@r']:.1f} | {m['images_per_s']:.0f} |",
            flush=True,
        )
    if args.test_size:
        keys = ["recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi"]
        keys += ["val_recall@1"]
        print(f"\ntest classes, {args.test_size} px, before any training (in %):")
        print("| seed | " + " | ".join(keys) + " |")
        print("|--:|" + "--:|" * len(keys))
        rows = []
        for seed in args.seeds:
            m = test_figures(args.test_size, seed)
            write_record(
                args.record, provenance, m, kind="untrained", size=args.test_size, seed=seed
            )
            rows.append([100 * m[k] for k in keys])
            print(f"| {seed} | " + " | ".join(f"{v:.1f}" for v in rows[-1]) + " |", flush=True)
        if len(rows) > 1:
            cells = [
                f"{statistics.mean(col):.1f} ± {statistics.stdev(col):.1f}"
                for col in zip(*rows, strict=True)
            ]
            print("| mean ± std | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
