"""Validation: images held out of the training set to choose the epoch to keep, never test images.

The standard split holds out `fraction` of each training class's images; the class-disjoint split
holds out `fraction` of the training classes (at least 2), so that validation, like the test, asks
for retrieval of classes the network never trained on. A set whose classes come from several
sources (the combined 30-class set) holds out the same share of every source's classes, so that
validation, like the test, mixes look-alike classes of one source (a 3 and an 8) with classes of
the others: three held-out classes of three sources are told apart at Recall@1 0.998 from the
first epoch, too easy to choose anything by. Every validated epoch logs Recall@1 and
MAP@R of the validation images among themselves, and the accuracy of the loss's classifier when
there is one (standard split); the score that picks the epoch is that accuracy when it exists, and
Recall@1 otherwise, with ties broken by MAP@R (`validation_rank`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vmfml import distributed
from vmfml.data.splits import class_disjoint_split, per_source_class_split, stratified_split
from vmfml.losses import MetricLoss
from vmfml.metrics import retrieval_metrics
from vmfml.models.inference import autocast, model_inputs
from vmfml.train.batches import embed_dataset, eval_batches

__all__ = ["EarlyStopping", "carve_validation", "validate", "validation_rank"]


def carve_validation(
    train: Any, fraction: float, disjoint: bool, seed: int
) -> tuple[Any, Any | None]:
    """(the training images left, the validation images) drawn from `train` alone.

    Validation is left out, with a warning, where it would take what training cannot spare: a
    class-disjoint training set of fewer than 4 classes (2 held out, 2 left), or a class with
    a single training image.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {fraction}")
    if not disjoint:
        if int(train.class_counts().min()) < 2:
            warnings.warn(
                "no validation split: a class has a single training image (the last epoch is kept)",
                stacklevel=2,
            )
            return train, None
        return stratified_split(train, test_fraction=fraction, seed=seed)
    classes = len(train.class_names)
    held_out = max(2, round(fraction * classes))
    if classes - held_out < 2:
        warnings.warn(
            f"no validation split: a class-disjoint one holds out at least 2 training classes "
            f"and leaves 2, and there are {classes} (the last epoch is kept)",
            stacklevel=2,
        )
        return train, None
    sources = train.class_sources
    if sources is not None and len(set(sources)) > 1:
        per_source = [sources.count(s) for s in dict.fromkeys(sources)]
        if all(round(n * (1 - fraction)) >= 1 and round(n * fraction) >= 1 for n in per_source):
            return per_source_class_split(
                train, train_fraction_of_classes=1 - fraction, seed=seed + 1
            )
    order = torch.randperm(classes, generator=torch.Generator().manual_seed(seed + 1))
    kept = sorted(order[held_out:].tolist())
    return class_disjoint_split(train, train_classes=kept)


@torch.inference_mode()
def validate(
    model: torch.nn.Module,
    loss: MetricLoss,
    val: Any,
    disjoint: bool,
    device: torch.device,
    precision: str,
    num_workers: int = 0,
) -> dict[str, float]:
    """Validation metrics of the current weights: `val_recall@1`, `val_map@r`, `val_accuracy`
    (classifier, standard split only) and `val_score` (the one that picks the epoch). Every
    process gets the same numbers."""
    preprocessing = dict(model.preprocessing)  # type: ignore[arg-type]
    feats, labels = embed_dataset(
        model, val, preprocessing, device, num_workers=num_workers, precision=precision
    )
    found = retrieval_metrics(
        F.normalize(feats.float(), dim=1), labels, ks=(1,), nmi=False, progress=False
    )
    metrics = {"val_recall@1": found["recall@1"], "val_map@r": found["map@r"]}
    if not disjoint and loss.has_classifier:
        model.eval()
        correct = torch.zeros(1, dtype=torch.float64)
        rows = distributed.shard_rows(len(val))
        for images, y in eval_batches(val, 512, preprocessing, num_workers, rows):
            with autocast(device, precision):
                emb = model(
                    model_inputs(images, device, precision), normalize=loss.expects_normalized
                )
            correct += int((loss.logits(emb.float()).argmax(1).cpu() == y).sum())
        metrics["val_accuracy"] = float(distributed.all_sum(correct)) / len(val)
    metrics["val_score"] = metrics.get("val_accuracy", metrics["val_recall@1"])
    return metrics


def validation_rank(metrics: dict[str, float]) -> tuple[float, float]:
    """What orders validated networks, best last: the score, then MAP@R.

    On a small validation set one image moves the score by 1/len(val) (0.36 points for 280
    images), so epochs tie often; MAP@R, which every neighbour of every image moves, breaks the
    tie, where the earliest of the tied epochs used to be kept (BENCHMARKS.md section 6).
    """
    return metrics["val_score"], metrics.get("val_map@r", -math.inf)


@dataclass
class EarlyStopping:
    """The best validated epoch so far (by `validation_rank`), and the epochs since it last
    improved. A tie in score and MAP@R alike keeps the earlier epoch.

    Part of the checkpoint (`state()`), so a resumed run keeps them.
    """

    patience: int
    best_score: float = -math.inf
    best_epoch: int = 0
    stale: int = 0
    best_map: float = -math.inf  # the MAP@R of the best epoch

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record an epoch's validation metrics; True when it is the best so far (the model to
        keep)."""
        if validation_rank(metrics) > (self.best_score, self.best_map):
            self.best_score, self.best_map = validation_rank(metrics)
            self.best_epoch, self.stale = epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience

    def state(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_map@r": self.best_map,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.best_score = float(state["best_score"])
        self.best_map = float(state.get("best_map@r", -math.inf))  # checkpoints before it
        self.best_epoch = int(state["best_epoch"])
        self.stale = int(state["stale"])
