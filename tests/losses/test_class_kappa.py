"""Per-class concentrations (class_kappa): the exact vMF mixture posterior, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import ive, logsumexp

from vmfml.losses import VMFLoss, create_loss, vmf_mixture_logits
from vmfml.train.config import load_config

C, D = 3, 6


def log_normalizer(kappa: np.ndarray, d: int) -> np.ndarray:
    """log C_d(kappa) in float64 from scipy's exponentially scaled Bessel function."""
    nu = d / 2 - 1
    return nu * np.log(kappa) - d / 2 * np.log(2 * np.pi) - (np.log(ive(nu, kappa)) + kappa)


def clustered(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings of 3 classes of different spread: class 0 tight, class 2 broad."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(C, D, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.arange(60) % C
    noise = torch.randn(60, D, generator=gen, dtype=torch.float64)
    spread = torch.tensor([0.1, 0.4, 1.2], dtype=torch.float64)[labels, None]
    return F.normalize(centres[labels] + spread * noise, dim=1), labels


def test_mixture_logits_match_scipy() -> None:
    x, _ = clustered()
    mu = F.normalize(torch.randn(C, D, dtype=torch.float64), dim=1)
    kappas = torch.tensor([3.0, 40.0, 700.0], dtype=torch.float64)
    got = vmf_mixture_logits(x, mu, kappas).numpy()
    want = log_normalizer(kappas.numpy(), D)[None, :] + kappas.numpy() * (x @ mu.T).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("shrink", [0.5, 1.0])
def test_loss_is_the_exact_mixture_posterior(shrink: float) -> None:
    x, labels = clustered()
    loss = VMFLoss(C, D, kappa=16.0, class_kappa=shrink).double()
    loss.directions.observe(x, labels)
    loss.end_period(lambda: (_ for _ in ()).throw(AssertionError("accumulate needs no pass")))
    # The estimates: Banerjee et al.'s kappa from each class's mean resultant length.
    estimates = []
    for c in range(C):
        r = float(x[labels == c].sum(0).norm()) / int((labels == c).sum())
        estimates.append(r * (D - r * r) / (1 - r * r))
    np.testing.assert_allclose(loss.directions.concentration.numpy(), estimates, rtol=1e-12)
    assert estimates[0] > estimates[1] > estimates[2]  # the tight class is the concentrated one
    # kappa_c = kappa (k_c / geometric mean)^shrink: the shared kappa stays the typical one.
    log_k = np.log(estimates)
    kappas = 16.0 * np.exp(shrink * (log_k - log_k.mean()))
    np.testing.assert_allclose(loss.class_kappas().numpy(), kappas, rtol=1e-12)
    mu = loss.directions.mu.numpy()
    logits = log_normalizer(kappas, D)[None, :] + kappas * (x.numpy() @ mu.T)
    want = np.mean(logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels.numpy()])
    assert float(loss(x, labels)) == pytest.approx(want, rel=1e-10)


def test_zero_is_the_shared_kappa_loss() -> None:
    x, labels = clustered()
    plain, per_class = VMFLoss(C, D).double(), VMFLoss(C, D, class_kappa=0.0).double()
    for loss in (plain, per_class):
        loss.directions.observe(x, labels)
        loss.end_period(lambda: (torch.zeros(C, D), torch.zeros(C)))
    assert per_class.class_kappas() is None
    assert torch.equal(plain(x, labels), per_class(x, labels))


def test_before_any_estimate_every_class_has_the_shared_kappa() -> None:
    x, labels = clustered()
    loss = VMFLoss(C, D, class_kappa=1.0).double()
    assert loss.class_kappas() is None
    assert float(loss(x, labels)) == pytest.approx(float(VMFLoss(C, D).double()(x, labels)))


def test_needs_a_strategy_that_refreshes_from_sums() -> None:
    for directions in ("ema", "learned"):
        with pytest.raises(ValueError, match="class_kappa"):
            create_loss("vmf", C, D, directions=directions, class_kappa=0.5)
    with pytest.raises(ValueError, match="class_kappa"):
        VMFLoss(C, D, class_kappa=1.5)
    with pytest.raises(ValueError, match="--class-kappa does not apply"):
        load_config(None, {"directions": "ema", "class_kappa": 0.5})
    with pytest.raises(ValueError, match="--class-kappa does not apply"):
        load_config(None, {"loss": "triplet", "class_kappa": 0.5})
    config = load_config(None, {"directions": "global", "class_kappa": 0.5})
    assert config.loss_options()["class_kappa"] == 0.5


def test_old_state_without_estimates_loads() -> None:
    loss = VMFLoss(C, D, class_kappa=0.5)
    state = loss.state_dict()
    del state["directions.concentration"]
    fresh = VMFLoss(C, D, class_kappa=0.5)
    fresh.load_state_dict(state)
    assert fresh.class_kappas() is None
