"""Query expansion at search time over a live gallery (`vmfml search --rerank`, `vmfml serve`).

Average query expansion (`aqe`) and alpha-weighted query expansion (`alpha-qe`), as `vmfml
evaluate --rerank` scores them: each query searches the store for its top-n items among those
that pass `where`, their stored vectors are read back (`GalleryStore.reconstruct`, so it works on
either backend and never sees a removed item), and the expansion of `vmfml.metrics.rerank` (one
implementation) searches again with the same filter. The hits' scores are then cosine
similarities to the expanded query.

Database-side augmentation and k-reciprocal re-ranking are not offered here: both precompute over
the whole gallery, which every live write would invalidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vmfml.index.store import GalleryStore, Hit, Where
from vmfml.metrics.rerank import Rerank, expand_with_neighbours

SEARCH_METHODS: tuple[str, ...] = ("none", "aqe", "alpha-qe")
# Neighbours one expansion reads back from the store (one `reconstruct` each, per query): bounds
# what a request can make the server do. evaluate's grid goes up to 10.
MAX_N = 100
MAX_ALPHA = 100.0


def search_rerank(method: str = "none", n: int | None = None, alpha: float | None = None) -> Rerank:
    """The re-ranking of a search, checked: `method` one of `SEARCH_METHODS`, `n` neighbours in
    [0, MAX_N] and `alpha` in [0, MAX_ALPHA]; n and alpha default as evaluate's (`Rerank`: 2 and 3,
    which kept Recall@1 in BENCHMARKS.md 3.1).

    Raises:
        ValueError: one line naming the bad value and what is allowed.
    """
    if method not in SEARCH_METHODS:
        raise ValueError(
            f"unknown re-ranking {method!r} for a search; valid options: "
            f"{', '.join(SEARCH_METHODS)} (dba and k-reciprocal work on the whole gallery: "
            "`vmfml evaluate --rerank` only)"
        )
    defaults = Rerank()
    n = defaults.n if n is None else n
    alpha = defaults.alpha if alpha is None else alpha
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_N:
        raise ValueError(f"re-ranking n must be an integer in [0, {MAX_N}], got {n!r}")
    if not (math.isfinite(alpha) and 0 <= alpha <= MAX_ALPHA):
        raise ValueError(f"re-ranking alpha must be a number in [0, {MAX_ALPHA:g}], got {alpha!r}")
    return Rerank(method, n=n, alpha=float(alpha))


def expand_on_store(
    store: GalleryStore,
    queries: np.ndarray,
    settings: Rerank,
    where: Where = None,
    exclude: Sequence[int] | None = None,
) -> np.ndarray:
    """The queries `[Q, D]` (unit rows) expanded by their top-n gallery items that pass `where`.

    Args:
        store: the live gallery.
        queries: `[Q, D]` unit rows.
        settings: `search_rerank`'s answer; `none` or n = 0 returns the queries.
        where: the search filter; the neighbours are chosen among the items that pass it.
        exclude: per query, a gallery id that is not its neighbour (the query item itself).

    Returns:
        `[Q, D]` float32 unit rows. A query with fewer than n reachable items is expanded by
        those it has; an item removed between the search and the read-back adds nothing.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if settings.method == "none" or settings.n == 0:
        return q
    n = settings.n
    scores, ids = store.search(q, n + (exclude is not None), where)
    if exclude is not None:
        keep = [
            [j for j in range(ids.shape[1]) if ids[r, j] != exclude[r]][:n] for r in range(len(ids))
        ]
        ids = np.take_along_axis(ids, np.array(keep), axis=1)
        scores = np.take_along_axis(scores, np.array(keep), axis=1)
    found = sorted({int(i) for i in ids.ravel() if i >= 0})
    # Row len(found) stays zero: the neighbour of an id -1, or of an item removed meanwhile.
    vectors = np.zeros((len(found) + 1, q.shape[1]), dtype=np.float32)
    row_of: dict[int, int] = {}
    for row, item_id in enumerate(found):
        try:
            vectors[row] = store.reconstruct(item_id)
        except IndexError:
            continue
        row_of[item_id] = row
    rows = np.vectorize(lambda i: row_of.get(int(i), len(found)), otypes=[np.int64])(ids)
    alpha = settings.alpha if settings.method == "alpha-qe" else 0.0
    expanded = expand_with_neighbours(
        torch.from_numpy(q),
        torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)),
        torch.from_numpy(rows),
        torch.from_numpy(vectors),
        alpha,
    )
    return expanded.numpy()


def reranked_hits(
    store: GalleryStore,
    queries: np.ndarray,
    k: int,
    where: Where = None,
    settings: Rerank | None = None,
) -> list[list[Hit]]:
    """`store.hits` of the expanded queries (`expand_on_store`): one list of hits per query."""
    if settings is not None:
        queries = expand_on_store(store, queries, settings, where)
    return store.hits(queries, k, where)
