"""Sub-centres: K mean directions per class, by spherical k-means within each class.

A class whose images form several modes (a shoe seen from the side and from above) is poorly
described by one mean direction. With K sub-centres per class, class c is a mixture of K vMF
distributions with mean directions mu_c1 ... mu_cK and weights w_ck (the idea of Sub-center
ArcFace, Deng et al., ECCV 2020, with the centres estimated from the data rather than learned).
Each class's unit embeddings are clustered by spherical k-means (`metrics.spherical_kmeans`:
faiss's, seeded by k-means++); mu_ck is the normalized sum of the embeddings of cluster k (the
vMF maximum-likelihood mean direction of the points it holds) and w_ck = n_ck / n_c its share of
the class (the estimates of classification EM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vmfml.metrics.clustering import spherical_kmeans

__all__ = ["class_sums", "estimate_subcentres"]


def class_sums(x: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums [C, D] (float64) and counts [C] (int64) of unit rows x [N, D] with labels [N]:
    what `compute_class_sums` gives, from embeddings already in hand."""
    labels = labels.to(x.device).long()
    sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device)
    sums.index_add_(0, labels, x.to(torch.float64))
    return sums, torch.bincount(labels, minlength=num_classes)


@torch.no_grad()
def estimate_subcentres(
    x: Tensor, labels: Tensor, num_classes: int, subcentres: int, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """K sub-centres per class from unit embeddings x [N, D] with class labels [N].

    Args:
        x: unit rows [N, D] (normalized again here, in float64; rows with NaN or infinite
            values, or all zero, are left out).
        labels: class indices [N] in [0, num_classes).
        num_classes: C.
        subcentres: K >= 1; every class with images must have at least K of them.
        seed: seed of the k-means++ seeding (the same for every class).

    Returns:
        centres [C, K, D] float64 unit rows; log_weights [C, K] float64, log(n_ck / n_c) (-inf
        for a cluster left empty, which only identical embeddings can cause); and a [C] bool mask
        of the classes estimated (those with images; the others' rows are zero).

    Raises:
        ValueError naming the classes with fewer than K images (but some).
    """
    if isinstance(subcentres, bool) or not isinstance(subcentres, int) or subcentres < 1:
        raise ValueError(f"subcentres must be an integer >= 1, got {subcentres!r}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    labels = labels.detach().to("cpu").long()
    # Rows without a direction (NaN, infinite, all zero: a diverged network) are left out, as
    # `MeanDirections.observe` leaves them out of the class sums; the loss stops on them anyway.
    usable = torch.isfinite(x).all(dim=1) & (x != 0).any(dim=1)
    x, labels = F.normalize(x[usable], dim=1), labels[usable]
    counts = torch.bincount(labels, minlength=num_classes)
    few = ((counts > 0) & (counts < subcentres)).nonzero().flatten().tolist()
    if few:
        shown = ", ".join(f"{c} ({int(counts[c])})" for c in few[:10])
        more = f" and {len(few) - 10} more" if len(few) > 10 else ""
        raise ValueError(
            f"{subcentres} sub-centres per class need at least {subcentres} training images in "
            f"every class; {len(few)} classes have fewer (class (images)): {shown}{more}; "
            "lower --vmf-subcentres"
        )
    dim = x.shape[1]
    centres = torch.zeros(num_classes, subcentres, dim, dtype=torch.float64)
    log_weights = torch.full((num_classes, subcentres), -math.inf, dtype=torch.float64)
    estimated = counts > 0
    for c in estimated.nonzero().flatten().tolist():
        points = x[labels == c]
        assign = (
            spherical_kmeans(points, subcentres, seed=seed)
            if subcentres > 1
            else torch.zeros(len(points), dtype=torch.long)
        )
        sums = torch.zeros(subcentres, dim, dtype=torch.float64).index_add_(0, assign, points)
        sizes = torch.bincount(assign, minlength=subcentres).to(torch.float64)
        mean = F.normalize(points.sum(dim=0), dim=0)
        # An empty cluster gets the class's mean direction and weight 0: it never counts.
        has_direction = sums.norm(dim=1) > 0
        centres[c] = torch.where(has_direction[:, None], F.normalize(sums, dim=1), mean)
        log_weights[c] = (sizes / len(points)).log()
    return centres, log_weights, estimated
