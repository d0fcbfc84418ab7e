"""Mean resultant length and the Banerjee et al. kappa estimate against hand and exact values."""

from __future__ import annotations

import math

import pytest
import scipy.optimize
import torch

from vmfml.directions import estimate_kappa, mean_resultant_length, per_class_concentration

mpmath = pytest.importorskip("mpmath")


def exact_mle_kappa(R: float, dim: int) -> float:
    """Solve A_d(kappa) = I_(d/2)(kappa) / I_(d/2-1)(kappa) = R for kappa (the exact MLE)."""

    def gap(kappa: float) -> float:
        return float(mpmath.besseli(dim / 2, kappa) / mpmath.besseli(dim / 2 - 1, kappa)) - R

    return scipy.optimize.brentq(gap, 1e-8, 1e5)


def test_mean_resultant_length_by_hand() -> None:
    sums = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    counts = torch.tensor([10, 0, 1])
    R = mean_resultant_length(sums, counts)
    assert R[0].item() == pytest.approx(0.5)
    assert math.isnan(R[1].item())
    assert R[2].item() == 1.0


def test_estimate_kappa_formula_by_hand() -> None:
    # R (d - R^2) / (1 - R^2) with R = 0.9, d = 3: 0.9 * 2.19 / 0.19
    assert estimate_kappa(0.9, 3).item() == pytest.approx(0.9 * 2.19 / 0.19, rel=1e-14)
    assert estimate_kappa(0.0, 128).item() == 0.0
    assert estimate_kappa(1.0, 128).item() == math.inf
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate_kappa(1.5, 3)


@pytest.mark.parametrize(("R", "dim"), [(0.9, 3), (0.5, 3), (0.5, 128), (0.8, 128), (0.3, 512)])
def test_estimate_kappa_is_close_to_the_exact_mle(R: float, dim: int) -> None:
    exact = exact_mle_kappa(R, dim)
    assert estimate_kappa(R, dim).item() == pytest.approx(exact, rel=0.05)


def test_per_class_concentration_report() -> None:
    sums = torch.tensor([[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    counts = torch.tensor([10, 0, 2])
    report = per_class_concentration(sums, counts)
    assert report["count"] == [10, 0, 2]
    R0, R2 = 0.6, math.sqrt(2) / 2
    assert report["mean_resultant_length"][0] == pytest.approx(R0)
    assert math.isnan(report["kappa"][1])
    assert report["kappa"][2] == pytest.approx(R2 * (3 - 0.5) / 0.5)
    pooled = (6 + math.sqrt(2)) / 12
    assert report["pooled_mean_resultant_length"] == pytest.approx(pooled)
    assert report["pooled_kappa"] == pytest.approx(pooled * (3 - pooled**2) / (1 - pooled**2))
    assert report["min_kappa"] == pytest.approx(R0 * (3 - R0**2) / (1 - R0**2))
    assert report["max_kappa"] == pytest.approx(report["kappa"][2])
