"""Each mean-direction strategy against a hand computation; state round trips; the registry."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vmfml.directions import (
    AccumulateDirections,
    EMADirections,
    GlobalDirections,
    LearnedDirections,
    compute_class_sums,
    create_directions,
    direction_options,
)
from vmfml.losses import VMFLoss

C, D = 3, 5


def unit_batch(seed: int, n: int = 6, classes: list[int] | None = None):
    gen = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, D, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.tensor(classes) if classes is not None else torch.arange(n) % C
    return x, labels


def normalized(v: list[float]) -> list[float]:
    norm = sum(a * a for a in v) ** 0.5
    return [a / norm for a in v]


def test_initial_directions_are_seeded_unit_vectors() -> None:
    a, b = AccumulateDirections(C, D, init_seed=7), AccumulateDirections(C, D, init_seed=7)
    assert torch.equal(a.mu, b.mu)
    assert not torch.equal(a.mu, AccumulateDirections(C, D, init_seed=8).mu)
    torch.testing.assert_close(a.mu.norm(dim=1), torch.ones(C))
    assert torch.equal(a.mu, LearnedDirections(C, D, init_seed=7).directions().detach())


def test_accumulate_refresh_gives_normalized_class_sums() -> None:
    directions = AccumulateDirections(C, D).double()
    batches = [unit_batch(1), unit_batch(2, n=4, classes=[0, 0, 1, 1])]
    sums = [[0.0] * D for _ in range(C)]
    for x, labels in batches:
        directions.observe(x, labels)
        for row, y in zip(x.tolist(), labels.tolist(), strict=True):
            sums[y] = [s + v for s, v in zip(sums[y], row, strict=True)]
    before = directions.mu.clone()
    directions.refresh()
    want = torch.tensor([normalized(s) for s in sums], dtype=torch.float64)
    torch.testing.assert_close(directions.directions(), want, rtol=1e-14, atol=1e-15)
    assert not torch.equal(before, directions.mu)
    assert directions.class_sums.abs().sum() == 0 and directions.class_counts.sum() == 0


def test_mu_is_fixed_between_refreshes() -> None:
    directions = AccumulateDirections(C, D)
    before = directions.mu.clone()
    directions.observe(*unit_batch(3))
    assert torch.equal(before, directions.mu)


def test_classes_without_samples_keep_mu_and_are_named() -> None:
    directions = AccumulateDirections(C, D)
    before = directions.mu.clone()
    x, labels = unit_batch(4, n=2, classes=[1, 1])
    directions.observe(x.float(), labels)
    with pytest.warns(UserWarning, match=r"2 of 3 classes .* classes 0, 2$"):
        directions.refresh()
    assert torch.equal(directions.mu[[0, 2]], before[[0, 2]])
    torch.testing.assert_close(directions.mu[1], F.normalize(x.sum(0), dim=0).float())


def test_ema_follows_its_formula() -> None:
    directions = EMADirections(C, D, momentum=0.8).double()
    mu = directions.mu.clone()
    for seed, classes in [(5, [0, 0, 1, 0]), (6, [2, 1, 1, 1])]:
        x, labels = unit_batch(seed, n=4, classes=classes)
        directions.observe(x, labels)
        for c in range(C):
            members = x[labels == c]
            if len(members):
                mu[c] = F.normalize(0.8 * mu[c] + 0.2 * members.mean(0), dim=0)
        torch.testing.assert_close(directions.mu, mu, rtol=1e-14, atol=1e-15)
    current = directions.mu.clone()
    directions.refresh()  # no period: nothing changes
    assert torch.equal(directions.mu, current)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        EMADirections(C, D, momentum=1.0)


class TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, D, dtype=torch.float64)
        self.dropout = nn.Dropout(0.5)  # must be off during the full pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.dropout(self.linear(images)), dim=1)


def test_global_uses_a_full_pass() -> None:
    torch.manual_seed(0)
    model = TinyModel().train()
    images = torch.randn(11, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 0])
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    sums, counts = compute_class_sums(model, loader, C, "cpu")
    assert model.training  # mode restored
    assert sums.dtype == torch.float64 and counts.tolist() == [5, 4, 2]
    with torch.no_grad():
        x = F.normalize(model.linear(images), dim=1)
    for c in range(C):
        torch.testing.assert_close(sums[c], x[labels == c].sum(0), rtol=1e-13, atol=1e-14)
    directions = GlobalDirections(C, D)
    assert directions.needs_full_pass and not AccumulateDirections.needs_full_pass
    directions.observe(x.float(), labels)  # batches are not accumulated
    assert directions.class_counts.sum() == 0
    with pytest.raises(ValueError, match="compute_class_sums"):
        directions.refresh()
    directions.refresh(sums, counts)
    torch.testing.assert_close(directions.mu, F.normalize(sums, dim=1).float())


def test_compute_class_sums_checks_labels() -> None:
    loader = [(torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 3]))]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        compute_class_sums(TinyModel(), loader, C, "cpu")


def test_learned_directions_receive_gradients() -> None:
    loss_fn = VMFLoss(C, D, directions="learned", kappa=4.0)
    assert [name for name, _ in loss_fn.named_parameters()] == ["directions.mu"]
    x, labels = unit_batch(7)
    loss_fn(x.float(), labels).backward()
    grad = loss_fn.directions.mu.grad
    assert grad is not None and grad.abs().sum() > 0
    before = loss_fn.directions.directions().detach().clone()
    torch.optim.SGD(loss_fn.parameters(), lr=0.5).step()
    after = loss_fn.directions.directions().detach()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after.norm(dim=1), torch.ones(C))
    loss_fn.directions.refresh()  # learned by gradient: refresh() leaves it alone
    assert torch.equal(after, loss_fn.directions.directions().detach())


def test_init_from_sets_mu_and_keeps_accumulators() -> None:
    for name in ["global", "accumulate", "ema", "learned"]:
        directions = create_directions(name, C, D)
        x, labels = unit_batch(8)
        directions.observe(x, labels)
        counts_before = directions.class_counts.clone()
        sums = torch.eye(C, D, dtype=torch.float64) * 2.0
        directions.init_from(sums, torch.ones(C))
        torch.testing.assert_close(directions.directions().detach(), torch.eye(C, D))
        assert torch.equal(directions.class_counts, counts_before)


def train_steps(loss_fn: VMFLoss, seeds: list[int]) -> None:
    """A few training steps and a period end, as the trainer runs them."""
    for seed in seeds:
        x, labels = unit_batch(seed)
        loss_fn(x.float(), labels)
    if loss_fn.directions.needs_full_pass:
        x, labels = unit_batch(seeds[-1] + 100)  # stands in for the full pass
        sums = torch.zeros(C, D, dtype=torch.float64).index_add_(0, labels, x)
        loss_fn.directions.refresh(sums, torch.bincount(labels, minlength=C))
    else:
        loss_fn.directions.refresh()


@pytest.mark.parametrize("name", ["global", "accumulate", "ema", "learned"])
def test_state_dict_round_trip_resumes_bit_identically(name: str) -> None:
    opts = {"momentum": 0.7} if name == "ema" else {}
    original = VMFLoss(C, D, directions=name, **opts)
    train_steps(original, [1, 2])
    x, labels = unit_batch(3)
    original(x.float(), labels)  # stop mid-period: the accumulators hold one batch
    state = copy.deepcopy(original.state_dict())
    assert {"directions.mu", "directions.class_sums", "directions.class_counts"} <= set(state)
    resumed = VMFLoss(C, D, directions=name, init_seed=99, **opts)
    resumed.load_state_dict(state)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, state[key]), key
    train_steps(original, [4, 5])
    train_steps(resumed, [4, 5])
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, original.state_dict()[key]), key


def test_dtype_casts_keep_sums_float64() -> None:
    directions = AccumulateDirections(C, D).half()
    assert directions.mu.dtype == torch.float16
    assert directions.class_sums.dtype == torch.float64
    assert directions.double().mu.dtype == torch.float64


def test_all_reduce_is_a_no_op_without_distributed() -> None:
    directions = AccumulateDirections(C, D)
    directions.observe(*unit_batch(9))
    sums, counts = directions.class_sums.clone(), directions.class_counts.clone()
    directions.all_reduce_sums()
    assert torch.equal(sums, directions.class_sums) and torch.equal(counts, directions.class_counts)


def test_registry() -> None:
    assert isinstance(create_directions("ema", C, D, momentum=0.5), EMADirections)
    assert direction_options("ema") == ["momentum", "init_seed"]
    assert direction_options("global") == ["init", "init_seed"]
    with pytest.raises(
        ValueError,
        match=r"unknown directions 'globl'; valid: \['accumulate', 'ema', 'global', 'learned'\]",
    ):
        create_directions("globl", C, D)
    with pytest.raises(
        ValueError,
        match=r"unknown option\(s\) \['momentum'\] for directions 'learned'; valid options: \['init_seed'\]",
    ):
        create_directions("learned", C, D, momentum=0.5)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_directions("global", 0, D)


def test_refresh_checks_shapes() -> None:
    directions = AccumulateDirections(C, D)
    with pytest.raises(ValueError, match=r"sums must have shape \[3, 5\]"):
        directions.refresh(torch.zeros(C, D + 1), torch.ones(C))
    with pytest.raises(ValueError, match="also needs counts"):
        directions.refresh(torch.zeros(C, D))


def test_global_directions_on_real_images(fashion_sample) -> None:
    """Full pass over 2,000 real Fashion-MNIST images through a fixed random projection."""
    images, labels_np = fashion_sample
    images_t = torch.from_numpy(images.reshape(len(images), -1).astype("float64") / 255.0)
    labels = torch.from_numpy(labels_np.astype("int64"))
    projection = torch.randn(
        784, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )

    def model(batch: torch.Tensor) -> torch.Tensor:
        return F.normalize(batch @ projection, dim=1)

    loader = DataLoader(TensorDataset(images_t, labels), batch_size=256)
    sums, counts = compute_class_sums(model, loader, 10, "cpu")
    x = model(images_t)
    for c in range(10):
        torch.testing.assert_close(sums[c], x[labels == c].sum(0), rtol=1e-12, atol=1e-12)
    assert counts.tolist() == torch.bincount(labels, minlength=10).tolist()
    directions = GlobalDirections(10, 32)
    directions.refresh(sums, counts)
    # The class mean directions classify the images they were estimated from far above chance.
    accuracy = ((x.float() @ directions.directions().t()).argmax(1) == labels).float().mean()
    assert accuracy > 0.5
