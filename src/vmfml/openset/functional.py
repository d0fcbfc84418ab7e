"""Open-set math: how unlike the known classes an embedding is, and how well a score separates.

Every score follows pytorch-ood's convention: one number per image, **higher means more unusual**
(more likely an image of no known class). All take unit embeddings `[N, D]` and the classes' unit
mean directions `[C, D]`:

- `vmf_likelihood`: minus the best class log-likelihood log C_d(kappa_c) + kappa_c mu_c . x, with a
  concentration per class fitted to the training embeddings (a tight class claims only what lies
  near its mean; a broad one claims more);
- `max_posterior`: minus the largest class posterior softmax(kappa mu . x) (Hendrycks & Gimpel's
  maximum softmax probability, on the vMF posterior);
- `max_cosine`: minus the largest cosine to a mean direction;
- `energy`: minus logsumexp(kappa mu . x) (Liu et al., NeurIPS 2020, on the vMF logits);
- `knn`: the distance to the k-th nearest training embedding (Sun et al., ICML 2022).

`open_set_metrics` scores a detector the way the field reports it: AUROC, AUPR-IN, AUPR-OUT
(as pytorch-ood's OODMetrics computes them), and both FPR@95 conventions (see its docstring).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from vmfml.losses.functional import log_vmf_normalizer

__all__ = [
    "SCORES",
    "class_log_likelihoods",
    "knn_distance",
    "open_set_metrics",
    "posteriors",
    "threshold_at_keep_rate",
    "unknown_scores",
]

SCORES = ("vmf_likelihood", "max_posterior", "max_cosine", "energy", "knn")

# Rows of the query block multiplied against the reference set at once in `knn_distance`:
# bounds memory to KNN_CHUNK x N floats.
KNN_CHUNK = 1024


def class_log_likelihoods(x: Tensor, mu: Tensor, class_kappa: Tensor) -> Tensor:
    """log p(x | c) = log C_d(kappa_c) + kappa_c mu_c . x for every class, in float64.

    Args:
        x: unit embeddings [N, D].
        mu: unit mean directions [C, D].
        class_kappa: concentrations [C], > 0.

    Returns:
        [N, C] float64.
    """
    kappa = class_kappa.to(torch.float64)
    normalizers = log_vmf_normalizer(kappa, int(x.shape[1]))
    return normalizers + kappa * (x.to(torch.float64) @ mu.to(torch.float64).t())


def posteriors(x: Tensor, mu: Tensor, kappa: float) -> Tensor:
    """p(c | x) = softmax(kappa mu . x) under a shared-kappa vMF mixture with equal priors.

    Returns:
        [N, C] float64, rows summing to 1.
    """
    return torch.softmax(kappa * (x.to(torch.float64) @ mu.to(torch.float64).t()), dim=1)


def knn_distance(x: Tensor, reference: Tensor, k: int, exclude_self: bool = False) -> Tensor:
    """Euclidean distance from each unit row of `x` to its k-th nearest row of `reference`.

    On the unit sphere ||x - r|| = sqrt(2 - 2 x . r), so the k-th largest dot product decides.

    Args:
        x: unit embeddings [N, D].
        reference: unit embeddings [M, D] (the training set).
        k: which neighbour, >= 1.
        exclude_self: `x` is `reference` (same rows, same order): skip each row's own match,
            as when the threshold is set on the training images themselves.

    Returns:
        [N] float64.
    """
    skip = 1 if exclude_self else 0
    if k < 1 or k + skip > reference.shape[0]:
        raise ValueError(
            f"k must be in [1, {reference.shape[0] - skip}] for {reference.shape[0]} reference "
            f"embeddings; got {k}"
        )
    out = torch.empty(x.shape[0], dtype=torch.float64)
    ref = reference.to(torch.float32)
    for start in range(0, x.shape[0], KNN_CHUNK):
        sims = x[start : start + KNN_CHUNK].to(torch.float32) @ ref.t()
        kth = sims.topk(k + skip, dim=1).values[:, -1].to(torch.float64)
        out[start : start + KNN_CHUNK] = (2.0 - 2.0 * kth).clamp_min(0.0).sqrt()
    return out


def unknown_scores(
    name: str,
    x: Tensor,
    mu: Tensor,
    kappa: float,
    class_kappa: Tensor | None = None,
    reference: Tensor | None = None,
    k: int = 10,
    exclude_self: bool = False,
) -> Tensor:
    """The score `name` (one of `SCORES`) of each embedding: higher means more unusual.

    Args:
        name: the score.
        x: unit embeddings [N, D].
        mu: unit mean directions [C, D].
        kappa: the shared (posterior) concentration: max_posterior and energy.
        class_kappa: per-class concentrations [C]: vmf_likelihood.
        reference: training embeddings [M, D]: knn.
        k: knn's neighbour.
        exclude_self: knn: `x` is `reference` (see `knn_distance`).

    Returns:
        [N] float64.
    """
    if name == "knn":
        if reference is None:
            raise ValueError("the knn score needs the training embeddings (reference)")
        return knn_distance(x, reference, k, exclude_self)
    cos = x.to(torch.float64) @ mu.to(torch.float64).t()
    if name == "max_cosine":
        return -cos.max(dim=1).values
    if name == "max_posterior":
        return -torch.softmax(kappa * cos, dim=1).max(dim=1).values
    if name == "energy":
        return -torch.logsumexp(kappa * cos, dim=1)
    if name == "vmf_likelihood":
        if class_kappa is None:
            raise ValueError("the vmf_likelihood score needs per-class concentrations")
        return -class_log_likelihoods(x, mu, class_kappa).max(dim=1).values
    raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")


def threshold_at_keep_rate(known_scores: Tensor, keep_rate: float) -> float:
    """The smallest threshold t that keeps at least `keep_rate` of the known images (score <= t).

    An image is called unknown when its score exceeds t.
    """
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1]; got {keep_rate}")
    if known_scores.numel() == 0:
        raise ValueError("no known images to set a threshold on")
    ordered = known_scores.to(torch.float64).sort().values
    index = max(math.ceil(keep_rate * ordered.numel() - 1e-9), 1) - 1
    return float(ordered[index])


def open_set_metrics(known: Tensor, unknown: Tensor, rate: float = 0.95) -> dict[str, float]:
    """How well a score separates known images (expected low) from unknown ones (expected high).

    - `auroc`: the chance that a random unknown scores above a random known (ties count half);
    - `aupr_in`, `aupr_out`: the trapezoidal area under the precision-recall curve with the known
      (lower score first), respectively the unknown images as the positive class;
    - `fpr_at_95`: keep 95% of the known images (threshold as `threshold_at_keep_rate`) and count
      the share of unknown images let through (the convention of Sun et al. and CIDER);
    - `fpr95tpr`: catch 95% of the unknown images and count the share of known images flagged
      (pytorch-ood's FPR95TPR). The two differ; both are reported under their own names.

    `rate` changes the 95 of both. These equal pytorch-ood 0.4's OODMetrics on the same scores.

    Args:
        known: scores [N_in] of images of the known classes.
        unknown: scores [N_out] of images of no known class.
    """
    k = known.detach().to(torch.float64).cpu().numpy().ravel()
    u = unknown.detach().to(torch.float64).cpu().numpy().ravel()
    if k.size == 0 or u.size == 0:
        raise ValueError("open-set metrics need known and unknown images; one set is empty")
    if np.isnan(k).any() or np.isnan(u).any():
        raise ValueError("open-set scores contain NaN")
    scores = np.concatenate([k, u])
    is_unknown = np.concatenate([np.zeros(k.size, bool), np.ones(u.size, bool)])
    fpr_out, tpr_out = _roc(scores, is_unknown)
    fpr_in, tpr_in = _roc(-scores, ~is_unknown)
    return {
        "auroc": _trapezoid(fpr_out, tpr_out),
        "aupr_in": _aupr(-scores, ~is_unknown),
        "aupr_out": _aupr(scores, is_unknown),
        "fpr_at_95": float(fpr_in[np.searchsorted(tpr_in, rate, side="left")]),
        "fpr95tpr": float(fpr_out[np.searchsorted(tpr_out, rate, side="left")]),
    }


def _cumulative_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, from the highest score down."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    tps = np.cumsum(hits)[last_of_tie].astype(np.float64)
    fps = (last_of_tie + 1 - tps).astype(np.float64)
    return tps, fps


def _roc(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tps, fps = _cumulative_counts(scores, positive)
    return np.r_[0.0, fps] / fps[-1], np.r_[0.0, tps] / tps[-1]


def _aupr(scores: np.ndarray, positive: np.ndarray) -> float:
    tps, fps = _cumulative_counts(scores, positive)
    precision = np.r_[(tps / (tps + fps))[::-1], 1.0]
    recall = np.r_[(tps / tps[-1])[::-1], 0.0]
    return -_trapezoid(recall, precision)


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(((x[1:] - x[:-1]) * (y[1:] + y[:-1])).sum() / 2)
