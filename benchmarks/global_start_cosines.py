"""Why the paper's `global` directions start badly: how close together the first mu lie.

`--directions global` (with `--global-init data`, the paper's) sets the first mean directions to
the normalized class means of a pass of the *untrained* network over the training set. This
script measures their pairwise cosines beside those of the random start (`--global-init random`,
uniform on the sphere, as `accumulate` and `ema` start), for the retrieval benchmark's setting
(combined-30, class-disjoint, small CNN depth 3, 4,000 training images) and seeds 0, 1, 2.

With kappa = 16, classes whose directions have cosine c differ in logit by at most 16 (1 - c):
near-equal targets give a near-uniform softmax and a small gradient in the first epoch.

    .venv/bin/python benchmarks/global_start_cosines.py [--seeds 3] [--out benchmarks/results/global_start.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vmfml.directions import compute_class_sums, create_directions
from vmfml.train.batches import eval_batches
from vmfml.train.config import load_config
from vmfml.train.datasets import build_datasets
from vmfml.train.loop import build_model, seed_everything

SETTINGS = {
    "data": "combined-30",
    "split": "class-disjoint",
    "model": "small_cnn",
    "depth": 3,
    "augment": "none",
    "train_subset": 4000,
    "embed_dim": 128,
    "val_fraction": 0.0,  # as the benchmark runs: every training image
}


def off_diagonal_cosines(mu: torch.Tensor) -> torch.Tensor:
    """The C (C - 1) cosines between distinct unit rows of mu [C, D]."""
    cos = mu @ mu.T
    return cos[~torch.eye(len(mu), dtype=torch.bool)]


def start_cosines(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines of the untrained network's class means, cosines of the random start)."""
    config = load_config(None, {**SETTINGS, "seed": seed, "progress": False})
    seed_everything(seed)  # as `vmfml train` does before building the network
    data = build_datasets(config)
    model = build_model(config, data)
    batches = eval_batches(data.train, 512, dict(model.preprocessing))
    sums, counts = compute_class_sums(model, batches, data.num_classes, "cpu")
    # The directions `vmfml train` builds: drawn at random, then (with the paper's start) set
    # from the class sums of the untrained network's pass.
    directions = create_directions("global", data.num_classes, config.embed_dim, init_seed=seed)
    random_start = directions.mu.clone()
    directions.refresh(sums, counts)
    return off_diagonal_cosines(directions.mu), off_diagonal_cosines(random_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/global_start.md"))
    args = parser.parse_args()
    rows = [
        "| seed | start | mean cosine | min | max | largest logit gap at kappa 16 |",
        "|--:|---|--:|--:|--:|--:|",
    ]
    for seed in range(args.seeds):
        for name, cos in zip(("untrained class means", "random"), start_cosines(seed), strict=True):
            gap = 16 * (1 - float(cos.min()))
            rows.append(
                f"| {seed} | {name} | {float(cos.mean()):.3f} | {float(cos.min()):.3f} | "
                f"{float(cos.max()):.3f} | {gap:.2f} |"
            )
    text = "\n".join(rows) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "Pairwise cosines of the first mean directions of `global` "
        "(`python benchmarks/global_start_cosines.py`)\n\n" + text
    )


if __name__ == "__main__":
    main()
