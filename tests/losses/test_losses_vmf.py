"""VMFLoss against a brute-force float64 loop, its kappa, its hand-off to the directions, checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vmfml.directions import AccumulateDirections, EMADirections
from vmfml.losses import VMFLoss

C, D = 4, 6


def batch(dtype: torch.dtype = torch.float64, n: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    embeddings = 3.0 * torch.randn(n, D, generator=gen, dtype=dtype)  # not unit: normalized inside
    labels = torch.arange(n) % C
    return embeddings, labels


def brute_force_loss(embeddings, labels, mu, kappa: float) -> float:
    total = 0.0
    for e, y in zip(embeddings.tolist(), labels.tolist(), strict=True):
        norm = math.sqrt(sum(v * v for v in e))
        logits = [kappa * sum(a / norm * b for a, b in zip(e, m, strict=True)) for m in mu.tolist()]
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[y]
    return total / len(labels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("directions", ["accumulate", "global", "ema", "learned"])
def test_loss_matches_brute_force(dtype: torch.dtype, directions: str) -> None:
    loss_fn = VMFLoss(C, D, kappa=12.0, directions=directions).eval()
    embeddings, labels = batch(dtype)
    mu = loss_fn.directions.directions().detach().double()
    loss = loss_fn(embeddings, labels)
    assert loss.dtype == dtype
    want = brute_force_loss(embeddings.double(), labels, mu, 12.0)
    assert loss.item() == pytest.approx(want, rel=1e-12 if dtype == torch.float64 else 1e-5)


def test_logits_are_kappa_cosines() -> None:
    loss_fn = VMFLoss(C, D, kappa=5.0)
    embeddings, _ = batch()
    mu = loss_fn.directions.directions().double()
    want = 5.0 * F.normalize(embeddings, dim=1) @ mu.t()
    torch.testing.assert_close(loss_fn.logits(embeddings), want, rtol=1e-12, atol=1e-12)


def test_gradient_matches_brute_force_autograd() -> None:
    loss_fn = VMFLoss(C, D, kappa=3.0).eval()
    embeddings, labels = batch()
    embeddings.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(embeddings, labels), embeddings)
    mu = loss_fn.directions.directions().double()
    ref = embeddings.detach().clone().requires_grad_(True)
    x = ref / ref.norm(dim=1, keepdim=True)
    logits = 3.0 * x @ mu.t()
    ref_loss = (logits.logsumexp(dim=1) - logits[torch.arange(len(labels)), labels]).mean()
    (want,) = torch.autograd.grad(ref_loss, ref)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-14)


def test_training_mode_hands_unit_detached_embeddings_to_directions() -> None:
    loss_fn = VMFLoss(C, D)
    embeddings, labels = batch()
    embeddings.requires_grad_(True)
    loss_fn.eval()(embeddings, labels)
    assert loss_fn.directions.class_counts.sum() == 0  # eval: nothing observed
    loss_fn.train()(embeddings, labels)
    x = F.normalize(embeddings.detach(), dim=1)
    want = torch.zeros(C, D, dtype=torch.float64).index_add_(0, labels, x)
    torch.testing.assert_close(loss_fn.directions.class_sums, want, rtol=1e-14, atol=1e-15)
    assert loss_fn.directions.class_counts.tolist() == [3, 3, 2, 2]


def test_ema_update_inside_forward_does_not_break_backward() -> None:
    loss_fn = VMFLoss(C, D, directions="ema", momentum=0.5).train()
    embeddings, labels = batch()
    embeddings.requires_grad_(True)
    before = loss_fn.directions.directions().clone()
    loss_fn(embeddings, labels).backward()
    assert embeddings.grad is not None and torch.isfinite(embeddings.grad).all()
    assert not torch.equal(before, loss_fn.directions.directions())


def test_fixed_kappa_is_exact_and_not_a_parameter() -> None:
    loss_fn = VMFLoss(C, D, kappa=16.3)
    assert loss_fn.kappa.item() == 16.3
    assert list(loss_fn.parameters()) == []


def test_learned_kappa_is_positive_and_trained() -> None:
    loss_fn = VMFLoss(C, D, kappa=8.0, learn_kappa=True)
    assert loss_fn.kappa.item() == pytest.approx(8.0, rel=1e-6)
    assert [name for name, _ in loss_fn.named_parameters()] == ["log_kappa"]
    embeddings, labels = batch(torch.float32)
    loss_fn(embeddings, labels).backward()
    grad = loss_fn.log_kappa.grad
    assert grad is not None and grad.item() != 0.0
    with torch.no_grad():
        loss_fn.log_kappa -= 100.0  # a step that would make a raw kappa negative
    assert loss_fn.kappa.item() > 0


def test_directions_instance_is_used_as_given() -> None:
    directions = EMADirections(C, D, momentum=0.3)
    assert VMFLoss(C, D, directions=directions).directions is directions
    with pytest.raises(ValueError, match="only apply when directions is given by name"):
        VMFLoss(C, D, directions=directions, momentum=0.5)
    with pytest.raises(ValueError, match="directions hold 4 classes x 6 dims"):
        VMFLoss(C + 1, D, directions=AccumulateDirections(C, D))
    with pytest.raises(ValueError, match="unknown directions 'moving'"):
        VMFLoss(C, D, directions="moving")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['momentum'\].*init_seed"):
        VMFLoss(C, D, directions="accumulate", momentum=0.5)
    with pytest.raises(ValueError, match="kappa must be a finite number > 0"):
        VMFLoss(C, D, kappa=0.0)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 1, 2, 4]), r"labels must lie in \[0, 4\).*\[0, 4\]"),
        (torch.tensor([0, -1, 2, 3]), r"labels must lie in \[0, 4\)"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), "labels must be an integer tensor"),
        (torch.tensor([0, 1, 2]), r"labels must have shape \[4\]"),
        (torch.tensor([[0, 1, 2, 3]]), r"labels must have shape \[4\]"),
        ([0, 1, 2, 3], "labels must be a tensor"),
    ],
)
def test_bad_labels_are_rejected(labels, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VMFLoss(C, D)(torch.randn(4, D), labels)


def test_bad_embeddings_are_rejected() -> None:
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"embeddings must have shape \[B, 6\], got \[2, 5\]"):
        VMFLoss(C, D)(torch.randn(2, 5), labels)
    with pytest.raises(ValueError, match="floating-point"):
        VMFLoss(C, D)(torch.ones(2, D, dtype=torch.int64), labels)


def test_int32_labels_are_accepted() -> None:
    embeddings, labels = batch()
    loss_fn = VMFLoss(C, D).eval()
    assert loss_fn(embeddings, labels.int()).item() == loss_fn(embeddings, labels).item()


def test_half_precision_embeddings_are_computed_in_float32() -> None:
    loss_fn = VMFLoss(C, D).eval()
    embeddings, labels = batch(torch.float32)
    loss = loss_fn(embeddings.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(loss_fn(embeddings, labels).item(), rel=2e-2)
