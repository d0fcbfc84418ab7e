"""Clustering quality: spherical k-means (faiss or torch) and normalized mutual information.

NMI follows the deep-metric-learning convention (e.g. pytorch-metric-learning): cluster the
embeddings into as many clusters as there are classes, then compare the assignment with the labels
using sklearn's `normalized_mutual_info_score` (arithmetic-mean normalization).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from vmfml.metrics._inputs import ArrayLike, Backend, as_labels, as_unit_embeddings, resolve_backend

# Rows per chunk of the [chunk, k] similarity block in assignment steps (bounded memory for
# large k, e.g. thousands of In-Shop classes).
_ASSIGN_CHUNK_BYTES = 2**26
# k-means++ seeds from at most this many points per centre (a uniform random sample).
_SEEDING_POINTS_PER_CENTRE = 256


def spherical_kmeans(
    embeddings: ArrayLike,
    num_clusters: int,
    *,
    backend: Backend = "auto",
    niter: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """Cluster unit vectors by cosine similarity (centroids re-normalized after every update).

    Args:
        embeddings: `[N, D]` unit vectors.
        num_clusters: k, `1 <= k <= N`.
        backend: `"faiss"` (`faiss.Kmeans(spherical=True)`), `"torch"` (k-means++ seeding, then
            Lloyd iterations) or `"auto"` (faiss when installed).
        niter: Lloyd iterations (the torch backend stops early once assignments are stable).
        seed: random seed of the seeding.

    Returns:
        cluster index of every row, `[N]` int64.
    """
    x = as_unit_embeddings(embeddings, "embeddings")
    n = x.shape[0]
    if isinstance(num_clusters, bool) or not 1 <= int(num_clusters) <= n:
        raise ValueError(
            f"num_clusters must be between 1 and the number of rows ({n}), got {num_clusters}"
        )
    if niter < 1:
        raise ValueError(f"niter must be a positive integer, got {niter}")
    if resolve_backend(backend) == "faiss":
        return _faiss_spherical_kmeans(x, int(num_clusters), niter, seed)
    return _torch_spherical_kmeans(x, int(num_clusters), niter, seed)


def _faiss_spherical_kmeans(x: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    import faiss

    data = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    n, d = data.shape
    # Train on every point (faiss subsamples to 256 per centroid by default) and accept few
    # points per centroid (classes of a handful of images are normal in retrieval test sets).
    kmeans = faiss.Kmeans(
        d,
        k,
        niter=niter,
        spherical=True,
        seed=seed,
        verbose=False,
        max_points_per_centroid=max(256, -(-n // k)),
        min_points_per_centroid=1,
    )
    # The same greedy k-means++ seeding as the torch backend (faiss draws centres uniformly).
    kmeans.train(data, init_centroids=kmeans_plus_plus(x.cpu(), k, seed).numpy())
    _, assign = kmeans.index.search(data, 1)
    return torch.from_numpy(assign[:, 0].astype(np.int64))


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid `[N]` and its cosine similarity `[N]`, in bounded-memory chunks."""
    n, k = x.shape[0], centroids.shape[0]
    rows = max(1, _ASSIGN_CHUNK_BYTES // (4 * k))
    best = torch.empty(n, device=x.device)
    assign = torch.empty(n, dtype=torch.long, device=x.device)
    for start in range(0, n, rows):
        sims = x[start : start + rows] @ centroids.T
        best[start : start + rows], assign[start : start + rows] = sims.max(dim=1)
    return assign, best


def kmeans_plus_plus(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the variant sklearn uses) of unit rows.

    Each new centre is the best, by the resulting total squared distance, of `2 + ln k` candidates
    drawn with probability proportional to the squared chordal distance `2 - 2 a.b` to the nearest
    centre so far. Plain k-means++ (one candidate) too often seeds two centres in one of several
    well-separated classes, which Lloyd iterations cannot undo.

    Args:
        x: `[N, D]` unit rows.
        k: number of centres, `<= N`.
        seed: random seed.

    Returns:
        `[k, D]` initial centres (rows of `x`).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if x.shape[0] > _SEEDING_POINTS_PER_CENTRE * k:
        # Seeding needs only a faithful sample of the data (as faiss trains on one): each of the
        # k steps costs a pass over the points, so 100,000 points would dominate NMI's time.
        keep = torch.randperm(x.shape[0], generator=gen)[: _SEEDING_POINTS_PER_CENTRE * k]
        x = x[keep.to(x.device)]
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    dist2 = (2 - 2 * (x @ x[chosen[0]])).clamp_min(0)
    for _ in range(1, k):
        weights = dist2.double().cpu()
        if float(weights.sum()) <= 0:
            # Every point coincides with a centre already: draw among the rows not chosen yet.
            weights = torch.ones(n, dtype=torch.float64)
            weights[chosen] = 0
        candidates = torch.multinomial(weights, trials, replacement=True, generator=gen)
        cand_dist2 = (2 - 2 * (x[candidates.to(x.device)] @ x.T)).clamp_min(0)  # [trials, N]
        updated = torch.minimum(dist2[None, :], cand_dist2)
        best = int(updated.double().sum(dim=1).argmin())
        chosen.append(int(candidates[best]))
        dist2 = updated[best]
    return x[chosen].clone()


def _torch_spherical_kmeans(x: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    n = x.shape[0]
    centroids = kmeans_plus_plus(x, k, seed)
    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(niter):
        new_assign, best = _assign(x, centroids)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        if len(empty) > 0:
            # An empty cluster restarts at the points worst served by their current centroid.
            worst = torch.topk(best, len(empty), largest=False).indices
            sums[empty] = x[worst]
        zero = sums.norm(dim=1) == 0
        centroids = torch.where(
            zero[:, None], centroids, torch.nn.functional.normalize(sums, dim=1)
        )
    final, _ = _assign(x, centroids)
    return final.cpu()


def nmi(
    embeddings: ArrayLike,
    labels: ArrayLike | Sequence[int],
    *,
    backend: Backend = "auto",
    seed: int = 0,
    niter: int = 20,
) -> float:
    """Normalized mutual information between labels and a spherical k-means clustering with
    k = number of distinct labels.

    Args:
        embeddings: `[N, D]` unit vectors.
        labels: `[N]` class labels.
        backend, seed, niter: passed to `spherical_kmeans`.
    """
    x = as_unit_embeddings(embeddings, "embeddings")
    y = as_labels(labels, x.shape[0], "labels", "embeddings")
    num_classes = len(np.unique(y))
    if num_classes < 2:
        raise ValueError(f"NMI needs at least 2 classes, got {num_classes}")
    clusters = spherical_kmeans(x, num_classes, backend=backend, niter=niter, seed=seed)
    return float(normalized_mutual_info_score(y, clusters.numpy()))
