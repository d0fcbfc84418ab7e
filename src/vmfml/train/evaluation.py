"""End-of-training evaluation: classification, calibration, retrieval, concentration.

Shared by `vmfml train` (at the end of a run) and `vmfml evaluate --checkpoint`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vmfml import distributed
from vmfml.directions.concentration import per_class_concentration
from vmfml.metrics import classification_metrics, retrieval_metrics
from vmfml.train.batches import class_sums_of, embed_dataset


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
    train_sums: tuple[torch.Tensor, torch.Tensor] | None = None,
    gallery_set: Any = None,
    precision: str = "32",
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Metrics of a trained model, plus the test embeddings `[N, D]` and labels for plots.

    Classification (same classes in train and test): `accuracy` is the nearest mean direction of the
    training set's embeddings (the vMF maximum-likelihood estimate at the final weights, defined for
    every loss); `classifier_accuracy` and `ece` use the loss's own class weights when it has them.
    Retrieval: Recall@K, MAP@R, R-Precision and NMI on the test set, each query excluded from its
    own neighbours, or of the test queries against a separate `gallery_set` (In-Shop).

    `train_sums` are the class sums of the training set at these weights when the caller has them
    (the last full pass of `global`); otherwise a pass computes them. In a multi-process run every
    process embeds its shard; the metrics are computed once, by process 0 (the others get {}).
    """
    metrics: dict[str, Any] = {}
    test_feats, test_labels = embed_dataset(
        model,
        test_set,
        preprocessing,
        device,
        batch_size,
        num_workers,
        progress,
        "embed test",
        precision,
    )
    test_emb = F.normalize(test_feats, dim=1)
    if train_sums is None:
        train_sums = class_sums_of(
            model,
            train_set,
            preprocessing,
            device,
            batch_size,
            num_workers,
            progress,
            "class sums of the training set",
            precision,
        )
    gallery = None
    if gallery_set is not None:
        gallery = embed_dataset(
            model,
            gallery_set,
            preprocessing,
            device,
            batch_size,
            num_workers,
            progress,
            "embed gallery",
            precision,
        )
    if not distributed.is_main():
        return metrics, test_emb, test_labels
    sums, counts = (t.cpu() for t in train_sums)
    concentration = per_class_concentration(sums, counts)
    metrics["concentration"] = {
        name: float(kappa)
        for name, kappa in zip(train_set.class_names, concentration["kappa"], strict=True)
    }
    if not disjoint:
        mu = F.normalize(sums, dim=1).to(test_emb.dtype)
        metrics["accuracy"] = float(((test_emb @ mu.T).argmax(1) == test_labels).double().mean())
        if loss is not None and loss.has_classifier:
            with torch.inference_mode():
                inputs = test_emb if loss.expects_normalized else test_feats
                logits = loss.logits(inputs.to(device)).float().cpu()
            cls = classification_metrics(logits, test_labels)
            metrics["classifier_accuracy"] = cls["accuracy"]
            metrics["ece"] = cls["ece"]
            metrics["nll"] = cls["nll"]
    if gallery is None:
        # On a GPU the exact kNN runs there (torch backend follows the tensors' device).
        on_device = test_emb.to(device) if device.type == "cuda" else test_emb
        metrics.update(retrieval_metrics(on_device, test_labels, ks=ks, progress=progress))
    else:
        gallery_feats, gallery_labels = gallery
        metrics.update(
            retrieval_metrics(
                F.normalize(gallery_feats, dim=1),
                gallery_labels,
                ks=ks,
                query_embeddings=test_emb,
                query_labels=test_labels,
                progress=progress,
            )
        )
    return metrics, test_emb, test_labels
