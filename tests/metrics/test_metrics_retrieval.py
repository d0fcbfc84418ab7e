from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from conftest import clustered, reference_retrieval
from vmfml.metrics import retrieval_metrics
from vmfml.metrics.knn import ExactSearch

BACKENDS = ["faiss", "torch"]
# The module, not the `knn` function that `vmfml.metrics` re-exports under the same name.
knn_module = importlib.import_module("vmfml.metrics.knn")


def circle(degrees: list[float]) -> np.ndarray:
    angles = np.deg2rad(degrees)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


# Six points on a circle (no two pairs equally far apart), classes a = {A, B, E}, b = {C, D, F}.
HAND_POINTS = circle([0, 12, 33, 100, 61, 205])
HAND_LABELS = np.array(["a", "a", "b", "b", "a", "b"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_same_source(backend: str) -> None:
    # Neighbour labels (self excluded) and R = 2 for every query:
    # A: a b a b b  B: a b a b b  C: a a a b b  D: a b a a b  E: b b a a b  F: b a a a b
    # AP@R: .5 .5 0 .25 0 .5 ; R-Precision: .5 .5 0 .5 0 .5 ; first hit at rank 1 1 4 2 3 1.
    m = retrieval_metrics(HAND_POINTS, HAND_LABELS, ks=(1, 2, 3, 4), backend=backend, nmi=False)
    assert m["recall@1"] == pytest.approx(3 / 6)
    assert m["recall@2"] == pytest.approx(4 / 6)
    assert m["recall@3"] == pytest.approx(5 / 6)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["map@r"] == pytest.approx(1.75 / 6)
    assert m["r_precision"] == pytest.approx(2 / 6)
    assert set(m) == {"recall@1", "recall@2", "recall@3", "recall@4", "map@r", "r_precision"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_separate_queries(backend: str) -> None:
    # Q1 (5 deg, a): gallery labels a a b a b b, R = 3 -> AP@R (1 + 1) / 3, R-Precision 2/3.
    # Q2 (95 deg, b): b a b a a b, R = 3 -> AP@R (1 + 2/3) / 3 = 5/9, R-Precision 2/3.
    m = retrieval_metrics(
        HAND_POINTS,
        HAND_LABELS,
        ks=(1,),
        backend=backend,
        query_embeddings=circle([5, 95]),
        query_labels=np.array(["a", "b"]),
        nmi=False,
    )
    assert m["recall@1"] == 1.0
    assert m["r_precision"] == pytest.approx(2 / 3)
    assert m["map@r"] == pytest.approx(11 / 18)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_is_excluded_by_index_not_by_value(backend: str) -> None:
    # Rows 0 and 1 are the same vector with different labels: each one's nearest other item is the
    # other (similarity 1), a miss; dropping "the first neighbour" by value could drop either.
    x = circle([0, 0, 60, 90, 95])
    labels = np.array([0, 1, 0, 1, 1])
    _, ids = ExactSearch(x, backend).search(torch.from_numpy(x[:2]), 2, torch.tensor([0, 1]))
    assert ids[:, 0].tolist() == [1, 0]
    assert ids[:, 1].tolist() == [2, 2]
    # Queries 0 and 1 miss at rank 1; 2 (60 deg, label 0) finds 0 or 1 first (tied): with either,
    # its first neighbour is labelled 0 or 1, so only queries 3 and 4 hit for sure.
    m = retrieval_metrics(
        x[[0, 1, 3, 4]], labels[[0, 1, 3, 4]], ks=(1,), backend=backend, nmi=False
    )
    assert m["recall@1"] == pytest.approx(2 / 3)  # query 0 has R = 0 and is skipped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_inputs(backend: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Unequal classes, including size-1 classes (their queries have R = 0 and are skipped).
    labels = np.concatenate([np.repeat(np.arange(6), [1, 2, 3, 9, 20, 1]), rng.integers(0, 6, 30)])
    rng.shuffle(labels)
    x = rng.standard_normal((len(labels), 8)).astype(np.float32)
    ks = (1, 2, 4, 8, 16)
    m = retrieval_metrics(x, labels, ks=ks, backend=backend, nmi=False, chunk_size=7)
    expected = reference_retrieval(x, labels, x, labels, ks, same_source=True)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_separate_queries_match_brute_force(backend: str, rng: np.random.Generator) -> None:
    gallery, g_labels = clustered(rng, 5, 12, 16, noise=0.9)
    queries = rng.standard_normal((25, 16)).astype(np.float32)
    q_labels = rng.integers(0, 6, 25)  # label 5 has no gallery item: R = 0, skipped
    assert (q_labels == 5).any()
    ks = (1, 3, 10)
    m = retrieval_metrics(
        gallery,
        g_labels,
        ks=ks,
        backend=backend,
        query_embeddings=queries,
        query_labels=q_labels,
        nmi=False,
    )
    expected = reference_retrieval(queries, q_labels, gallery, g_labels, ks, same_source=False)
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key


def test_backends_agree_on_real_images(fashion_sample: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = fashion_sample
    # A random projection of the pixels: integer pixel values make exact similarity ties likely,
    # and the backends may order tied neighbours differently.
    projection = np.random.default_rng(0).standard_normal((28 * 28, 64))
    x = (images[:600].reshape(600, -1) @ projection).astype(np.float32)
    y = labels[:600]
    faiss_m = retrieval_metrics(x, y, backend="faiss", nmi=False)
    torch_m = retrieval_metrics(x, y, backend="torch", nmi=False, chunk_size=50)
    assert faiss_m == pytest.approx(torch_m, abs=1e-12)
    assert faiss_m == pytest.approx(
        reference_retrieval(x, y, x, y, (1, 2, 4, 8), same_source=True), abs=1e-12
    )


def _pml(query, query_labels, reference=None, reference_labels=None) -> dict[str, float]:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    to_t = lambda a: None if a is None else torch.as_tensor(a)  # noqa: E731
    return calc.get_accuracy(
        to_t(query), to_t(query_labels), to_t(reference), to_t(reference_labels)
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pytorch_metric_learning_on_real_images(
    backend: str, fashion_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = fashion_sample
    x = images[:500].reshape(500, -1).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = labels[:500].astype(np.int64)
    ours = retrieval_metrics(x, y, ks=(1,), backend=backend, nmi=False)
    theirs = _pml(x, y)
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_pytorch_metric_learning_with_lone_queries(
    backend: str, rng: np.random.Generator
) -> None:
    x, y = clustered(rng, 8, 15, 32, noise=0.8)
    y = y.copy()
    y[:3] = [100, 101, 102]  # three classes of size 1
    ours = retrieval_metrics(x, y, ks=(1,), backend=backend, nmi=False)
    theirs = _pml(x, y)
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-9)
    # Separate query / reference sets (In-Shop style).
    q, qy = clustered(np.random.default_rng(7), 8, 4, 32, noise=0.8)
    ours = retrieval_metrics(
        x, y, ks=(1,), backend=backend, nmi=False, query_embeddings=q, query_labels=qy
    )
    theirs = _pml(q, qy, x, y)
    assert ours["map@r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-9)
    assert ours["recall@1"] == pytest.approx(theirs["precision_at_1"], abs=1e-9)


def test_nmi_is_one_for_separated_classes_and_low_for_noise(rng: np.random.Generator) -> None:
    x, y = clustered(rng, 6, 30, 32, noise=0.05)
    for backend in BACKENDS:
        assert retrieval_metrics(x, y, backend=backend)["nmi"] == pytest.approx(1.0)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    assert retrieval_metrics(noise, y)["nmi"] < 0.2


def test_unnormalized_and_float64_inputs_are_normalized(rng: np.random.Generator) -> None:
    x, y = clustered(rng, 4, 10, 8, noise=0.7)
    scaled = x.astype(np.float64) * rng.uniform(0.5, 3.0, (len(x), 1))
    assert retrieval_metrics(scaled, y, nmi=False) == pytest.approx(
        retrieval_metrics(x, y, nmi=False), abs=1e-12
    )
    assert retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), nmi=False) == pytest.approx(
        retrieval_metrics(x, y, nmi=False), abs=1e-12
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_stays_bounded_per_chunk(
    backend: str, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny budget forces many chunks; every search must respect it, even with a class of 150
    # items next to classes of 2 (the chunks follow the depth R of their own queries).
    budget = 64 * 1024
    monkeypatch.setattr(knn_module, "CHUNK_BYTES", budget)
    labels = np.concatenate([np.zeros(150, dtype=int), np.repeat(np.arange(1, 26), 2)])
    x = rng.standard_normal((len(labels), 8)).astype(np.float32)
    calls: list[tuple[int, int]] = []
    original = ExactSearch.search

    def spy(self, queries, k, self_indices=None):  # type: ignore[no-untyped-def]
        calls.append((queries.shape[0], k))
        return original(self, queries, k, self_indices)

    monkeypatch.setattr(ExactSearch, "search", spy)
    m = retrieval_metrics(x, labels, backend=backend, nmi=False)
    per_row_gallery = 4 * len(x) if backend == "torch" else 0
    assert len(calls) > 2
    for rows, k in calls:
        assert rows == 1 or rows * (16 * (k + 1) + per_row_gallery) <= budget
    assert max(k for _, k in calls) == 149  # the big class's R
    assert min(k for _, k in calls) == 8  # small classes search only max(ks) deep
    expected = reference_retrieval(x, labels, x, labels, (1, 2, 4, 8), same_source=True)
    assert m == pytest.approx(expected, abs=1e-12)


def test_progress_bar_can_be_shown(
    rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = clustered(rng, 3, 10, 8, noise=0.5)
    retrieval_metrics(x, y, nmi=False, progress=True)
    assert "retrieval" in capsys.readouterr().err
    retrieval_metrics(x, y, nmi=False, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_inputs_give_clear_errors() -> None:
    x = circle([0, 10, 90, 100])
    y = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="labels has 3 entries but embeddings has 4"):
        retrieval_metrics(x, y[:3])
    bad = x.copy()
    bad[2, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(bad, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        retrieval_metrics(x, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="Recall@4 needs 4 neighbours but the gallery has only 3"):
        retrieval_metrics(x, y, ks=(1, 4))
    with pytest.raises(
        ValueError, match="unknown backend 'annoy'; valid options: auto, faiss, torch"
    ):
        retrieval_metrics(x, y, backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="given together"):
        retrieval_metrics(x, y, query_embeddings=x)
    with pytest.raises(ValueError, match="dimension 3 but embeddings have dimension 2"):
        retrieval_metrics(x, y, query_embeddings=np.ones((2, 3)), query_labels=[0, 1])
    with pytest.raises(ValueError, match="ks must be positive integers"):
        retrieval_metrics(x, y, ks=(0, 1))
    with pytest.raises(ValueError, match="R = 0 for every query"):
        retrieval_metrics(x, np.arange(4), ks=(1,))
    with pytest.raises(ValueError, match="all-zero row"):
        retrieval_metrics(np.zeros((4, 2)), y)
    with pytest.raises(ValueError, match="2-D array"):
        retrieval_metrics(np.ones(4), y)
