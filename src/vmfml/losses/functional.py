"""Pure math of the von Mises-Fisher loss: logits, loss, and the log-normalizer log C_d(kappa).

A vMF distribution on the unit sphere S^(d-1) has density C_d(kappa) exp(kappa mu . x) with

    C_d(kappa) = kappa^(d/2 - 1) / ((2 pi)^(d/2) I_(d/2 - 1)(kappa)),

where I_nu is the modified Bessel function of the first kind. For embedding sizes used in deep
metric learning (d = 128 ... 4096) and the kappas a network reaches, I_nu over- or underflows every
floating-point format, so everything here works with logarithms. The Bessel function is evaluated
with the power series for small arguments, the uniform asymptotic (Debye) expansion for large
orders, and for small orders by running the three-term recurrence downwards from a large order,
where Debye is accurate. All are written with differentiable torch operations, so autograd gives
d/dx log I_nu(x) = I_(nu+1)/I_nu + nu/x, and all leave out the nu log x term, which
log_vmf_normalizer cancels analytically.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import check_batch, check_rows, refuse_unusable

__all__ = [
    "arc_margin",
    "log_bessel_iv",
    "log_vmf_normalizer",
    "vmf_logits",
    "vmf_logits_unchecked",
    "vmf_loss",
    "vmf_mixture_logits",
    "vmf_mixture_logits_of_cosines",
    "vmf_mixture_logits_unchecked",
    "vmf_subcentre_logits",
]

# Orders at or above this use the Debye expansion directly; smaller orders recur down from here.
# With _DEBYE_TERMS terms (u_0 ... u_10) the first omitted term is u_11(t) / nu^11, and
# |u_11| < 4 on [0, 1], so at nu >= 30 the truncation error is below 3e-16 relative for every x:
# the function is as accurate as float64 arithmetic allows (checked against scipy and mpmath
# in tests/losses/test_losses_functional.py).
_DEBYE_MIN_ORDER = 30.0
_DEBYE_TERMS = 11
# Below this argument the power series is used instead: its terms fall at least as fast as
# 1 / (k!)^2, so _SERIES_TERMS terms reach float64 precision for x <= 2, and unlike the
# recurrence it keeps full relative accuracy in log I_nu(x) - log I_nu(0+) as x -> 0
# (e.g. log I_0(1e-6) = 2.5e-13).
_SERIES_MAX_X = 2.0
_SERIES_TERMS = 13


def _debye_polynomials(count: int) -> list[list[float]]:
    """Coefficients (lowest power first) of the Debye polynomials u_0(t) ... u_(count-1)(t).

    Generated exactly with rational arithmetic from the recurrence (DLMF 10.41.9)
        u_(k+1)(t) = t^2 (1 - t^2) u_k'(t) / 2 + (1/8) int_0^t (1 - 5 s^2) u_k(s) ds,
    so no table of magic constants has to be trusted.
    """
    polys: list[list[Fraction]] = [[Fraction(1)]]
    for _ in range(count - 1):
        u = polys[-1]
        nxt = [Fraction(0)] * (len(u) + 3)
        for power, coef in enumerate(u):
            if power > 0:  # t^2 (1 - t^2) * power * coef * t^(power - 1) / 2
                nxt[power + 1] += coef * power / 2
                nxt[power + 3] -= coef * power / 2
            nxt[power + 1] += coef / (8 * (power + 1))  # (1/8) int t^power
            nxt[power + 3] -= coef * 5 / (8 * (power + 3))  # -(5/8) int t^(power + 2)
        polys.append(nxt)
    return [[float(c) for c in p] for p in polys]


_DEBYE_U = _debye_polynomials(_DEBYE_TERMS)


@functools.lru_cache(maxsize=256)
def _debye_series_coefficients(nu: float) -> tuple[float, ...]:
    """Coefficients in t of sum_k u_k(t) / nu^k: one polynomial, so one Horner pass per call."""
    coefs = [0.0] * len(_DEBYE_U[-1])
    for k, poly in enumerate(_DEBYE_U):
        for power, c in enumerate(poly):
            coefs[power] += c / nu**k
    return tuple(coefs)


def _working_dtype(x: Tensor) -> torch.dtype:
    # float64 wherever the device has it: kappa is a scalar or a [C] vector, so the cost is nil,
    # and the sums of up to ~50 logarithms below would leave float32 with ~1e-6 accuracy.
    return torch.float32 if x.device.type == "mps" else torch.float64


def _log_iv_minus_power_debye(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) - nu log x by the Debye expansion (DLMF 10.41.3); accurate for nu >= 30.

    With z = x / nu, s = sqrt(1 + z^2), t = 1 / s:
        log I_nu(nu z) = nu (s - log(1 + s) + log z) - log(2 pi nu) / 2 - log(s) / 2
                         + log sum_k u_k(t) / nu^k.
    The nu log x term is left out (the callers add it or cancel it analytically), so the result
    is finite at x = 0 and its derivative has no cancellation at small x.
    """
    z = x / nu
    s = torch.sqrt(1.0 + z * z)
    t = 1.0 / s
    series = torch.zeros_like(x)
    for coef in reversed(_debye_series_coefficients(nu)):  # Horner in t
        series = series * t + coef
    return (
        nu * (s - torch.log1p(s))
        - nu * math.log(nu)
        - 0.5 * math.log(2.0 * math.pi * nu)
        - 0.5 * torch.log(s)
        + torch.log(series)
    )


def _log_iv_minus_power_series(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) - nu log x by the power series (DLMF 10.25.2), for small x.

        I_nu(x) = (x/2)^nu / Gamma(nu + 1) * (1 + sum_(k>=1) (x^2/4)^k / (k! (nu+1)_k)),
    the bracket summed by Horner's rule from the last term, so that log1p sees the small tail.
    """
    y = 0.25 * x * x
    tail = torch.zeros_like(x)
    for k in range(_SERIES_TERMS, 0, -1):
        tail = y / (k * (nu + k)) * (1.0 + tail)
    return torch.log1p(tail) - nu * math.log(2.0) - math.lgamma(nu + 1.0)


def _log_iv_minus_power(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) - nu log x for any order nu >= 0 (x >= 0, in the working dtype)."""
    small = x <= _SERIES_MAX_X
    # Both branches are evaluated on every element (a clamped input keeps the unused one finite,
    # so no NaN leaks into the gradient through torch.where).
    series = _log_iv_minus_power_series(nu, x.clamp(max=_SERIES_MAX_X))
    return torch.where(small, series, _log_iv_minus_power_large(nu, x))


def _log_iv_minus_power_large(nu: float, x: Tensor) -> Tensor:
    """log I_nu(x) - nu log x for any order nu >= 0 and x >= 0, accurate to ~1e-14 absolute.

    Orders below _DEBYE_MIN_ORDER use the recurrence I_(m-1)(x) = (2m / x) I_m(x) + I_(m+1)(x)
    run downwards from nu' = nu + M >= _DEBYE_MIN_ORDER. Downward is the stable direction for I
    (it is the minimal solution as the order grows), so rounding errors shrink at every step.
    In the scaled form q_j = x I_(nu+j)(x) / I_(nu+j+1)(x) = 2 (nu + j + 1) + x^2 / q_(j+1)
    every term is positive: no cancellation for any x, and the result is
        log I_nu(x) - nu log x = (log I_nu'(x) - nu' log x) + sum_(j<M) log q_j.
    """
    if nu >= _DEBYE_MIN_ORDER:
        return _log_iv_minus_power_debye(nu, x)
    steps = math.ceil(_DEBYE_MIN_ORDER - nu)
    top = nu + steps
    top_scaled = _log_iv_minus_power_debye(top, x)
    q = torch.exp(top_scaled - _log_iv_minus_power_debye(top + 1.0, x))
    x2 = x * x
    total = top_scaled
    for j in range(steps - 1, -1, -1):
        q = 2.0 * (nu + j + 1.0) + x2 / q
        total = total + torch.log(q)
    return total


def _check_order(nu: float) -> float:
    nu = float(nu)
    if not math.isfinite(nu) or nu < 0:
        raise ValueError(f"Bessel order nu must be a finite number >= 0, got {nu}")
    return nu


def _as_non_negative(values: Tensor | float, name: str) -> Tensor:
    """`values` as a tensor (a number: of the default dtype), refused unless every value is a
    finite number >= 0."""
    dtype = values.dtype if isinstance(values, Tensor) else torch.get_default_dtype()
    t = torch.as_tensor(values, dtype=dtype)
    if t.numel() and not bool((torch.isfinite(t) & (t >= 0)).all()):
        bad = t[~(torch.isfinite(t) & (t >= 0))].flatten()[0]
        raise ValueError(f"{name} must be finite numbers >= 0, got {float(bad)}")
    return t


def _check_mu(mu: Tensor) -> None:
    """Mean directions mu [C, D]: floating point, finite, none all zero."""
    if not isinstance(mu, Tensor) or mu.dim() != 2:
        got = list(mu.shape) if isinstance(mu, Tensor) else type(mu).__name__
        raise ValueError(f"mu must be a tensor [C, D] of mean directions, got {got}")
    check_rows(mu, mu.shape[1], directional=True, name="mu")


def _check_directions(x: Tensor, mu: Tensor) -> None:
    """Unit embeddings x [B, D] and mean directions mu [C, D] of the same D, both usable."""
    _check_mu(mu)
    check_rows(x, mu.shape[1], directional=True, name="x")


def log_bessel_iv(nu: float, x: Tensor | float) -> Tensor:
    """log I_nu(x), the log of the modified Bessel function of the first kind.

    Stable for orders nu in [0, ~1e4] and arguments x in [1e-6, 1e5] (and beyond: nothing over-
    or underflows, unlike scipy.special.iv), differentiable in x with autograd.

    Args:
        nu: the order, a Python number >= 0.
        x: arguments >= 0, any shape; float32 or float64 (computed in float64 either way).

    Returns:
        log I_nu(x), same shape and dtype as x (-inf at x = 0 for nu > 0; 0 at x = 0 for nu = 0).

    Example (I_(1/2)(x) = sqrt(2 / (pi x)) sinh x):
        >>> x = torch.tensor([1.0, 1e4], dtype=torch.float64)
        >>> log_bessel_iv(0.5, x)
        tensor([-6.4352e-02,  9.9945e+03], dtype=torch.float64)
        >>> round(0.5 * math.log(2 / math.pi) + math.log(math.sinh(1.0)), 8)
        -0.06435199
    """
    nu = _check_order(nu)
    x = _as_non_negative(x, "x")
    work = x.to(_working_dtype(x))
    out = torch.special.xlogy(torch.tensor(nu, dtype=work.dtype), work)
    return (out + _log_iv_minus_power(nu, work)).to(x.dtype)


def log_vmf_normalizer(kappa: Tensor | float, dim: int) -> Tensor:
    """log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_(d/2-1)(kappa).

    The (d/2 - 1) log kappa term is cancelled analytically against the same term inside
    log I_(d/2-1), so the result is accurate down to kappa = 0, where it equals
    -log |S^(d-1)| = lgamma(d/2) - log 2 - (d/2) log pi (the uniform density on the sphere),
    and its gradient -I_(d/2)(kappa) / I_(d/2-1)(kappa) has no cancellation either.

    Args:
        kappa: concentrations >= 0, any shape (a float gives a 0-d tensor of the default dtype).
        dim: the ambient dimension d >= 2 of the sphere S^(d-1) (the embedding size).

    Returns:
        log C_d(kappa), same shape and dtype as kappa.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2 (the embedding size), got {dim!r}")
    return _log_vmf_normalizer(_as_non_negative(kappa, "kappa"), dim)


def _log_vmf_normalizer(kappa: Tensor, dim: int) -> Tensor:
    work = kappa.to(_working_dtype(kappa))
    out = -0.5 * dim * math.log(2.0 * math.pi) - _log_iv_minus_power(0.5 * dim - 1.0, work)
    return out.to(kappa.dtype)


def vmf_logits(x: Tensor, mu: Tensor, kappa: Tensor | float) -> Tensor:
    """Class logits kappa mu_c . x of a shared-kappa vMF mixture (the softmax gives the posterior).

    Args:
        x: unit embeddings [B, D].
        mu: unit mean directions [C, D].
        kappa: the concentration, a number or a 0-d tensor (a [C] tensor gives per-class kappas).

    Returns:
        logits [B, C].
    """
    _check_directions(x, mu)
    return vmf_logits_unchecked(x, mu, kappa)


def vmf_logits_unchecked(x: Tensor, mu: Tensor, kappa: Tensor | float) -> Tensor:
    """`vmf_logits` without its input checks, for a caller that has made them (VMFLoss): nothing
    is read back from the device."""
    return kappa * (x @ mu.t())


def vmf_mixture_logits(x: Tensor, mu: Tensor, kappas: Tensor) -> Tensor:
    """Class logits log C_d(kappa_c) + kappa_c mu_c . x of a vMF mixture with one concentration
    per class and equal priors: their softmax is the exact posterior p(c | x).

    With per-class kappas the normalizers no longer cancel: a broad class (small kappa_c) has a
    larger normalizer and wins the points far from every mean, a tight class only those near its
    own.

    Args:
        x: unit embeddings [B, D].
        mu: unit mean directions [C, D].
        kappas: concentrations [C], > 0.

    Returns:
        logits [B, C], in the dtype of x.
    """
    _check_directions(x, mu)
    if not isinstance(kappas, Tensor) or kappas.shape != (mu.shape[0],):
        raise ValueError(
            f"kappas must be a tensor of shape [{mu.shape[0]}] (one per class), got "
            f"{list(kappas.shape) if isinstance(kappas, Tensor) else type(kappas).__name__}"
        )
    _as_non_negative(kappas, "kappas")
    return vmf_mixture_logits_unchecked(x, mu, kappas)


def vmf_mixture_logits_unchecked(x: Tensor, mu: Tensor, kappas: Tensor) -> Tensor:
    """`vmf_mixture_logits` without its input checks, for a caller that has made them (VMFLoss);
    a diverged kappa then gives NaN logits, which the training loop stops on."""
    return vmf_mixture_logits_of_cosines(x @ mu.t(), kappas, x.shape[1])


def vmf_mixture_logits_of_cosines(cosines: Tensor, kappas: Tensor, dim: int) -> Tensor:
    """log C_d(kappa_c) + kappa_c cos_c from the cosines [B, C] to the mean directions (those of
    `vmf_mixture_logits`, or with the margin of `arc_margin` on the true class)."""
    normalizers = _log_vmf_normalizer(kappas.to(torch.float64), dim).to(cosines.dtype)
    return normalizers + kappas.to(cosines.dtype) * cosines


def arc_margin(cosines: Tensor, labels: Tensor, margin: float) -> Tensor:
    """The cosines [B, C] (or [B, C, K], K sub-centres per class) with those of each row's true
    class replaced by cos(theta + m), the additive angular margin of ArcFace (Deng et al., CVPR
    2019), theta = arccos of the cosine.

    Where theta + m would pass pi, cos(theta + m) would rise again as theta grows; there the
    cosine is cos(theta) - m sin(m) instead, as in the ArcFace authors' code and
    pytorch-metric-learning, so that the true class's logit keeps falling with its angle.
    Computed as cos(theta) cos(m) - sin(theta) sin(m), with sin(theta) = sqrt(1 - cos^2) kept
    above 1e-12 under the root, so that the gradient stays finite at cos = +-1.

    Args:
        cosines: [B, C] or [B, C, K] cosines in [-1, 1].
        labels: [B] int64 class indices (checked by the caller).
        margin: m in radians, >= 0.

    Returns:
        a new tensor of the cosines' shape; differentiable.
    """
    index = labels.view(-1, *([1] * (cosines.dim() - 1))).expand(-1, 1, *cosines.shape[2:])
    true = cosines.gather(1, index)
    sine = torch.sqrt((1.0 - true * true).clamp_min(1e-12))
    with_margin = true * math.cos(margin) - sine * math.sin(margin)
    # theta + m <= pi  <=>  cos(theta) >= cos(pi - m) = -cos(m)
    monotone = torch.where(true >= -math.cos(margin), with_margin, true - margin * math.sin(margin))
    return cosines.scatter(1, index, monotone)


def proxy_anchor_of_cosines(
    cosines: Tensor, labels: Tensor, alpha: float = 32.0, delta: float = 0.1
) -> Tensor:
    """Proxy-Anchor's loss (Kim, Kim, Cho and Kwak, CVPR 2020) of the cosines [B, C] between a
    batch and one anchor per class, labels [B]: each anchor weighs its batch members by their
    hardness, as the authors' loss weighs its proxies' (scale alpha, margin delta):

        (1 / |P+|) sum_{c in P+} log(1 + sum_{i: y_i = c} exp(-alpha (cos_ic - delta)))
      + (1 / C)    sum_c        log(1 + sum_{i: y_i != c} exp(alpha (cos_ic + delta)))

    with P+ the classes present in the batch. Written as softplus(logsumexp(...)), with the
    excluded terms at a finite -1e4 (not -inf, whose logsumexp has a NaN gradient).
    """
    positive = F.one_hot(labels, cosines.shape[1]).bool()
    excluded = torch.tensor(-1e4, dtype=cosines.dtype, device=cosines.device)
    pulls = torch.where(positive, -alpha * (cosines - delta), excluded)
    pushes = torch.where(positive, excluded, alpha * (cosines + delta))
    present = positive.any(dim=0)
    pull = F.softplus(torch.logsumexp(pulls[:, present], dim=0)).sum() / present.sum()
    push = F.softplus(torch.logsumexp(pushes, dim=0)).sum() / cosines.shape[1]
    return pull + push


def vmf_subcentre_logits(cosines: Tensor, kappa: Tensor | float, log_weights: Tensor) -> Tensor:
    """Class logits log sum_k w_ck exp(kappa cos_ck) of a vMF mixture with K sub-centres per class
    (mixture weights w_ck, one shared kappa): their softmax is the class posterior, as that of
    `vmf_logits` is with one centre (the normalizer C_d(kappa) cancels again).

    Args:
        cosines: [B, C, K] cosines of each embedding to each class's sub-centres.
        kappa: the concentration (number or 0-d tensor).
        log_weights: [C, K] log w_ck, each row's weights summing to 1 (-inf: an empty sub-centre).

    Returns:
        logits [B, C].
    """
    return torch.logsumexp(kappa * cosines + log_weights.to(cosines.dtype), dim=2)


def vmf_loss(x: Tensor, labels: Tensor, mu: Tensor, kappa: Tensor | float) -> Tensor:
    """The vMF loss: mean over the batch of -log softmax(kappa mu . x_i)[y_i].

    With shared kappa and equal priors the normalizers C_d(kappa) cancel in the class posterior,
    so this is cross-entropy over kappa-scaled cosines to the mean directions (no bias, no margin).

    Args:
        x: unit embeddings [B, D].
        labels: class indices [B] (int64) in [0, C).
        mu: unit mean directions [C, D].
        kappa: the concentration (number or 0-d tensor).

    Returns:
        the mean loss, a 0-d tensor.
    """
    _check_mu(mu)
    labels = check_batch(x, labels, mu.shape[1], mu.shape[0], name="x")
    refuse_unusable(x, directional=True, name="x")
    return F.cross_entropy(vmf_logits_unchecked(x, mu, kappa), labels)
