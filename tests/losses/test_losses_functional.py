"""log I_nu, log C_d(kappa), vMF logits and loss against scipy/mpmath float64 and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import torch
import torch.nn.functional as F

from vmfml.losses.functional import log_bessel_iv, log_vmf_normalizer, vmf_logits, vmf_loss

mpmath = pytest.importorskip("mpmath")

DIMS = [2, 3, 10, 128, 512, 4096]
KAPPAS = [1e-6, 1e-3, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]


def reference_log_iv(nu: float, x: float) -> float:
    """log I_nu(x) from scipy's exponentially scaled ive; mpmath where ive under/overflows."""
    scaled = sp.ive(nu, x)
    if np.isfinite(scaled) and scaled > 1e-280:
        return math.log(scaled) + x
    with mpmath.workdps(30):
        return float(mpmath.log(mpmath.besseli(nu, x)))


def reference_log_normalizer(kappa: float, dim: int) -> float:
    nu = dim / 2 - 1
    return nu * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - reference_log_iv(nu, kappa)


def reference_bessel_ratio(nu: float, x: float) -> float:
    """I_(nu+1)(x) / I_nu(x)."""
    lo, hi = sp.ive(nu, x), sp.ive(nu + 1, x)
    if lo > 1e-280 and hi > 1e-280:
        return hi / lo
    with mpmath.workdps(30):
        return float(mpmath.besseli(nu + 1, x) / mpmath.besseli(nu, x))


def log_sphere_area(dim: int) -> float:
    return math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


@pytest.mark.parametrize("dim", DIMS)
def test_log_vmf_normalizer_matches_scipy(dim: int) -> None:
    kappa = torch.tensor(KAPPAS, dtype=torch.float64)
    got = log_vmf_normalizer(kappa, dim)
    want = torch.tensor([reference_log_normalizer(k, dim) for k in KAPPAS], dtype=torch.float64)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dim", DIMS)
def test_log_vmf_normalizer_tends_to_uniform_density(dim: int) -> None:
    got = log_vmf_normalizer(torch.tensor([0.0, 1e-9], dtype=torch.float64), dim)
    want = torch.full((2,), -log_sphere_area(dim), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 2.5, 7.0, 29.5, 30.0, 63.0, 255.5, 2047.0, 9999.0])
def test_log_bessel_iv_matches_scipy(nu: float) -> None:
    xs = [1e-6, 1e-2, 1.0, 17.0, 29.0, 150.0, 1e3, 1e4, 1e5]
    got = log_bessel_iv(nu, torch.tensor(xs, dtype=torch.float64))
    want = torch.tensor([reference_log_iv(nu, x) for x in xs], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_log_bessel_iv_float32_keeps_dtype_and_accuracy() -> None:
    x64 = torch.tensor([1e-3, 0.5, 20.0, 700.0, 5e4], dtype=torch.float64)
    got = log_bessel_iv(63.0, x64.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, log_bessel_iv(63.0, x64).float(), rtol=1e-6, atol=1e-5)


def test_log_bessel_iv_at_zero() -> None:
    zero = torch.zeros(1, dtype=torch.float64)
    assert log_bessel_iv(0.0, zero).item() == 0.0
    assert log_bessel_iv(1.5, zero).item() == -math.inf


@pytest.mark.parametrize("nu", [0.0, 0.5, 3.0, 29.5, 63.0, 1000.0])
def test_log_bessel_iv_gradcheck(nu: float) -> None:
    x = torch.tensor([0.05, 0.9, 13.0, 80.0, 900.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv(nu, t), (x,))


@pytest.mark.parametrize("nu", [0.0, 0.5, 4.0, 63.0, 2047.0])
def test_log_bessel_iv_gradient_is_bessel_ratio(nu: float) -> None:
    xs = [1e-6, 1e-2, 1.0, 50.0, 3e3, 1e5]
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_bessel_iv(nu, x).sum(), x)
    want = torch.tensor([reference_bessel_ratio(nu, v) + nu / v for v in xs], dtype=torch.float64)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("dim", [2, 3, 128, 4096])
def test_log_vmf_normalizer_gradient_is_minus_mean_resultant_length(dim: int) -> None:
    # d/dkappa log C_d(kappa) = -A_d(kappa) = -I_(d/2)(kappa) / I_(d/2-1)(kappa); at tiny kappa
    # this is ~ -kappa / d, which a naive nu/kappa - I'/I difference would lose to cancellation.
    kappas = [1e-6, 0.3, 40.0, 5e3, 1e5]
    kappa = torch.tensor(kappas, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_vmf_normalizer(kappa, dim).sum(), kappa)
    want = torch.tensor([-reference_bessel_ratio(dim / 2 - 1, k) for k in kappas])
    torch.testing.assert_close(grad, want.double(), rtol=1e-9, atol=0.0)
    k = torch.tensor([0.2, 7.0, 300.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_vmf_normalizer(t, dim), (k,))


def test_log_vmf_normalizer_is_a_density() -> None:
    # On S^1 the density C_2(kappa) exp(kappa cos t) must integrate to 1 over t in [0, 2 pi).
    t = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)[:-1]
    for kappa in [0.5, 5.0, 50.0]:
        log_c = log_vmf_normalizer(torch.tensor(kappa, dtype=torch.float64), 2)
        total = torch.exp(log_c + kappa * torch.cos(t)).mean() * 2 * math.pi
        assert abs(total.item() - 1.0) < 1e-10


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="order nu"):
        log_bessel_iv(-1.0, torch.ones(1))
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        log_vmf_normalizer(torch.ones(1), 1)


def test_vmf_logits_and_loss_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    mu = F.normalize(torch.randn(4, 5, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    kappa = 7.5
    logits = vmf_logits(x, mu, kappa)
    total = 0.0
    for i in range(6):
        row = [kappa * sum(x[i, k].item() * mu[c, k].item() for k in range(5)) for c in range(4)]
        for c in range(4):
            assert abs(logits[i, c].item() - row[c]) < 1e-12
        log_norm = math.log(sum(math.exp(v) for v in row))
        total += log_norm - row[labels[i]]
    assert abs(vmf_loss(x, labels, mu, kappa).item() - total / 6) < 1e-12


def test_log_vmf_normalizer_dtypes() -> None:
    assert log_vmf_normalizer(16.0, 128).dtype == torch.get_default_dtype()
    got = log_vmf_normalizer(torch.tensor([16.0, 300.0]), 128)
    assert got.dtype == torch.float32
    want = torch.tensor([reference_log_normalizer(k, 128) for k in (16.0, 300.0)])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0.0)
