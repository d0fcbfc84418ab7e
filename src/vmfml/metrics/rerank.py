"""Query-time re-ranking of cosine retrieval: query expansion, database augmentation, k-reciprocal.

Every method takes unit queries `[Q, D]` and a gallery `[M, D]`, or the gallery against itself
(`same_source=True`: query i is gallery item i and is excluded from its own neighbours, by index,
as `retrieval_metrics` does), and returns each query's re-ranked top `depth` gallery ids, which
`vmfml.metrics.retrieval.ranked_retrieval_metrics` scores (Recall@K, MAP@R, R-Precision).

- `aqe`, average query expansion (Chum et al., ICCV 2007): the query becomes the normalized mean
  of itself and its top-n neighbours, then searches again.
- `alpha-qe` (Radenovic et al., TPAMI 2019): the same sum with each neighbour weighted by
  `max(sim, 0) ** alpha` (the query's own weight is 1 = 1 ** alpha); alpha = 0 is aqe.
- `dba`, database-side augmentation (alpha-weighted, as in Radenovic et al.): every gallery vector
  is replaced by the alpha-weighted normalized mean of itself and its top-n gallery neighbours.
  Separate queries search the augmented gallery unchanged; in `same_source` mode each query is a
  gallery item and searches with its augmented vector.
- `k-reciprocal` (Zhong et al., CVPR 2017): a Jaccard distance between k-reciprocal neighbour sets,
  blended with the original distance; see `k_reciprocal_rerank`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from vmfml.metrics._inputs import ArrayLike, Backend, as_labels, as_unit_embeddings, check_ks
from vmfml.metrics.knn import knn
from vmfml.metrics.retrieval import ranked_retrieval_metrics, ranking_depth

METHODS: tuple[str, ...] = ("none", "aqe", "alpha-qe", "dba", "k-reciprocal")

# k-reciprocal builds neighbour sets of every query and gallery point in Python and a sparse
# [N, N] weight matrix: 15,234 points took 2.4 ms a query and 2.1 GB for the whole `vmfml evaluate`
# (BENCHMARKS.md 3.1). The sets, V and the Python loops grow with N: the limit, about three times
# the largest set measured, refuses sets whose cost nobody has seen rather than risk memory.
MAX_K_RECIPROCAL_POINTS = 50_000
# Bytes of the [chunk, M] float64 blocks (Jaccard sums, distances) of one chunk of queries.
_CHUNK_BYTES = 2**27

# The grids `choose_rerank` searches on validation embeddings.
GRID_N: tuple[int, ...] = (1, 2, 3, 5, 10)
GRID_ALPHA: tuple[float, ...] = (1.0, 3.0, 5.0)


@dataclass(frozen=True)
class Rerank:
    """One re-ranking method and its parameters.

    Args:
        method: one of `METHODS`.
        n: neighbours averaged by aqe, alpha-qe and dba (0 = no re-ranking).
        alpha: neighbour weight exponent of alpha-qe and dba (alpha = 3 as in Radenovic et al.).
        k1, k2, lam: k-reciprocal's neighbourhood, local query expansion and weight of the
            original distance (Zhong et al.'s defaults 20, 6, 0.3).
    """

    method: str = "none"
    n: int = 2
    alpha: float = 3.0
    k1: int = 20
    k2: int = 6
    lam: float = 0.3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown re-ranking {self.method!r}; valid options: {', '.join(METHODS)}"
            )
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n must be an integer >= 0, got {self.n!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if self.k1 < 1 or self.k2 < 1:
            raise ValueError(f"k1 and k2 must be >= 1, got k1={self.k1}, k2={self.k2}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {self.lam}")

    def describe(self) -> dict[str, object]:
        """The method and only the parameters it uses."""
        used = {
            "none": (),
            "aqe": ("n",),
            "alpha-qe": ("n", "alpha"),
            "dba": ("n", "alpha"),
            "k-reciprocal": ("k1", "k2", "lam"),
        }[self.method]
        values = asdict(self)
        return {"method": self.method, **{name: values[name] for name in used}}


def expand_queries(
    queries: ArrayLike,
    gallery: ArrayLike,
    n: int,
    alpha: float = 0.0,
    *,
    exclude_self: bool = False,
    backend: Backend = "auto",
) -> torch.Tensor:
    """alpha-weighted query expansion; alpha = 0 is average query expansion.

    `q' = normalize(q + sum_{i <= n} max(s_i, 0) ** alpha * g_i)`, with g_i the i-th nearest
    gallery vector of q and s_i its cosine similarity (`0 ** 0 = 1`, so alpha = 0 weighs every
    neighbour 1).

    Args:
        queries: `[Q, D]` unit vectors.
        gallery: `[M, D]` unit vectors.
        n: neighbours added (0 returns the queries).
        alpha: weight exponent, >= 0.
        exclude_self: the queries are the gallery (`Q == M`); each one's own row is not a neighbour.
        backend: kNN backend (`"auto"`, `"faiss"`, `"torch"`).

    Returns:
        `[Q, D]` float32 unit vectors.
    """
    q = as_unit_embeddings(queries, "queries")
    g = as_unit_embeddings(gallery, "gallery")
    if n == 0:
        return q
    sims, ids = knn(q, g, n, exclude_self=exclude_self, backend=backend)
    return expand_with_neighbours(q, sims, ids, g, alpha)


def expand_with_neighbours(
    queries: torch.Tensor,
    sims: torch.Tensor,
    ids: torch.Tensor,
    vectors: torch.Tensor,
    alpha: float = 0.0,
) -> torch.Tensor:
    """The expansion of `expand_queries`, given each query's neighbours already found.

    `q' = normalize(q + sum_i max(s_i, 0) ** alpha * vectors[ids_i])`. A zero row of `vectors`
    adds nothing, whatever its weight: a search store passes one for neighbours it did not find.

    Args:
        queries: `[Q, D]` unit vectors.
        sims: `[Q, n]` cosine similarity of each query to its neighbours.
        ids: `[Q, n]` rows of `vectors` holding the neighbours.
        vectors: `[M, D]` the neighbours' vectors.
        alpha: weight exponent, >= 0.

    Returns:
        `[Q, D]` float32 unit vectors.
    """
    weights = sims.clamp(min=0) ** alpha
    expanded = queries.clone()
    for i in range(ids.shape[1]):
        expanded += weights[:, i : i + 1] * vectors[ids[:, i]]
    return F.normalize(expanded, dim=1)


def augment_database(
    gallery: ArrayLike, n: int, alpha: float = 0.0, *, backend: Backend = "auto"
) -> torch.Tensor:
    """Database-side augmentation: each gallery row expanded by its top-n other gallery rows.

    Args:
        gallery: `[M, D]` unit vectors.
        n: neighbours added (0 returns the gallery).
        alpha: weight exponent (see `expand_queries`).
        backend: kNN backend.

    Returns:
        `[M, D]` float32 unit vectors.
    """
    return expand_queries(gallery, gallery, n, alpha, exclude_self=True, backend=backend)


def k_reciprocal_rerank(
    queries: ArrayLike | None,
    gallery: ArrayLike,
    depth: int,
    *,
    k1: int = 20,
    k2: int = 6,
    lam: float = 0.3,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017) of queries against a gallery.

    The points are the queries and the gallery together (only the gallery when `queries` is None:
    query i is then gallery item i, excluded from its own ranking). With the original distance
    `d(p, g) = (1 - cos(p, g)) / 2` (the squared Euclidean distance over its largest value, 4):

    - N(p, k): p followed by its k nearest other points (p's ranking list starts with p itself,
      as in the authors' code).
    - R(p, k) = {g in N(p, k) : p in N(g, k)}, the k-reciprocal neighbours.
    - R*(p, k1) = R(p, k1) united with every R(q, ceil(k1 / 2)), q in R(p, k1), that shares at
      least 2/3 of its members with R(p, k1).
    - V[p, g] = exp(-d(p, g)) for g in R*(p, k1), else 0; each row scaled to sum 1 (as the
      authors' code does).
    - Local query expansion: V[p] <- mean of V[g] over the first k2 points of N(p, k1).
    - Jaccard distance d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(V[p, j], V[g, j]).
    - Final distance (1 - lam) * d_J + lam * d; ascending is the re-ranked order.

    Memory: neighbour lists and sets `O(N k1)`, a sparse V with |R*(p, k1)| entries in row p
    before the local expansion and at most k2 times as many after it, and per chunk of queries
    `[chunk, M]` float64 blocks plus one entry for every pair of a nonzero V[p, j] and a gallery
    item sharing column j, together about 128 MB (a single query may exceed it); at most
    `MAX_K_RECIPROCAL_POINTS` points (refused past it).

    Args:
        queries: `[Q, D]` unit vectors, or None for the gallery against itself.
        gallery: `[M, D]` unit vectors.
        depth: gallery ids returned per query.
        k1, k2, lam: as above.
        backend: backend of the initial kNN search.

    Returns:
        scores `[Q, depth]` float32 (1 - final distance, descending) and gallery ids `[Q, depth]`
        int64.
    """
    g = as_unit_embeddings(gallery, "gallery")
    same_source = queries is None
    points = g if queries is None else torch.cat([as_unit_embeddings(queries, "queries"), g])
    num_points, num_gallery = points.shape[0], g.shape[0]
    num_queries = num_gallery if same_source else num_points - num_gallery
    offset = 0 if same_source else num_queries  # point index of gallery item 0
    if num_points > MAX_K_RECIPROCAL_POINTS:
        raise ValueError(
            f"k-reciprocal re-ranking is limited to {MAX_K_RECIPROCAL_POINTS:,} points (queries + "
            f"gallery), got {num_points:,}; its neighbour sets and sparse weights grow with every "
            "point: use aqe, alpha-qe or dba for sets this large"
        )
    if not 1 <= k1 <= num_points - 1:
        raise ValueError(f"k1 must be in [1, {num_points - 1}] for {num_points} points, got {k1}")
    if not 1 <= k2 <= k1 + 1:
        raise ValueError(f"k2 must be in [1, k1 + 1 = {k1 + 1}], got {k2}")
    available = num_gallery - int(same_source)
    if not 1 <= depth <= available:
        raise ValueError(f"depth must be in [1, {available}], got {depth}")

    _, nearest = knn(points, points, k1, exclude_self=True, backend=backend)
    ranked = torch.cat([torch.arange(num_points)[:, None], nearest], dim=1).numpy()  # [N, k1 + 1]
    half = math.ceil(k1 / 2)
    within = [set(row) for row in ranked.tolist()]
    within_half = [set(row[: half + 1]) for row in ranked.tolist()]
    reciprocal = [{q for q in within[p] if p in within[q]} for p in range(num_points)]
    reciprocal_half = [
        {q for q in within_half[p] if p in within_half[q]} for p in range(num_points)
    ]

    x = points.double().numpy()
    rows, cols, vals = [], [], []
    for p in range(num_points):
        expansion = set(reciprocal[p])
        for q in reciprocal[p]:
            candidate = reciprocal_half[q]
            if 3 * len(candidate & reciprocal[p]) >= 2 * len(candidate):
                expansion |= candidate
        members = np.fromiter(sorted(expansion), dtype=np.int64)
        weight = np.exp(-(1.0 - x[members] @ x[p]) / 2.0)
        rows.append(np.full(len(members), p))
        cols.append(members)
        vals.append(weight / weight.sum())
    v = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(num_points, num_points),
    )
    if k2 > 1:
        mean = sparse.csr_matrix(
            (
                np.full(num_points * k2, 1.0 / k2),
                (np.repeat(np.arange(num_points), k2), ranked[:, :k2].reshape(-1)),
            ),
            shape=(num_points, num_points),
        )
        v = (mean @ v).tocsr()
    # Inverted lists: for every point j, the gallery items g with V[g, j] > 0.
    inverted = v[offset : offset + num_gallery].T.tocsr()
    gallery_x = x[offset : offset + num_gallery]

    all_scores = torch.empty(num_queries, depth)
    all_ids = torch.empty(num_queries, depth, dtype=torch.long)
    # A chunk holds [c, M] float64 blocks and, in _min_sums, about 32 bytes for each pair of a
    # nonzero V[p, j] and a gallery item sharing column j: both stay within _CHUNK_BYTES.
    pairs = v[:num_queries].sign() @ np.diff(inverted.indptr)  # [Q]
    cost = np.cumsum(8 * num_gallery + 32 * pairs)
    start = 0
    while start < num_queries:
        spent = cost[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cost, spent + _CHUNK_BYTES, side="right")))
        stop = min(stop, num_queries)
        shared = _min_sums(v[start:stop], inverted)  # [c, M]
        jaccard = 1.0 - shared / (2.0 - shared)  # rows of V sum to 1: sum max = 2 - sum min
        original = (1.0 - x[start:stop] @ gallery_x.T) / 2.0
        final = torch.from_numpy((1.0 - lam) * jaccard + lam * original)
        if same_source:
            final[torch.arange(stop - start), torch.arange(start, stop)] = torch.inf
        dist, ids = torch.topk(final, depth, dim=1, largest=False)
        all_scores[start:stop] = (1.0 - dist).float()
        all_ids[start:stop] = ids
        start = stop
    return all_scores, all_ids


def _min_sums(rows: sparse.csr_matrix, inverted: sparse.csr_matrix) -> np.ndarray:
    """`out[p, g] = sum_j min(rows[p, j], V[g, j])`, `[P, M]` float64, from V's inverted lists
    (`inverted[j]` holds the gallery items g with V[g, j] > 0): only shared nonzeros add."""
    coo = rows.tocoo()
    starts = inverted.indptr[coo.col]
    counts = inverted.indptr[coo.col + 1] - starts
    total = int(counts.sum())
    num_rows, num_gallery = rows.shape[0], inverted.shape[1]
    if total == 0:
        return np.zeros((num_rows, num_gallery))
    first = np.cumsum(counts) - counts
    positions = np.repeat(starts - first, counts) + np.arange(total)
    targets = (
        np.repeat(coo.row.astype(np.int64) * num_gallery, counts) + inverted.indices[positions]
    )
    shared = np.minimum(np.repeat(coo.data, counts), inverted.data[positions])
    return np.bincount(targets, weights=shared, minlength=num_rows * num_gallery).reshape(
        num_rows, num_gallery
    )


def rerank(
    queries: ArrayLike | None,
    gallery: ArrayLike,
    settings: Rerank,
    depth: int,
    *,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's top `depth` gallery items after re-ranking by `settings`.

    Args:
        queries: `[Q, D]` unit vectors, or None for the gallery against itself (each query
            excluded from its own list, by index).
        gallery: `[M, D]` unit vectors.
        settings: the method and its parameters.
        depth: ids per query.
        backend: kNN backend.

    Returns:
        scores `[Q, depth]` float32, descending (cosine similarities, or 1 - final distance for
        k-reciprocal), and gallery ids `[Q, depth]` int64.
    """
    same_source = queries is None
    g = as_unit_embeddings(gallery, "gallery")
    if settings.method == "k-reciprocal":
        return k_reciprocal_rerank(
            queries,
            g,
            depth,
            k1=settings.k1,
            k2=settings.k2,
            lam=settings.lam,
            backend=backend,
        )
    q = g if queries is None else as_unit_embeddings(queries, "queries")
    if settings.method in ("aqe", "alpha-qe"):
        alpha = settings.alpha if settings.method == "alpha-qe" else 0.0
        q = expand_queries(q, g, settings.n, alpha, exclude_self=same_source, backend=backend)
    elif settings.method == "dba":
        g = augment_database(g, settings.n, settings.alpha, backend=backend)
        if same_source:
            q = g
    return knn(q, g, depth, exclude_self=same_source, backend=backend)


def reranked_retrieval_metrics(
    embeddings: ArrayLike,
    labels: ArrayLike | Sequence[int],
    ks: Sequence[int] = (1, 2, 4, 8),
    settings: Rerank | None = None,
    *,
    query_embeddings: ArrayLike | None = None,
    query_labels: ArrayLike | Sequence[int] | None = None,
    backend: Backend = "auto",
) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision of the re-ranked lists, and the time they took.

    Args:
        embeddings: gallery `[M, D]` unit vectors.
        labels: gallery labels `[M]`.
        ks: the K of Recall@K.
        settings: the re-ranking (default: none, the plain exact search).
        query_embeddings, query_labels: separate queries `[Q, D]`, `[Q]`; None: every gallery item
            is a query, excluded from its own neighbours (as `retrieval_metrics`).
        backend: kNN backend.

    Returns:
        `{"recall@K": ..., "map@r": ..., "r_precision": ..., "ms_per_query": ...}`; ms_per_query is
        the wall time of the whole re-ranked search (gallery-side work such as dba's augmentation
        included) over the number of queries.
    """
    settings = settings or Rerank()
    if (query_embeddings is None) != (query_labels is None):
        raise ValueError("query_embeddings and query_labels must be given together (or neither)")
    gallery = as_unit_embeddings(embeddings, "embeddings")
    gallery_labels = as_labels(labels, gallery.shape[0], "labels", "embeddings")
    ks = check_ks(ks)
    queries = None
    q_labels = gallery_labels
    if query_embeddings is not None and query_labels is not None:
        queries = as_unit_embeddings(query_embeddings, "query_embeddings")
        q_labels = as_labels(query_labels, queries.shape[0], "query_labels", "query_embeddings")
    same_source = queries is None
    depth = ranking_depth(gallery_labels, q_labels, ks, same_source=same_source)
    start = time.perf_counter()
    _, ids = rerank(queries, gallery, settings, depth, backend=backend)
    elapsed = time.perf_counter() - start
    out = ranked_retrieval_metrics(ids, q_labels, gallery_labels, ks, same_source=same_source)
    out["ms_per_query"] = 1000.0 * elapsed / len(q_labels)
    return out


def choose_rerank(
    method: str,
    embeddings: ArrayLike,
    labels: ArrayLike | Sequence[int],
    *,
    backend: Backend = "auto",
) -> tuple[Rerank, float]:
    """The parameters of `method` with the best MAP@R on validation embeddings (gallery = itself).

    Searches n in `GRID_N` (aqe), n x alpha in `GRID_N` x `GRID_ALPHA` (alpha-qe, dba), at most
    the validation set's size minus 2; k-reciprocal and none keep their defaults. Ties go to the
    earlier (smaller) setting.

    Returns:
        the chosen settings and their validation MAP@R.
    """
    base = Rerank(method)
    labels_arr = as_labels(labels, len(embeddings), "labels", "embeddings")
    if method in ("aqe", "alpha-qe", "dba"):
        ns = [n for n in GRID_N if n <= len(labels_arr) - 2]
        alphas = GRID_ALPHA if method != "aqe" else (base.alpha,)
        candidates = [replace(base, n=n, alpha=a) for n in ns for a in alphas]
    else:
        candidates = [base]
    best, best_map = base, -1.0
    for candidate in candidates:
        score = reranked_retrieval_metrics(
            embeddings, labels_arr, (1,), candidate, backend=backend
        )["map@r"]
        if score > best_map:
            best, best_map = candidate, score
    return best, best_map
