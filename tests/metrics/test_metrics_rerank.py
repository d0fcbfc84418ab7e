"""Re-ranking against plain float64 re-implementations of the papers' formulas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from conftest import clustered, reference_retrieval
from vmfml.metrics import rerank as rerank_module
from vmfml.metrics import retrieval_metrics
from vmfml.metrics.knn import knn
from vmfml.metrics.rerank import (
    GRID_N,
    Rerank,
    augment_database,
    choose_rerank,
    expand_queries,
    k_reciprocal_rerank,
    rerank,
    reranked_retrieval_metrics,
)
from vmfml.metrics.retrieval import ranked_retrieval_metrics, ranking_depth

BACKENDS = ["faiss", "torch"]


def unit64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_expand(
    queries: np.ndarray, gallery: np.ndarray, n: int, alpha: float, same_source: bool
) -> np.ndarray:
    """q' = normalize(q + sum of the top-n gallery rows weighted by max(sim, 0) ** alpha)."""
    q, g = unit64(queries), unit64(gallery)
    out = np.empty_like(q)
    for i in range(len(q)):
        sims = g @ q[i]
        order = [j for j in np.argsort(-sims, kind="stable") if not (same_source and j == i)]
        total = q[i].copy()
        for j in order[:n]:
            total += max(sims[j], 0.0) ** alpha * g[j]
        out[i] = total / np.linalg.norm(total)
    return out


def reference_k_reciprocal(
    queries: np.ndarray | None, gallery: np.ndarray, k1: int, k2: int, lam: float
) -> tuple[np.ndarray, bool]:
    """Final distances [Q, M] of Zhong et al. by explicit set loops, and whether any R* grew."""
    points = unit64(gallery if queries is None else np.concatenate([queries, gallery]))
    n = len(points)
    offset = 0 if queries is None else len(queries)
    num_queries = len(gallery) if queries is None else len(queries)
    d = (1.0 - points @ points.T) / 2.0
    rank = [[p] + sorted((j for j in range(n) if j != p), key=lambda j: d[p, j]) for p in range(n)]

    def near(p: int, k: int) -> set[int]:
        return set(rank[p][: k + 1])

    def reciprocal(p: int, k: int) -> set[int]:
        return {g for g in near(p, k) if p in near(g, k)}

    v = np.zeros((n, n))
    grew = False
    for p in range(n):
        r = reciprocal(p, k1)
        star = set(r)
        for q in r:
            candidate = reciprocal(q, math.ceil(k1 / 2))
            if len(candidate & r) >= 2 / 3 * len(candidate):
                star |= candidate
        grew |= star != r
        for g in star:
            v[p, g] = math.exp(-d[p, g])
        v[p] /= v[p].sum()
    v_qe = np.array([np.mean([v[g] for g in rank[p][:k2]], axis=0) for p in range(n)])
    final = np.empty((num_queries, len(gallery)))
    for i in range(num_queries):
        for j in range(len(gallery)):
            a, b = v_qe[i], v_qe[offset + j]
            jaccard = 1.0 - np.minimum(a, b).sum() / np.maximum(a, b).sum()
            final[i, j] = (1.0 - lam) * jaccard + lam * d[i, offset + j]
    return final, grew


def ranking_of(distances: np.ndarray, same_source: bool) -> np.ndarray:
    """Ascending order of every row, the query's own index left out when same_source."""
    rows = []
    for i, row in enumerate(distances):
        order = np.argsort(row, kind="stable")
        rows.append(order[order != i] if same_source else order)
    return np.array(rows)


@pytest.fixture()
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Shuffled, so that the first rows (the separate queries) mix the classes.
    x, labels = clustered(rng, num_classes=4, per_class=10, dim=8, noise=0.9)
    order = rng.permutation(len(labels))
    return x[order], labels[order]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("same_source", [True, False])
@pytest.mark.parametrize(("n", "alpha"), [(1, 0.0), (3, 0.0), (3, 3.0), (5, 1.5)])
def test_query_expansion_equals_reference(
    data: tuple[np.ndarray, np.ndarray], backend: str, same_source: bool, n: int, alpha: float
) -> None:
    x, labels = data
    queries, gallery = (x, x) if same_source else (x[:10], x[10:])
    q_labels, g_labels = (labels, labels) if same_source else (labels[:10], labels[10:])
    expected = reference_expand(queries, gallery, n, alpha, same_source)
    got = expand_queries(queries, gallery, n, alpha, exclude_self=same_source, backend=backend)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    method = "aqe" if alpha == 0 else "alpha-qe"
    m = reranked_retrieval_metrics(
        gallery,
        g_labels,
        (1, 2, 4),
        Rerank(method, n=n, alpha=alpha),
        query_embeddings=None if same_source else queries,
        query_labels=None if same_source else q_labels,
        backend=backend,
    )
    ref = reference_retrieval(expected, q_labels, gallery, g_labels, (1, 2, 4), same_source)
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("same_source", [True, False])
@pytest.mark.parametrize(("n", "alpha"), [(2, 0.0), (4, 3.0)])
def test_database_augmentation_equals_reference(
    data: tuple[np.ndarray, np.ndarray], backend: str, same_source: bool, n: int, alpha: float
) -> None:
    x, labels = data
    gallery, g_labels = (x, labels) if same_source else (x[10:], labels[10:])
    augmented = reference_expand(gallery, gallery, n, alpha, same_source=True)
    got = augment_database(gallery, n, alpha, backend=backend)
    np.testing.assert_allclose(got.numpy(), augmented, atol=1e-5)
    # Separate queries search the augmented gallery as they are; in one set each is augmented too.
    queries = augmented if same_source else unit64(x[:10])
    q_labels = g_labels if same_source else labels[:10]
    depth = len(gallery) - int(same_source)
    _, ids = rerank(
        None if same_source else x[:10],
        gallery,
        Rerank("dba", n=n, alpha=alpha),
        depth,
        backend=backend,
    )
    # With alpha = 0 two mutual neighbours that share their other neighbours get the same
    # augmented vector: the order of such exact ties is free, so check that the lists are sorted
    # by the reference similarities, then that the metrics match where no ties arise.
    sims = queries @ augmented.T
    along = np.take_along_axis(sims, ids.numpy(), axis=1)
    assert (np.diff(along, axis=1) <= 1e-6).all()
    if alpha > 0:
        m = ranked_retrieval_metrics(ids, q_labels, g_labels, (1, 4), same_source=same_source)
        ref = reference_retrieval(queries, q_labels, augmented, g_labels, (1, 4), same_source)
        assert m == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("same_source", [True, False])
@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 3, 0.3), (7, 1, 0.6)])
def test_k_reciprocal_equals_set_loops(
    data: tuple[np.ndarray, np.ndarray], same_source: bool, k1: int, k2: int, lam: float
) -> None:
    x, labels = data
    queries, gallery = (None, x) if same_source else (x[:8], x[8:])
    final, grew = reference_k_reciprocal(queries, gallery, k1, k2, lam)
    assert grew  # the 2/3 expansion rule is exercised, not only R(p, k1)
    depth = len(gallery) - int(same_source)
    scores, ids = k_reciprocal_rerank(queries, gallery, depth, k1=k1, k2=k2, lam=lam)
    order = ranking_of(final, same_source)
    np.testing.assert_array_equal(ids.numpy(), order)
    expected = 1.0 - np.take_along_axis(final, order, axis=1)
    np.testing.assert_allclose(scores.numpy(), expected, atol=1e-5)
    q_labels = labels if same_source else labels[:8]
    m = ranked_retrieval_metrics(
        ids, q_labels, labels[len(labels) - len(gallery) :], (1, 2), same_source=same_source
    )
    plain = retrieval_metrics(
        gallery,
        labels[len(labels) - len(gallery) :],
        (1, 2),
        query_embeddings=queries,
        query_labels=None if same_source else q_labels,
        nmi=False,
    )
    assert m != plain  # the re-ranking changed the lists


@pytest.mark.parametrize("same_source", [True, False])
def test_k_reciprocal_chunks_give_the_same_lists(
    data: tuple[np.ndarray, np.ndarray], same_source: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = data
    queries, gallery = (None, x) if same_source else (x[:8], x[8:])
    whole = k_reciprocal_rerank(queries, gallery, 10, k1=6, k2=3)
    sizes: list[int] = []
    min_sums = rerank_module._min_sums

    def spy(rows: Any, inverted: Any) -> np.ndarray:
        sizes.append(rows.shape[0])
        return min_sums(rows, inverted)

    monkeypatch.setattr(rerank_module, "_min_sums", spy)
    monkeypatch.setattr(rerank_module, "_CHUNK_BYTES", 15_000)
    chunked = k_reciprocal_rerank(queries, gallery, 10, k1=6, k2=3)
    assert len(sizes) > 2 and max(sizes) > 1 and sum(sizes) == len(whole[1])
    assert torch.equal(whole[1], chunked[1])
    assert torch.equal(whole[0], chunked[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("same_source", [True, False])
def test_ranked_metrics_of_exact_lists_equal_retrieval_metrics(
    rng: np.random.Generator, backend: str, same_source: bool
) -> None:
    x, labels = clustered(rng, num_classes=6, per_class=12, dim=16, noise=1.0)
    order = rng.permutation(len(labels))
    x, labels = x[order], labels[order]
    gallery, g_labels = (x, labels) if same_source else (x[20:], labels[20:])
    queries, q_labels = (None, labels) if same_source else (x[:20], labels[:20])
    expected = retrieval_metrics(
        gallery,
        g_labels,
        (1, 2, 8),
        query_embeddings=queries,
        query_labels=None if same_source else q_labels,
        nmi=False,
        backend=backend,
    )
    none = reranked_retrieval_metrics(
        gallery,
        g_labels,
        (1, 2, 8),
        query_embeddings=queries,
        query_labels=None if same_source else q_labels,
        backend=backend,
    )
    assert none.pop("ms_per_query") > 0
    assert none == pytest.approx(expected, abs=1e-12)


def test_no_neighbours_is_no_reranking(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    depth = len(x) - 1
    _, plain = knn(x, x, depth, exclude_self=True, backend="torch")
    for method in ("aqe", "alpha-qe", "dba"):
        _, ids = rerank(None, x, Rerank(method, n=0), depth, backend="torch")
        assert torch.equal(ids, plain), method
    assert torch.allclose(augment_database(x, 0), torch.from_numpy(x), rtol=0, atol=1e-7)
    # alpha = 0 weighs every neighbour 1: alpha-qe is then aqe.
    _, aqe = rerank(None, x, Rerank("aqe", n=3), depth, backend="torch")
    _, zero = rerank(None, x, Rerank("alpha-qe", n=3, alpha=0.0), depth, backend="torch")
    assert torch.equal(aqe, zero)
    assert not torch.equal(aqe, plain)


@pytest.mark.parametrize("method", ["aqe", "alpha-qe", "dba", "k-reciprocal"])
@pytest.mark.parametrize("same_source", [True, False])
def test_full_depth_lists_are_permutations(
    data: tuple[np.ndarray, np.ndarray], method: str, same_source: bool
) -> None:
    x, _ = data
    queries, gallery = (None, x) if same_source else (x[:10], x[10:])
    depth = len(gallery) - int(same_source)
    _, ids = rerank(queries, gallery, Rerank(method, n=3, k1=6, k2=3), depth, backend="torch")
    for i, row in enumerate(ids.tolist()):
        expected = set(range(len(gallery))) - ({i} if same_source else set())
        assert sorted(row) == sorted(expected)


def test_choose_rerank_takes_the_best_map_of_the_grid(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = data
    maps = {}
    for n in GRID_N:
        expanded = reference_expand(x, x, n, 0.0, same_source=True)
        maps[n] = reference_retrieval(expanded, labels, x, labels, (1,), True)["map@r"]
    best = max(maps.values())
    settings, score = choose_rerank("aqe", x, labels, backend="torch")
    assert settings.method == "aqe"
    assert settings.n == min(n for n, v in maps.items() if v == best)
    assert score == pytest.approx(best, abs=1e-9)
    assert choose_rerank("k-reciprocal", x, labels)[0] == Rerank("k-reciprocal")


def test_refusals(data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    x, labels = data
    with pytest.raises(ValueError, match="valid options: none, aqe, alpha-qe, dba, k-reciprocal"):
        Rerank("qe")
    with pytest.raises(ValueError, match="n must be"):
        Rerank("aqe", n=-1)
    monkeypatch.setattr(rerank_module, "MAX_K_RECIPROCAL_POINTS", 39)
    with pytest.raises(ValueError, match="limited to 39 points"):
        k_reciprocal_rerank(None, x, 5)
    depth = ranking_depth(labels, labels, (1,), same_source=True)
    assert depth == 9
    _, ids = knn(x, x, depth - 1, exclude_self=True, backend="torch")
    with pytest.raises(ValueError, match="need 9"):
        ranked_retrieval_metrics(ids, labels, labels, (1,), same_source=True)
    with pytest.raises(ValueError, match="one list per gallery item: 39 lists, 40 gallery items"):
        ranked_retrieval_metrics(ids[1:], labels[1:], labels, (1,), same_source=True)
