"""Open-set scores and metrics against independent references: pytorch-ood's OODMetrics for the
metrics, scipy in float64 for the vMF likelihood, a brute-force sort for KNN and thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from scipy.special import ive, logsumexp, softmax

from vmfml.openset import (
    class_log_likelihoods,
    knn_distance,
    open_set_metrics,
    threshold_at_keep_rate,
    unknown_scores,
)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1
    )


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_pytorch_ood(seed: int, ties: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    known = torch.randn(300, generator=g, dtype=torch.float64)
    unknown = torch.randn(120, generator=g, dtype=torch.float64) + 1.0
    if ties:  # rounded scores: many exact ties across the two sets
        known, unknown = known.round(decimals=1), unknown.round(decimals=1)
    ours = open_set_metrics(known, unknown)
    reference = OODMetrics()
    reference.update(
        torch.cat([known, unknown]),
        torch.cat([torch.zeros(300, dtype=torch.long), -torch.ones(120, dtype=torch.long)]),
    )
    theirs = reference.compute()
    assert ours["auroc"] == pytest.approx(theirs["AUROC"], abs=1e-6)
    assert ours["aupr_in"] == pytest.approx(theirs["AUPR-IN"], abs=1e-6)
    assert ours["aupr_out"] == pytest.approx(theirs["AUPR-OUT"], abs=1e-6)
    assert ours["fpr95tpr"] == pytest.approx(theirs["FPR95TPR"], abs=1e-6)


def test_fpr_at_95_keeps_95_percent_of_the_known_and_counts_unknowns_let_through() -> None:
    g = torch.Generator().manual_seed(3)
    known = torch.randn(400, generator=g, dtype=torch.float64)
    unknown = torch.randn(250, generator=g, dtype=torch.float64) + 1.5
    t = threshold_at_keep_rate(known, 0.95)
    kept = (known <= t).double().mean().item()
    assert kept >= 0.95
    below = known[known < t]  # the next lower threshold keeps too few
    assert (known <= below.max()).double().mean().item() < 0.95
    let_through = (unknown <= t).double().mean().item()
    assert open_set_metrics(known, unknown)["fpr_at_95"] == pytest.approx(let_through, abs=1e-12)


def test_metrics_refuse_empty_sets_and_nan() -> None:
    with pytest.raises(ValueError, match="empty"):
        open_set_metrics(torch.tensor([0.1]), torch.tensor([]))
    with pytest.raises(ValueError, match="NaN"):
        open_set_metrics(torch.tensor([0.1, math.nan]), torch.tensor([1.0]))


def test_class_log_likelihood_equals_scipy_float64() -> None:
    dim = 16
    x, mu = _unit(7, dim, 0), _unit(4, dim, 1)
    kappa = torch.tensor([0.5, 4.0, 30.0, 200.0], dtype=torch.float64)
    ours = class_log_likelihoods(x, mu, kappa).numpy()
    nu = dim / 2 - 1
    k = kappa.numpy()
    # log C_d(k) = nu log k - (d/2) log 2pi - log I_nu(k); ive(nu, k) = I_nu(k) e^-k
    log_c = nu * np.log(k) - dim / 2 * np.log(2 * np.pi) - (np.log(ive(nu, k)) + k)
    expected = log_c[None, :] + k[None, :] * (x.numpy() @ mu.numpy().T)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-9)


def test_scores_by_brute_force() -> None:
    dim = 8
    x, mu, ref = _unit(9, dim, 2), _unit(3, dim, 3), _unit(40, dim, 4)
    kappa = 12.0
    cos = x.numpy() @ mu.numpy().T
    np.testing.assert_allclose(
        unknown_scores("max_cosine", x, mu, kappa).numpy(), -cos.max(1), rtol=1e-12
    )
    np.testing.assert_allclose(
        unknown_scores("max_posterior", x, mu, kappa).numpy(),
        -softmax(kappa * cos, axis=1).max(1),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        unknown_scores("energy", x, mu, kappa).numpy(), -logsumexp(kappa * cos, axis=1), rtol=1e-12
    )
    # knn: the 5th smallest Euclidean distance to the reference rows
    dists = np.linalg.norm(x.numpy()[:, None, :] - ref.numpy()[None, :, :], axis=2)
    np.testing.assert_allclose(
        unknown_scores("knn", x, mu, kappa, reference=ref, k=5).numpy(),
        np.sort(dists, axis=1)[:, 4],
        atol=1e-5,  # the dot products run in float32
    )


def test_knn_on_the_reference_itself_skips_each_rows_own_match() -> None:
    ref = _unit(30, 6, 5)
    dists = np.linalg.norm(ref.numpy()[:, None, :] - ref.numpy()[None, :, :], axis=2)
    np.testing.assert_allclose(
        knn_distance(ref, ref, 1, exclude_self=True).numpy(),
        np.sort(dists, axis=1)[:, 1],
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="k must be in"):
        knn_distance(ref, ref, 30, exclude_self=True)


def test_unknown_score_names_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown score 'maxcos'"):
        unknown_scores("maxcos", _unit(2, 4, 0), _unit(2, 4, 1), 1.0)
