"""OpenSetClassifier: fitted from embeddings as documented, saved as data, read back safely."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vmfml.openset import OpenSetClassifier, fit_posterior_kappa


def _clusters(per_class: int, seed: int, dim: int = 12, classes: int = 4, spread: float = 0.35):
    """Unit embeddings around `classes` fixed centres (the same for every seed)."""
    centres = torch.nn.functional.normalize(
        torch.randn(classes, dim, generator=torch.Generator().manual_seed(100)), dim=1
    )
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    emb = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return torch.nn.functional.normalize(emb, dim=1), labels, centres


def test_fit_takes_class_means_per_class_kappa_and_a_threshold_that_keeps_the_stated_share() -> (
    None
):
    emb, labels, _ = _clusters(50, 0)
    val, val_labels, _ = _clusters(40, 1)
    model = OpenSetClassifier.fit(
        ["a", "b", "c", "d"], (emb, labels), (val, val_labels), score="max_cosine", keep_rate=0.9
    )
    for c in range(4):  # normalized class means of the training embeddings
        mean = emb[labels == c].double().mean(0)
        np.testing.assert_allclose(
            model.mean_directions[c].numpy(), (mean / mean.norm()).numpy(), atol=1e-6
        )
        r = float(emb[labels == c].double().mean(0).norm())
        d = emb.shape[1]
        assert float(model.class_kappa[c]) == pytest.approx(r * (d - r * r) / (1 - r * r), rel=1e-9)
    kept = (model.scores(val) <= model.threshold).double().mean().item()
    assert 0.9 <= kept < 0.9 + 1 / len(val) + 1e-9
    assert model.info["fitted_on"] == "held-out images"


def test_posterior_kappa_maximizes_the_held_out_likelihood() -> None:
    emb, labels, _ = _clusters(60, 2)
    mu = torch.nn.functional.normalize(
        torch.stack([emb[labels == c].mean(0) for c in range(4)]), dim=1
    )
    kappa = fit_posterior_kappa(emb, labels, mu)
    cos = emb.double() @ mu.double().t()

    def nll(k: float) -> float:
        return float(torch.nn.functional.cross_entropy(k * cos, labels))

    grid = np.exp(np.linspace(np.log(0.01), np.log(1e4), 4001))
    best = grid[np.argmin([nll(k) for k in grid])]
    assert nll(kappa) <= nll(best) + 1e-6
    assert kappa == pytest.approx(best, rel=0.01)


def test_predict_rejects_what_lies_far_from_every_class() -> None:
    emb, labels, centres = _clusters(80, 3, spread=0.2)
    val, val_labels, _ = _clusters(80, 4, spread=0.2)
    model = OpenSetClassifier.fit(["a", "b", "c", "d"], (emb, labels), (val, val_labels))
    test, test_labels, _ = _clusters(50, 5, spread=0.2)
    # unknowns: directions orthogonal to every class centre
    g = torch.Generator().manual_seed(6)
    other = torch.randn(50, emb.shape[1], generator=g)
    q, _ = torch.linalg.qr(centres.t().double())
    other = torch.nn.functional.normalize(other - (other.double() @ q @ q.t()).float(), dim=1)
    known_pred, unknown_pred = model.predict(test, top_k=2), model.predict(other)
    assert (known_pred.label == test_labels).float().mean() > 0.95
    assert known_pred.unknown.float().mean() < 0.15
    assert unknown_pred.unknown.all()
    assert known_pred.top.shape == (len(test), 2)
    assert torch.all(known_pred.top_probability[:, 0] >= known_pred.top_probability[:, 1])
    off = model.predict(other, reject=False)
    assert not off.unknown.any()


def test_saved_classifier_reads_back_equal_and_weights_only(tmp_path: Path) -> None:
    emb, labels, _ = _clusters(20, 7)
    model = OpenSetClassifier.fit(["a", "b", "c", "d"], (emb, labels), score="vmf_likelihood")
    assert model.info["fitted_on"] == "training images"
    path = tmp_path / "classifier.pt"
    model.save(path)
    torch.load(path, weights_only=True)  # plain data only
    back = OpenSetClassifier.load(path)
    assert back.class_names == model.class_names and back.score == "vmf_likelihood"
    assert back.threshold == model.threshold and back.kappa == model.kappa
    assert (
        back.configured(score="knn", keep_rate=0.5).threshold
        == model.configured(score="knn", keep_rate=0.5).threshold
    )
    assert torch.equal(back.scores(emb), model.scores(emb))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_classifier_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "classifier.pt"
    torch.save({"format": "vmfml-classifier", "x": _Payload(marker)}, path, pickle_module=pickle)
    with pytest.raises(ValueError, match="cannot read classifier file"):
        OpenSetClassifier.load(path)
    assert not marker.exists()
