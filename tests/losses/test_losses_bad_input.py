"""VMFLoss refuses what it cannot average (an empty batch, NaN or infinite embeddings) with a
ValueError that says where, and no strategy's mean directions ever take in a non-finite row."""

from __future__ import annotations

import pytest
import torch

from vmfml.directions import create_directions
from vmfml.losses.vmf import NonFiniteEmbeddings, VMFLoss

STRATEGIES = ["accumulate", "ema", "global", "learned"]


def batch(n: int = 8, dim: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("directions", STRATEGIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_embeddings_are_refused_by_row(directions: str, bad: float) -> None:
    loss = VMFLoss(3, 4, directions=directions)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    emb, labels = batch()
    emb[2, 1] = bad
    emb[5, 0] = bad
    kind = "NaN" if bad != bad else "an infinite value"
    with pytest.raises(
        ValueError, match=rf"2 of 8 embeddings are not finite \(2 with {kind}\): rows 2, 5"
    ):
        loss(emb, labels)
    # Nothing of the refused batch was taken in: the state is as before, bit for bit.
    for key, value in loss.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert isinstance(NonFiniteEmbeddings("x"), ValueError)


def test_the_message_counts_each_kind_and_shortens_long_lists() -> None:
    loss = VMFLoss(3, 4)
    emb, labels = batch(30)
    emb[:12, 0] = float("nan")
    emb[12, 3] = float("inf")
    with pytest.raises(
        NonFiniteEmbeddings,
        match=r"13 of 30 .* \(12 with NaN and 1 with an infinite value\): rows 0, 1, .*, 9 and 3 more",
    ):
        loss(emb, labels)


def test_refused_in_eval_mode_too() -> None:
    loss = VMFLoss(3, 4).eval()
    emb, labels = batch()
    emb[0] = float("nan")
    with pytest.raises(NonFiniteEmbeddings, match="rows 0$"):
        loss(emb, labels)


@pytest.mark.parametrize("directions", STRATEGIES)
def test_an_empty_batch_is_refused(directions: str) -> None:
    loss = VMFLoss(3, 4, directions=directions)
    with pytest.raises(ValueError, match=r"empty batch: embeddings have shape \[0, 4\]"):
        loss(torch.empty(0, 4), torch.empty(0, dtype=torch.long))


def test_ema_keeps_training_after_a_refused_nan_batch() -> None:
    """The issue's case: one NaN row used to make its class's mu NaN for good."""
    loss = VMFLoss(3, 4, directions="ema", momentum=0.5)
    emb, labels = batch()
    emb[1] = float("nan")
    with pytest.raises(NonFiniteEmbeddings):
        loss(emb, labels)
    assert torch.isfinite(loss.directions.mu).all()
    for seed in range(1, 4):
        value = loss(*batch(seed=seed))
        assert torch.isfinite(value)
    assert torch.isfinite(loss.directions.mu).all()


@pytest.mark.parametrize("directions", ["accumulate", "ema"])
def test_observe_skips_non_finite_rows(directions: str) -> None:
    """Called directly, the strategies take in the finite rows only."""
    strategy = create_directions(directions, 3, 4)
    clean = create_directions(directions, 3, 4)
    x = torch.nn.functional.normalize(batch(seed=7)[0], dim=1)
    labels = torch.arange(8) % 3
    dirty = x.clone()
    dirty[0] = float("nan")  # class 0
    dirty[4, 2] = float("inf")  # class 1
    keep = torch.ones(8, dtype=torch.bool)
    keep[[0, 4]] = False
    strategy.observe(dirty, labels)
    clean.observe(x[keep], labels[keep])
    for key, value in strategy.state_dict().items():
        assert torch.isfinite(value.double()).all(), key
        assert torch.equal(value, clean.state_dict()[key]), key
    if directions == "accumulate":
        assert strategy.class_counts.tolist() == [2, 2, 2]
        strategy.refresh()
        assert torch.isfinite(strategy.mu).all()


def test_a_class_with_only_bad_rows_keeps_its_ema_direction() -> None:
    strategy = create_directions("ema", 3, 4)
    start = strategy.mu.clone()
    x = torch.nn.functional.normalize(batch(3, seed=7)[0], dim=1)
    x[0] = float("nan")  # the only row of class 0
    strategy.observe(x, torch.tensor([0, 1, 2]))
    assert torch.equal(strategy.mu[0], start[0])
    assert not torch.equal(strategy.mu[1], start[1])
