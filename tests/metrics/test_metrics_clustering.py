from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from conftest import clustered
from vmfml.metrics import nmi, spherical_kmeans
from vmfml.metrics.clustering import kmeans_plus_plus


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_recovers_separated_classes(backend: str, rng: np.random.Generator) -> None:
    x, y = clustered(rng, 8, 25, 16, noise=0.05)
    clusters = spherical_kmeans(x, 8, backend=backend, seed=3)
    assert clusters.shape == (200,) and clusters.dtype == torch.long
    assert normalized_mutual_info_score(y, clusters.numpy()) == pytest.approx(1.0)
    assert nmi(x, y, backend=backend) == pytest.approx(1.0)


def test_backends_agree_on_overlapping_classes(rng: np.random.Generator) -> None:
    x, y = clustered(rng, 6, 60, 16, noise=0.35)
    faiss_nmi = nmi(x, y, backend="faiss")
    torch_nmi = nmi(x, y, backend="torch")
    assert 0.3 < torch_nmi < 1.0
    assert faiss_nmi == pytest.approx(torch_nmi, abs=0.05)


def test_seeding_is_deterministic_and_picks_one_centre_per_separated_class(
    rng: np.random.Generator,
) -> None:
    x, y = clustered(rng, 10, 20, 32, noise=0.05)
    t = torch.from_numpy(x)
    centres = kmeans_plus_plus(t, 10, seed=5)
    assert torch.equal(centres, kmeans_plus_plus(t, 10, seed=5))
    nearest_class = y[(centres @ t.T).argmax(dim=1).numpy()]
    assert sorted(nearest_class.tolist()) == list(range(10))


def test_nmi_errors(rng: np.random.Generator) -> None:
    x = rng.standard_normal((6, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="at least 2 classes"):
        nmi(x, np.zeros(6))
    with pytest.raises(ValueError, match="num_clusters must be between 1 and the number of rows"):
        spherical_kmeans(x, 7)
