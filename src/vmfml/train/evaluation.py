"""End-of-training evaluation: classification, calibration, retrieval, concentration.

Shared by `vmfml train` (at the end of a run) and `vmfml evaluate --checkpoint`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vmfml.directions.concentration import per_class_concentration
from vmfml.metrics import classification_metrics, retrieval_metrics
from vmfml.train.batches import embed_dataset


def class_sums(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums `[C, D]` (float64) and counts `[C]` of unit embeddings."""
    x = F.normalize(embeddings.double(), dim=1)
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=num_classes).double()
    return sums, counts


def evaluate_model(
    model: torch.nn.Module,
    loss: Any,
    train_set: Any,
    test_set: Any,
    preprocessing: dict[str, Any],
    device: torch.device,
    ks: tuple[int, ...],
    disjoint: bool,
    batch_size: int = 512,
    num_workers: int = 0,
    progress: bool = True,
    train_features: torch.Tensor | None = None,
    gallery_set: Any = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Metrics of a trained model, plus the test embeddings `[N, D]` and labels for plots.

    Classification (same classes in train and test): `accuracy` is the nearest mean direction of the
    training set's embeddings (the vMF maximum-likelihood estimate at the final weights, defined for
    every loss); `classifier_accuracy` and `ece` use the loss's own class weights when it has them.
    Retrieval: Recall@K, MAP@R, R-Precision and NMI on the test set, each query excluded from its
    own neighbours, or of the test queries against a separate `gallery_set` (In-Shop).
    """
    metrics: dict[str, Any] = {}
    test_feats, test_labels = embed_dataset(
        model, test_set, preprocessing, device, batch_size, num_workers, progress, "embed test"
    )
    test_emb = F.normalize(test_feats, dim=1)
    if train_features is None:
        train_features, train_labels = embed_dataset(
            model,
            train_set,
            preprocessing,
            device,
            batch_size,
            num_workers,
            progress,
            "embed train",
        )
    else:
        train_labels = train_set.labels
    num_classes = len(train_set.class_names)
    sums, counts = class_sums(train_features, train_labels, num_classes)
    concentration = per_class_concentration(sums, counts)
    metrics["concentration"] = {
        name: float(kappa)
        for name, kappa in zip(train_set.class_names, concentration["kappa"], strict=True)
    }
    if not disjoint:
        mu = F.normalize(sums, dim=1).float()
        metrics["accuracy"] = float(((test_emb @ mu.T).argmax(1) == test_labels).double().mean())
        if loss is not None and getattr(loss, "has_classifier", False):
            with torch.inference_mode():
                inputs = test_emb if getattr(loss, "expects_normalized", True) else test_feats
                logits = loss.logits(inputs.to(device)).float().cpu()
            cls = classification_metrics(logits, test_labels)
            metrics["classifier_accuracy"] = cls["accuracy"]
            metrics["ece"] = cls["ece"]
            metrics["nll"] = cls["nll"]
    if gallery_set is None:
        # On a GPU the exact kNN runs there (torch backend follows the tensors' device).
        on_device = test_emb.to(device) if device.type == "cuda" else test_emb
        metrics.update(retrieval_metrics(on_device, test_labels, ks=ks, progress=progress))
    else:
        gallery_feats, gallery_labels = embed_dataset(
            model,
            gallery_set,
            preprocessing,
            device,
            batch_size,
            num_workers,
            progress,
            "embed gallery",
        )
        gallery = F.normalize(gallery_feats, dim=1)
        metrics.update(
            retrieval_metrics(
                gallery,
                gallery_labels,
                ks=ks,
                query_embeddings=test_emb,
                query_labels=test_labels,
                progress=progress,
            )
        )
    return metrics, test_emb, test_labels
