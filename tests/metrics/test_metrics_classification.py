from __future__ import annotations

import numpy as np
import pytest
import torch

from vmfml.metrics import (
    classification_metrics,
    expected_calibration_error,
    nearest_direction_accuracy,
)


def test_ece_hand_computed() -> None:
    # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]:
    # bin 1: {.25: wrong} -> |0 - .25| * 1/5 ; bin 3: {.62, .55: right} -> |1 - .585| * 2/5 ;
    # bin 4: {.95 right, .91 wrong} -> |.5 - .93| * 2/5. Total .05 + .166 + .172 = .388.
    conf = [0.95, 0.91, 0.62, 0.55, 0.25]
    correct = [1, 0, 1, 1, 0]
    assert expected_calibration_error(conf, correct, n_bins=4) == pytest.approx(0.388)


def reference_metrics(logits: np.ndarray, labels: np.ndarray, n_bins: int) -> dict[str, float]:
    """Guo et al.'s loop over bins, in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    acc = pred == labels
    ece = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(acc[inside].mean() - conf[inside].mean())
    nll = -np.log(p[np.arange(len(labels)), labels]).mean()
    return {"accuracy": float(acc.mean()), "ece": float(ece), "nll": float(nll)}


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_classification_metrics_match_reference(n_bins: int, rng: np.random.Generator) -> None:
    logits = rng.standard_normal((300, 7)) * 3
    labels = rng.integers(0, 7, 300)
    ours = classification_metrics(
        torch.from_numpy(logits).float(), torch.from_numpy(labels), n_bins
    )
    assert ours == pytest.approx(reference_metrics(logits, labels, n_bins), abs=1e-6)


def test_perfectly_confident_and_right_has_zero_ece_and_nll() -> None:
    m = classification_metrics(torch.tensor([[100.0, 0.0], [0.0, 100.0]]), [0, 1])
    assert m == pytest.approx({"accuracy": 1.0, "ece": 0.0, "nll": 0.0}, abs=1e-12)


def test_nearest_direction_accuracy() -> None:
    mu = torch.eye(3)
    x = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.9], [0.0, 1.0, 0.1], [1.0, 0.0, 0.1]])
    assert nearest_direction_accuracy(x, mu * 5, [0, 2, 1, 2]) == pytest.approx(0.75)


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match="labels has 1 entries but there are 2 rows"):
        classification_metrics(torch.zeros(2, 3), [0])
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        classification_metrics(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(torch.tensor([[0.0, float("nan")]]), [0])
    with pytest.raises(ValueError, match="C >= 2"):
        classification_metrics(torch.zeros(2, 1), [0, 0])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([1.5], [1])
