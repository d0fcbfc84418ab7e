"""What BatchNorm statistics re-estimated on the training images do to EfficientNet-Lite0.

Fine-tuning with BatchNorm in training mode replaces the ImageNet running statistics with those
of the training images within an epoch. This isolates that effect: the network before any
training (ImageNet weights, the new 128-d head at its seeded random start, 64 px, the converged
profile's split), then the same network after one pass over the training images in training
mode, without a gradient step (the running statistics alone change, with PyTorch's default
momentum, in the batches of 128 a run uses). Both are measured on the 6 validation classes and
on the test classes, as a run evaluates its kept epoch. It is why `--freeze-bn` is the default
for a pretrained backbone (BENCHMARKS.md 5.8). Both rows are appended to `--record` (default
benchmarks/results/cpu-converged/references.jsonl, kind "batchnorm") with the commit, whether the
tree had uncommitted changes, and the machine; BENCHMARKS.md's BatchNorm table is generated from it.

    .venv/bin/python benchmarks/efficientnet_batchnorm.py [--record FILE ('' for none)]
"""

from __future__ import annotations

import argparse

import torch
from efficientnet_input_size import RECORD, add_record_argument, untrained, write_record

from vmfml.bench.runner import script_provenance
from vmfml.models import EmbeddingModel
from vmfml.models.inference import model_inputs
from vmfml.train.batches import train_batches
from vmfml.train.config import TrainConfig
from vmfml.train.datasets import DataSplit
from vmfml.train.evaluation import evaluate_model
from vmfml.train.loop import build_loss
from vmfml.train.validation import validate

CPU = torch.device("cpu")
KEYS = ("val_recall@1", "val_map@r", "recall@1", "map@r", "r_precision", "nmi")


def figures(config: TrainConfig, data: DataSplit, model: EmbeddingModel) -> dict[str, float]:
    model.eval()
    loss = build_loss(config, data.num_classes)
    found = validate(model, loss, data.val, data.disjoint, CPU, "32")
    metrics, _, _ = evaluate_model(
        model, None, data.train, data.test, dict(model.preprocessing), CPU, config.eval_ks,
        data.disjoint, progress=False,
    )  # fmt: skip
    return {**found, **metrics}


@torch.no_grad()
def reestimate_batchnorm(data: DataSplit, model: EmbeddingModel) -> None:
    """One pass over the training images in training mode: only the running statistics move."""
    model.train()
    batches = train_batches(
        data.train, 128, dict(model.preprocessing), "none", torch.Generator().manual_seed(0), 0
    )
    for images, _ in batches:
        model(model_inputs(images, CPU, "32"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_argument(parser, "the figures")
    args = parser.parse_args()
    provenance = script_provenance(args.record or RECORD)
    config, data, model = untrained(64)
    before = figures(config, data, model)
    reestimate_batchnorm(data, model)
    after = figures(config, data, model)
    print("| EfficientNet-Lite0, 64 px, no gradient step | " + " | ".join(KEYS) + " |")
    print("|---|" + "--:|" * len(KEYS))
    for statistics, name, m in (
        ("imagenet", "ImageNet statistics", before),
        ("train_epoch", "statistics of 1 epoch", after),
    ):
        print(f"| {name} | " + " | ".join(f"{100 * m[k]:.1f}" for k in KEYS) + " |", flush=True)
        write_record(
            args.record,
            provenance,
            m,
            kind="batchnorm",
            size=64,
            seed=config.seed,
            statistics=statistics,
        )


if __name__ == "__main__":
    main()
