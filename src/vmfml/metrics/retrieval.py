"""Retrieval metrics of unit embeddings: Recall@K, MAP@R, R-Precision (Musgrave et al. 2020), NMI.

Definitions, for a query q with label y and gallery neighbours sorted by descending cosine
similarity (the query itself excluded, by index, when the gallery contains it):

- R = number of gallery items labelled y (other than q).
- Recall@K = 1 if any of the K nearest neighbours is labelled y, else 0.
- R-Precision = (number of the R nearest neighbours labelled y) / R.
- MAP@R = (1 / R) * sum_{i <= R} P(i) * rel(i), with rel(i) = 1 if the i-th neighbour is labelled
  y and P(i) the precision among the first i neighbours.

Each is averaged over queries. Queries with R = 0 (no other item of their class in the gallery) are
skipped by every kNN metric, as pytorch-metric-learning's `AccuracyCalculator` does, so the numbers
match it. Memory stays bounded: queries are processed in chunks of about 128 MB of working set,
grouped by R so that each chunk searches only as deep as its largest R.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vmfml.metrics._inputs import (
    ArrayLike,
    Backend,
    as_labels,
    as_unit_embeddings,
    check_ks,
    resolve_backend,
)
from vmfml.metrics.clustering import nmi as nmi_score
from vmfml.metrics.knn import ExactSearch, default_chunk_size

# Show a progress bar by default only when the evaluation is long (query x gallery pairs).
_LONG_EVALUATION_PAIRS = 10**9


def retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike | Sequence[int],
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    backend: Backend = "auto",
    query_embeddings: ArrayLike | None = None,
    query_labels: ArrayLike | Sequence[int] | None = None,
    chunk_size: int | None = None,
    nmi: bool = True,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, float]:
    """Recall@K, MAP@R, R-Precision and NMI of cosine retrieval.

    Args:
        embeddings: gallery `[N, D]` unit vectors (re-normalized defensively).
        labels: gallery labels `[N]` (integers or strings).
        ks: the K of Recall@K.
        backend: kNN and k-means backend: `"auto"` (faiss when installed), `"faiss"` or `"torch"`
            (runs on the embeddings' device, so CUDA tensors are searched on the GPU).
        query_embeddings: `[Q, D]` separate queries (In-Shop style); nothing is excluded from their
            neighbours. When None, every gallery item is a query and is excluded from its own
            neighbours (by index).
        query_labels: `[Q]` labels of `query_embeddings`.
        chunk_size: queries per chunk (default: about 128 MB of working memory per chunk).
        nmi: also compute NMI (spherical k-means, k = number of classes) of the gallery, or of
            queries and gallery together when they are separate.
        seed: k-means seed.
        progress: tqdm bar over queries; None shows it for long evaluations on a terminal.

    Returns:
        `{"recall@K": ... for K in ks, "map@r": ..., "r_precision": ..., "nmi": ...}` (floats in [0, 1]).

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> m = retrieval_metrics(x, [0, 0, 1, 1], ks=(1,), nmi=False, backend="torch")
        >>> m["recall@1"], m["map@r"]
        (1.0, 1.0)
    """
    gallery = as_unit_embeddings(embeddings, "embeddings")
    gallery_labels = as_labels(labels, gallery.shape[0], "labels", "embeddings")
    ks = check_ks(ks)
    resolved = resolve_backend(backend)
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together (or neither)")
    same_source = query_embeddings is None
    if query_embeddings is None or query_labels is None:
        queries, q_labels = gallery, gallery_labels
    else:
        queries = as_unit_embeddings(query_embeddings, "query_embeddings")
        q_labels = as_labels(query_labels, queries.shape[0], "query_labels", "query_embeddings")
        if queries.shape[1] != gallery.shape[1]:
            raise ValueError(
                f"query_embeddings have dimension {queries.shape[1]} but embeddings have "
                f"dimension {gallery.shape[1]}"
            )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

    g_codes, q_codes, r, valid = _relevant_counts(gallery_labels, q_labels, ks, same_source)
    # Shallow queries first: a chunk then searches only as deep as its own largest R.
    order = valid[torch.argsort(r[valid], stable=True)]

    search = ExactSearch(gallery, resolved)
    hits = dict.fromkeys(ks, 0)
    ap_sum = 0.0
    rp_sum = 0.0

    def _rows(position: int) -> int:
        """Default chunk size for a search as deep as the query at `position` of `order` needs."""
        depth = max(ks[-1], int(r[order[position]]))
        return default_chunk_size(gallery.shape[0], depth, resolved)

    show = progress
    if show is None and queries.shape[0] * gallery.shape[0] < _LONG_EVALUATION_PAIRS:
        show = False
    with tqdm(
        total=len(order),
        unit="query",
        desc="retrieval",
        disable=None if show is None else not show,
    ) as bar:
        start = 0
        while start < len(order):
            chunk = order[start : start + (chunk_size or _rows(start))]
            if chunk_size is None:
                # R grows along `order`: shrink the chunk until its deepest query fits the budget.
                chunk = chunk[: _rows(start + len(chunk) - 1)]
            chunk_r = r[chunk]
            depth = max(ks[-1], int(chunk_r.max()))
            own = chunk if same_source else None
            _, ids = search.search(queries[chunk.to(queries.device)], depth, own)
            relevant = g_codes[ids.cpu()] == q_codes[chunk][:, None]  # [c, depth]
            for k in ks:
                hits[k] += int(relevant[:, :k].any(dim=1).sum())
            ap, rp = _average_precision_at_r(relevant, chunk_r)
            ap_sum += float(ap.sum())
            rp_sum += float(rp.sum())
            start += len(chunk)
            bar.update(len(chunk))

    n_valid = len(order)
    out: dict[str, float] = {f"recall@{k}": hits[k] / n_valid for k in ks}
    out["map@r"] = ap_sum / n_valid
    out["r_precision"] = rp_sum / n_valid
    if nmi:
        if same_source:
            out["nmi"] = nmi_score(gallery, gallery_labels, backend=resolved, seed=seed)
        else:
            out["nmi"] = nmi_score(
                torch.cat([queries.to(gallery.device), gallery]),
                np.concatenate([q_labels, gallery_labels]),
                backend=resolved,
                seed=seed,
            )
    return out


def ranking_depth(
    gallery_labels: np.ndarray,
    query_labels: np.ndarray,
    ks: Sequence[int],
    *,
    same_source: bool,
) -> int:
    """How many neighbours each query's list needs for Recall@K and MAP@R: max(K, largest R)."""
    ks = check_ks(ks)
    _, _, r, valid = _relevant_counts(gallery_labels, query_labels, ks, same_source)
    return max(ks[-1], int(r[valid].max()))


def ranked_retrieval_metrics(
    ids: torch.Tensor,
    query_labels: ArrayLike | Sequence[int],
    gallery_labels: ArrayLike | Sequence[int],
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    same_source: bool,
) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision of given ranked lists (re-ranked ones, for instance).

    The definitions and skipped queries are those of `retrieval_metrics`, which this equals on the
    lists of an exact search.

    Args:
        ids: `[Q, depth]` gallery indices, best first; with `same_source` the query's own index
            must already be left out. `depth >= ranking_depth(...)`.
        query_labels: `[Q]` labels (with `same_source`, the gallery's labels).
        gallery_labels: `[M]` labels.
        ks: the K of Recall@K.
        same_source: query i is gallery item i (R counts the gallery's class minus the query).

    Returns:
        `{"recall@K": ... for K in ks, "map@r": ..., "r_precision": ...}`.
    """
    ids = torch.as_tensor(ids).cpu()
    if ids.ndim != 2 or ids.dtype != torch.int64:
        raise ValueError(
            f"ids must be a [Q, depth] int64 tensor, got {ids.dtype} {tuple(ids.shape)}"
        )
    g_labels = as_labels(gallery_labels, len(gallery_labels), "gallery_labels", "gallery_labels")
    q_labels = as_labels(query_labels, ids.shape[0], "query_labels", "ids")
    ks = check_ks(ks)
    if same_source and len(q_labels) != len(g_labels):
        raise ValueError(
            f"same_source needs one list per gallery item: {len(q_labels)} lists, "
            f"{len(g_labels)} gallery items"
        )
    g_codes, q_codes, r, valid = _relevant_counts(g_labels, q_labels, ks, same_source)
    needed = max(ks[-1], int(r[valid].max()))
    if ids.shape[1] < needed:
        raise ValueError(
            f"ids hold {ids.shape[1]} neighbours per query; these labels need {needed}"
        )
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(g_labels)):
        raise ValueError(f"ids must be gallery indices in [0, {len(g_labels)})")
    relevant = g_codes[ids[valid]] == q_codes[valid][:, None]
    ap, rp = _average_precision_at_r(relevant, r[valid])
    out: dict[str, float] = {
        f"recall@{k}": float(relevant[:, :k].any(dim=1).double().mean()) for k in ks
    }
    out["map@r"] = float(ap.mean())
    out["r_precision"] = float(rp.mean())
    return out


def _relevant_counts(
    gallery_labels: np.ndarray, query_labels: np.ndarray, ks: tuple[int, ...], same_source: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer codes shared by gallery `[M]` and queries `[Q]`, R of every query `[Q]` and the
    queries with R > 0; raises when fewer than 2 gallery classes, too few candidates for the
    largest K, or no query with R > 0."""
    codes = np.unique(np.concatenate([gallery_labels, query_labels]), return_inverse=True)[1]
    g_codes = torch.from_numpy(codes[: len(gallery_labels)].astype(np.int64))
    q_codes = torch.from_numpy(codes[len(gallery_labels) :].astype(np.int64))
    num_classes = len(torch.unique(g_codes))
    if num_classes < 2:
        raise ValueError(
            f"retrieval metrics need at least 2 classes in the gallery, got {num_classes}"
        )
    class_sizes = torch.bincount(g_codes, minlength=int(codes.max()) + 1)
    r = class_sizes[q_codes] - int(same_source)
    available = len(gallery_labels) - int(same_source)
    if ks[-1] > available:
        raise ValueError(
            f"Recall@{ks[-1]} needs {ks[-1]} neighbours but the gallery has only {available} "
            "candidate(s) per query" + (" (the query itself is excluded)" if same_source else "")
        )
    valid = torch.nonzero(r > 0).flatten()
    if len(valid) == 0:
        raise ValueError(
            "no query has another item of its class in the gallery (R = 0 for every query); "
            "retrieval metrics are undefined"
        )
    return g_codes, q_codes, r, valid


def _average_precision_at_r(
    relevant: torch.Tensor, r: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """AP@R and R-Precision of each query.

    Args:
        relevant: `[Q, K]` bool, whether the i-th neighbour shares the query's label, `K >= max(r)`.
        r: `[Q]` int64 number of relevant gallery items, all >= 1.

    Returns:
        AP@R `[Q]` and R-Precision `[Q]`, float64.
    """
    ranks = torch.arange(1, relevant.shape[1] + 1)
    in_top_r = relevant & (ranks[None, :] <= r[:, None])
    hits_so_far = in_top_r.cumsum(dim=1)
    precision_at_hits = (hits_so_far.double() / ranks) * in_top_r
    rd = r.double()
    return precision_at_hits.sum(dim=1) / rd, in_top_r.sum(dim=1).double() / rd
