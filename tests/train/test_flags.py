"""Every training setting reaches the part it sets (loss, model, optimizer, data) or is refused.

The parts are built the way `vmfml train` builds them (the loop's builders, from a config parsed
from command-line style overrides), on a small real Fashion-MNIST subset; nothing trains here.
The settings the loop itself consumes (epochs, refresh period, precision, evaluation, files) are
checked end to end in test_train_e2e.py and test_distributed.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from vmfml.directions import EMADirections, GlobalDirections, LearnedDirections
from vmfml.losses import VMFLoss
from vmfml.train import loop
from vmfml.train.batches import epoch_generator, train_batches
from vmfml.train.config import TrainConfig, load_config
from vmfml.train.datasets import build_datasets

# No validation split here: these tests look at the training images (test_validation.py at it).
BASE = {"train_subset": 600, "progress": False, "val_fraction": 0}


def config(**settings: Any) -> TrainConfig:
    return load_config(None, {**BASE, **{k: str(v) for k, v in settings.items()}})


# ---- the loss ------------------------------------------------------------------------------


def test_vmf_alias_takes_kappa() -> None:
    """The issue's case: --loss vmf_global --kappa 64 trains the global strategy at kappa 64."""
    c = config(loss="vmf_global", kappa=64)
    assert (c.loss, c.directions) == ("vmf", "global")
    loss = loop.build_loss(c, 10)
    assert isinstance(loss, VMFLoss) and float(loss.kappa) == 64.0
    assert isinstance(loss.directions, GlobalDirections)
    c = config(loss="vmf_ema", kappa=4, learn_kappa="true")
    loss = loop.build_loss(c, 10)
    assert isinstance(loss, VMFLoss) and isinstance(loss.directions, EMADirections)
    assert loss.learn_kappa and float(loss.kappa.detach()) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("settings", "reached"),
    [
        ({"kappa": 8}, lambda loss: float(loss.kappa) == 8.0),
        ({"learn_kappa": "true"}, lambda loss: loss.log_kappa.requires_grad),
        ({"directions": "learned"}, lambda loss: isinstance(loss.directions, LearnedDirections)),
        (
            {"directions": "ema", "ema_momentum": 0.5},
            lambda loss: loss.directions.momentum == 0.5,
        ),
        (
            {"directions": "global", "global_init": "random"},
            lambda loss: loss.directions.init == "random",
        ),
        ({"embed_dim": 32}, lambda loss: loss.directions.mu.shape == (10, 32)),
    ],
)
def test_loss_settings_reach_the_loss(settings: dict[str, Any], reached: Any) -> None:
    assert reached(loop.build_loss(config(**settings), 10))


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"loss": "triplet", "kappa": 64}, "--kappa"),
        ({"loss": "softmax", "directions": "global"}, "--directions"),
        ({"loss": "arcface", "learn_kappa": "true"}, "--learn-kappa"),
        ({"ema_momentum": 0.5}, "--ema-momentum"),  # accumulate has no momentum
        ({"global_init": "random"}, "--global-init"),
        ({"directions": "ema", "refresh_period": 10}, "--refresh-period"),
        ({"loss": "proxy_anchor", "refresh_period": 10}, "--refresh-period"),
        ({"loss": "vmf_ema", "directions": "global"}, "vmf_ema"),
        ({"model": "timm:resnet18", "depth": 2}, "--depth"),
        ({"model": "efficientnet_lite0", "width": 2.0}, "--width"),
        ({"pretrained": "true"}, "pretrained"),
        ({"keep_start": "false"}, "--keep-start"),  # small_cnn starts from scratch
        ({"freeze_bn": "false"}, "--freeze-bn"),
        ({"model": "efficientnet_lite0", "keep_start": "false"}, "--keep-start"),
        ({"test_fraction": 0.3}, "--test-fraction"),  # fashion-mnist has its own test split
        ({"threads": 0}, "threads"),
        ({"train_subset": 0}, "train_subset"),
        ({"epochs": 5, "warmup_epochs": 6}, "warmup_epochs"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_settings_that_do_not_apply_are_refused(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        config(**settings)


def test_seed_seeds_every_random_start() -> None:
    """--seed moves the first directions of every strategy and the proxies of the baselines,
    whatever the global random state."""
    for settings in [
        {"directions": "learned"},
        {"directions": "accumulate"},
        {"directions": "ema"},
        {"directions": "global", "global_init": "random"},
    ]:
        mu = [loop.build_loss(config(**settings, seed=s), 10).directions.mu for s in (0, 1, 0)]
        assert not torch.equal(mu[0], mu[1]) and torch.equal(mu[0], mu[2]), settings
    for name in ["proxy_anchor", "proxy_nca", "normalized_softmax", "arcface", "softmax"]:
        weights = []
        for seed, state in [(0, 5), (1, 5), (0, 6)]:
            torch.manual_seed(state)  # the global state must not matter
            loss = loop.build_loss(config(loss=name, seed=seed), 10)
            weights.append(next(loss.parameters()).detach().clone())
        assert not torch.equal(weights[0], weights[1]), name
        assert torch.equal(weights[0], weights[2]), name


# ---- the optimizer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_name", "multiplier"),
    [
        ("proxy_anchor", 100.0),  # the authors' code: proxies at 100x
        ("proxy_nca", 100.0),
        ("normalized_softmax", 1.0),
        ("arcface", 1.0),
        ("cosface", 1.0),
        ("softmax", 1.0),
        ("vmf_learned", 1.0),
    ],
)
def test_loss_parameters_train_at_their_declared_rate(loss_name: str, multiplier: float) -> None:
    c = config(loss=loss_name, lr=0.002)
    model = torch.nn.Linear(3, 3)
    loss = loop.build_loss(c, 10)
    optimizer = loop.build_optimizer(c, model, loss)
    groups = optimizer.param_groups
    assert len(groups) == 2
    assert groups[0]["lr"] == 0.002 and groups[0]["params"] == list(model.parameters())
    assert groups[1]["lr"] == pytest.approx(0.002 * multiplier)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in loss.parameters()}


def test_losses_without_parameters_add_no_group() -> None:
    c = config(loss="triplet")
    optimizer = loop.build_optimizer(c, torch.nn.Linear(3, 3), loop.build_loss(c, 10))
    assert len(optimizer.param_groups) == 1


def test_optimizer_settings_reach_the_optimizer() -> None:
    model = torch.nn.Linear(3, 3)
    c = config(optimizer="sgd", lr=0.1, weight_decay=0.01)
    optimizer = loop.build_optimizer(c, model, loop.build_loss(c, 10))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    schedule = loop.build_schedule(optimizer, 2, 1.0, 10)
    lrs = []
    for _ in range(12):
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)  # 10 warm-up steps
    assert lrs[10] == pytest.approx(0.1) and lrs[11] < lrs[10]  # then the cosine decay


# ---- the model and the data ----------------------------------------------------------------


def test_model_settings_reach_the_model() -> None:
    c = config(depth=2, width=0.5, embed_dim=24, image_size=20)
    model = loop.build_model(c, build_datasets(c))
    assert model.embed_dim == 24
    assert model.preprocessing["input_size"] == (1, 20, 20)
    assert model.config["depth"] == 2 and model.config["width"] == 0.5


def test_data_settings_reach_the_data() -> None:
    data = build_datasets(config(train_subset=300, split="class-disjoint", seed=1))
    assert len(data.train) == 300 and data.disjoint
    assert set(data.train.class_names).isdisjoint(data.test.class_names)
    other = build_datasets(config(train_subset=300, split="class-disjoint", seed=2))
    assert set(other.train.class_names) != set(data.train.class_names)  # the seed draws them


@pytest.mark.parametrize("augment", ["none", "flip", "flip_crop"])
def test_augment_and_batch_size_reach_the_batches(augment: str) -> None:
    c = config(augment=augment, batch_size=64)
    data = build_datasets(c)
    pre = {"input_size": (1, 28, 28), "mean": [0.5], "std": [0.5], "interpolation": "bilinear"}
    batches = list(train_batches(data.train, c.batch_size, pre, c.augment, epoch_generator(0, 0)))
    assert len(batches) == 600 // 64 and batches[0][0].shape == (64, 1, 28, 28)
    plain = list(train_batches(data.train, 64, pre, "none", epoch_generator(0, 0)))
    changed = not torch.equal(batches[0][0], plain[0][0])
    assert changed == (augment != "none")


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_folder_is_augmented_alike_by_any_number_of_processes(
    image_folder: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Issue 21: each process drew the flips of its own chunk. Process r of 2 now gets the
    r-th half of what one process gets, bit for bit, with or without DataLoader workers."""
    from vmfml.data import image_folder as load_folder
    from vmfml.train import batches as batches_module

    data = load_folder(image_folder, image_size=28, mode="L")
    pre = {"input_size": (1, 28, 28), "mean": [0.5], "std": [0.5], "interpolation": "bilinear"}

    def epoch(world: int, rank: int, augment: str = "flip_crop") -> list[torch.Tensor]:
        monkeypatch.setattr(batches_module, "world_size", lambda: world)
        monkeypatch.setattr(batches_module, "rank", lambda: rank)
        gen = epoch_generator(0, 1)
        return [x for x, _ in train_batches(data, 16, pre, augment, gen, num_workers=workers)]

    whole = epoch(1, 0)
    halves = [torch.cat(pair) for pair in zip(epoch(2, 0), epoch(2, 1), strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(whole, halves, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(whole, epoch(1, 0, "none"), strict=True))


# ---- the device and the memory -------------------------------------------------------------


def test_a_device_that_is_not_there_is_refused_in_one_line() -> None:
    """Issue 21 #6: `--device mps` on a machine without it ended in a traceback."""
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="device 'mps' asked for, but MPS .* is not available"):
        loop.resolve_device("mps")
    with pytest.raises(ValueError, match="device 'xpu' asked for, but it is not available") as err:
        loop.resolve_device("xpu")
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert loop.resolve_device("cpu") == torch.device("cpu")


def test_the_memory_estimate_counts_layer_outputs_and_names_what_fits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vmfml.models import create_model
    from vmfml.train import memory

    def cnn(size: int) -> torch.nn.Module:
        return create_model("small_cnn", embed_dim=16, depth=1, in_chans=1, input_size=size)

    small = memory.activations_per_image(cnn(28), (1, 28, 28))
    large = memory.activations_per_image(cnn(56), (1, 56, 56))
    assert small is not None and large is not None
    assert small.total > 28 * 28 and large.total == pytest.approx(4 * small.total, rel=0.05)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    memory.check_fits(cnn(28), (1, 28, 28), 256, 512, 4, torch.device("cpu"), "small_cnn")
    with pytest.raises(ValueError, match=r"small_cnn at 2048 px does not fit: .* GiB") as err:
        memory.check_fits(cnn(2048), (1, 2048, 2048), 256, 512, 4, torch.device("cpu"), "small_cnn")
    fits = int(str(err.value).split("about --image-size ")[1].split()[0])
    assert 28 < fits < 2048
    memory.check_fits(cnn(fits), (1, fits, fits), 256, 512, 4, torch.device("cpu"), "small_cnn")
