from __future__ import annotations

import numpy as np
import pytest
import torch

from vmfml.metrics import knn


def brute_force(q: np.ndarray, g: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float64) @ (
        g / np.linalg.norm(g, axis=1, keepdims=True)
    ).astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_matches_brute_force(
    backend: str, exclude_self: bool, rng: np.random.Generator
) -> None:
    g = rng.standard_normal((90, 12)).astype(np.float32)
    q = g if exclude_self else rng.standard_normal((31, 12)).astype(np.float32)
    sims, ids = knn(q, g, 10, exclude_self=exclude_self, backend=backend, chunk_size=8)
    assert ids.shape == (len(q), 10) and ids.dtype == torch.long
    np.testing.assert_array_equal(ids.numpy(), brute_force(q, g, 10, exclude_self))
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_allclose(
        sims.numpy(), np.take_along_axis(qn @ gn.T, ids.numpy(), 1), atol=1e-5
    )
    assert bool((sims[:, :-1] >= sims[:, 1:]).all())


def test_backends_agree(rng: np.random.Generator) -> None:
    x = rng.standard_normal((200, 16)).astype(np.float32)
    s_f, i_f = knn(x, x, 25, exclude_self=True, backend="faiss")
    s_t, i_t = knn(x, x, 25, exclude_self=True, backend="torch", chunk_size=17)
    assert torch.equal(i_f, i_t)
    torch.testing.assert_close(s_f, s_t, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exclude_self_with_duplicates_drops_only_the_query(backend: str) -> None:
    x = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]], dtype=np.float32)
    _, ids = knn(x, x, 3, exclude_self=True, backend=backend)
    for i in range(4):
        assert sorted(ids[i].tolist()) == sorted(set(range(4)) - {i})
    assert ids[4].tolist()[-1] in range(4)


def test_knn_errors(rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="only 4 candidate"):
        knn(x, x, 5, exclude_self=True)
    with pytest.raises(ValueError, match="only 5 candidate"):
        knn(x, x, 6)
    with pytest.raises(ValueError, match="exclude_self=True needs queries to be the gallery"):
        knn(x[:2], x, 1, exclude_self=True)
    with pytest.raises(ValueError, match="dimension 2 but the gallery has dimension 3"):
        knn(x[:, :2], x, 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        knn(x, x, 0)
    with pytest.raises(ValueError, match="unknown backend"):
        knn(x, x, 1, backend="hnsw")  # type: ignore[arg-type]
