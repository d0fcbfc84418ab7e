"""The vMF loss with Proxy-Anchor's weighting (`--vmf-weighting proxy-anchor`, issue 24's
`vmf-anchor` candidate), against pytorch-metric-learning's ProxyAnchorLoss whose proxies are set
to the same mean directions: loss and gradients equal in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import ProxyAnchorLoss

from vmfml.losses import VMFLoss, create_loss
from vmfml.losses.functional import proxy_anchor_of_cosines
from vmfml.train.config import load_config

C, D = 5, 8


def reference(x: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """PML's Proxy-Anchor loss (alpha 32, margin 0.1) with its proxies fixed to `mu`."""
    loss = ProxyAnchorLoss(C, D, margin=0.1, alpha=32).double()
    with torch.no_grad():
        loss.proxies.copy_(mu)
    return loss(x, labels)


@pytest.mark.parametrize(
    ("seed", "labels"),
    [
        (0, torch.arange(12) % C),  # every class present
        (1, torch.tensor([0, 0, 2, 2, 2, 4])),  # classes 1 and 3 absent: no pull, still pushed
        (2, torch.tensor([3, 3, 3, 3])),  # one class only: nothing to push from the others
    ],
)
def test_loss_and_gradient_equal_pytorch_metric_learnings(seed: int, labels: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(seed)
    mu = F.normalize(torch.randn(C, D, generator=gen, dtype=torch.float64), dim=1)
    # Embeddings near their class's direction and far, so both terms' hard cases occur.
    x = mu[labels] * 2 + torch.randn(len(labels), D, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    ours = proxy_anchor_of_cosines(F.normalize(x, dim=1) @ mu.t(), labels)
    (grad,) = torch.autograd.grad(ours, x)
    x_ref = x.detach().clone().requires_grad_(True)
    expected = reference(x_ref, labels, mu)
    (grad_ref,) = torch.autograd.grad(expected, x_ref)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-8, atol=1e-12)
    assert torch.isfinite(grad).all()


def test_the_vmf_loss_uses_it_on_its_mean_directions_and_keeps_its_posterior() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, D, generator=gen, dtype=torch.float64)
    labels = torch.arange(20) % C
    loss = create_loss("vmf", C, D, directions="accumulate", weighting="proxy-anchor", seed=0)
    plain = create_loss("vmf", C, D, directions="accumulate", seed=0)
    assert isinstance(loss, VMFLoss)
    loss.double(), plain.double()
    mu = loss.directions.directions().detach().double()
    # The strategy keeps its directions in float32; PML normalizes them again in float64.
    torch.testing.assert_close(loss(x, labels), reference(x, labels, mu), rtol=1e-6, atol=0.0)
    # The class posterior is the vMF softmax whatever the training loss.
    torch.testing.assert_close(loss.logits(x), plain.logits(x))
    torch.testing.assert_close(loss.logits(x), 16.0 * F.normalize(x, dim=1) @ mu.t())


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"weighting": "anchor"}, "weighting must be one of softmax, proxy-anchor, got 'anchor'"),
        (
            {"weighting": "proxy-anchor", "learn_kappa": True, "angular_margin": 0.3},
            "does not combine with learn_kappa, angular_margin",
        ),
        (
            {"weighting": "proxy-anchor", "class_kappa": 0.5},
            "does not combine with class_kappa",
        ),
    ],
)
def test_bad_options_are_refused(opts: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_loss("vmf", C, D, **opts)


def test_the_flag_is_checked_and_reaches_only_the_vmf_loss() -> None:
    config = load_config(None, {"vmf_weighting": "proxy-anchor"})
    assert config.loss_options() == {"directions": "accumulate", "weighting": "proxy-anchor"}
    assert load_config(None, {}).loss_options() == {"directions": "accumulate"}
    with pytest.raises(ValueError, match="vmf_weighting must be one of softmax, proxy-anchor"):
        load_config(None, {"vmf_weighting": "hard"})
    with pytest.raises(ValueError, match="--vmf-weighting does not apply to --loss triplet"):
        load_config(None, {"loss": "triplet", "vmf_weighting": "proxy-anchor"})
    # A clash is named by the flags the user typed, before any loss is built.
    with pytest.raises(
        ValueError,
        match="--vmf-weighting proxy-anchor does not combine with --learn-kappa, --vmf-margin",
    ):
        load_config(None, {"vmf_weighting": "proxy-anchor", "learn_kappa": True, "vmf_margin": 0.2})
