"""Classification metrics of class scores: accuracy, expected calibration error, negative log-likelihood.

ECE follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"): the confidence of a
prediction is its largest softmax probability; predictions are grouped into `n_bins` equal-width
bins `(i / n_bins, (i + 1) / n_bins]`, and ECE = sum over bins of
`(bin size / N) * |accuracy in bin - mean confidence in bin|`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vmfml.metrics._inputs import ArrayLike, as_unit_embeddings, as_vector


def _as_class_labels(labels: ArrayLike | Sequence[int], n: int, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array [N], got shape {tuple(y.shape)}")
    if len(y) != n:
        raise ValueError(
            f"labels has {len(y)} entries but there are {n} rows of scores; they must match"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.long()
    if len(y) > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes - 1}], got range "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    return y


def expected_calibration_error(
    confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15
) -> float:
    """ECE of predictions with the given confidences.

    Args:
        confidences: `[N]` confidence of each prediction, in [0, 1].
        correct: `[N]` bool (or 0/1), whether each prediction is right.
        n_bins: number of equal-width bins on [0, 1].
    """
    conf = as_vector(confidences, "confidences")
    hit = as_vector(correct, "correct")
    not_binary = (hit != 0) & (hit != 1)
    if bool(not_binary.any()):
        raise ValueError(f"correct must hold 0 or 1 (or bools); got {float(hit[not_binary][0]):g}")
    if len(conf) != len(hit):
        raise ValueError(
            f"confidences ({len(conf)}) and correct ({len(hit)}) must have the same length"
        )
    if len(conf) == 0:
        raise ValueError("ECE of zero predictions is undefined")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if not bool(torch.isfinite(conf).all()) or float(conf.min()) < 0 or float(conf.max()) > 1:
        raise ValueError("confidences must be finite and in [0, 1]")
    # Right-closed bins (lo, hi]; a confidence of exactly 0 joins the first bin.
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, hit)
    return float((conf_sum - hit_sum).abs().sum() / len(conf))


def classification_metrics(
    logits: ArrayLike, labels: ArrayLike | Sequence[int], n_bins: int = 15
) -> dict[str, float]:
    """Accuracy, ECE and NLL of class logits.

    Args:
        logits: `[N, C]` unnormalized class scores (posterior = softmax of these, e.g. the vMF
            logits `kappa * x @ mu.T`).
        labels: `[N]` class indices in `[0, C)`.
        n_bins: ECE bins.

    Returns:
        `{"accuracy": ..., "ece": ..., "nll": ...}`; nll is the mean negative log-likelihood (nats).

    Example:
        >>> m = classification_metrics(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), [0, 0])
        >>> m["accuracy"]
        0.5
    """
    z = torch.as_tensor(logits).detach().cpu()
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(
            f"logits must be a non-empty [N, C] array with C >= 2, got shape {tuple(z.shape)}"
        )
    z = z.double()
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits contain NaN or infinite values")
    y = _as_class_labels(labels, z.shape[0], z.shape[1])
    log_probs = F.log_softmax(z, dim=1)
    confidence, predicted = log_probs.max(dim=1)
    correct = predicted == y
    return {
        "accuracy": float(correct.double().mean()),
        "ece": expected_calibration_error(confidence.exp(), correct, n_bins),
        "nll": float(F.nll_loss(log_probs, y)),
    }


def nearest_direction_accuracy(
    embeddings: ArrayLike, directions: ArrayLike, labels: ArrayLike | Sequence[int]
) -> float:
    """Accuracy of classifying each embedding by its most similar class mean direction.

    Args:
        embeddings: `[N, D]` unit vectors.
        directions: `[C, D]` class mean directions (re-normalized).
        labels: `[N]` class indices in `[0, C)`.
    """
    x = as_unit_embeddings(embeddings, "embeddings")
    mu = as_unit_embeddings(directions, "directions").to(x.device)
    if mu.shape[1] != x.shape[1]:
        raise ValueError(
            f"directions have dimension {mu.shape[1]} but embeddings have dimension {x.shape[1]}"
        )
    y = _as_class_labels(labels, x.shape[0], mu.shape[0])
    predicted = (x @ mu.T).argmax(dim=1).cpu()
    return float((predicted == y).double().mean())
