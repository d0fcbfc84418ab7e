"""The validation split, the kept epoch (best.pt), early stopping and the auto training length."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from train_helpers import QUICK as BASE

from vmfml.train import loop
from vmfml.train.checkpoint import load_checkpoint
from vmfml.train.config import load_config
from vmfml.train.datasets import build_datasets
from vmfml.train.length import AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS, AUTO_STEPS, training_epochs
from vmfml.train.validation import EarlyStopping

QUICK = {**BASE, "train_subset": 1200, "eval_ks": (1, 2)}


@pytest.fixture()
def ten_class_folder(fashion_folder: Callable[..., Path]) -> Path:
    """Real Fashion-MNIST PNGs, 10 class subfolders x 40 images."""
    return fashion_folder([f"class{c}" for c in range(10)], 40, "ten")


def paths(dataset: Any) -> set[str]:
    return {str(p) for p in dataset.paths}


@pytest.mark.parametrize("split", ["standard", "class-disjoint"])
def test_validation_never_holds_a_test_image_or_class(ten_class_folder: Path, split: str) -> None:
    settings = {"data": str(ten_class_folder), "split": split, "val_fraction": 0.2}
    data = build_datasets(load_config(None, {**settings, "progress": False}))
    whole = build_datasets(load_config(None, {**settings, "val_fraction": 0, "progress": False}))
    assert data.val is not None and len(data.val) > 0
    assert paths(data.val).isdisjoint(paths(data.test))
    assert paths(data.val).isdisjoint(paths(data.train))
    # Validation and training together are the training images of the run without validation.
    assert paths(data.val) | paths(data.train) == paths(whole.train)
    assert paths(data.test) == paths(whole.test)
    if split == "class-disjoint":
        val_classes = set(data.val.class_names)
        assert len(val_classes) == 2  # 20% of the 5 training classes, at least 2
        assert val_classes.isdisjoint(data.test.class_names)
        assert val_classes.isdisjoint(data.train.class_names)
    else:
        assert set(data.val.class_names) == set(data.train.class_names)
        assert len(data.val) == 60  # 20% of each class's 32 training images (8 are test images)


def test_validation_of_the_built_in_set_comes_from_its_training_images(
    fashion_sample: object,
) -> None:
    data = build_datasets(load_config(None, {"train_subset": 1000, "progress": False}))
    assert len(data.train) + len(data.val) == 1000 and len(data.test) == 10_000


def test_best_pt_holds_the_epoch_the_report_names(
    tmp_path: Path, fashion_sample: object, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    result = loop.train(load_config(None, {**QUICK, "epochs": 4, "out_dir": str(out)}))
    kept = result.metrics["kept"]
    scores = [r["val_score"] for r in result.history]
    # The best score, a tie going to the higher MAP@R (then to the earlier epoch).
    ranks = [(r["val_score"], r["val_map@r"]) for r in result.history]
    assert kept["epoch"] == 1 + ranks.index(max(ranks))
    assert kept["val_score"] == max(scores)
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == kept["epoch"]
    assert "optimizer" not in best  # a model to use, not a run to resume
    assert f"kept epoch {kept['epoch']} of 4" in capsys.readouterr().out


def weights_evaluated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The model weights each call of the training loop's test evaluation saw, in order."""
    evaluated: list[dict[str, torch.Tensor]] = []
    real = loop.evaluate_model

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_model", spy)
    return evaluated


def test_the_test_metrics_are_those_of_the_kept_model(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With validation scores that peak at epoch 2, the test set is evaluated on epoch 2's
    weights, not on the last epoch's."""
    scores = iter([0.5, 0.9, 0.6, 0.7])
    real = loop.validate

    def scripted(*args: Any, **kwargs: Any) -> dict[str, float]:
        metrics = real(*args, **kwargs)
        metrics["val_score"] = next(scores)
        return metrics

    monkeypatch.setattr(loop, "validate", scripted)
    evaluated = weights_evaluated(monkeypatch)
    out = tmp_path / "run"
    result = loop.train(load_config(None, {**QUICK, "epochs": 4, "out_dir": str(out)}))
    assert result.metrics["kept"]["epoch"] == 2
    best = load_checkpoint(out / "best.pt")["model"]["state_dict"]
    last = load_checkpoint(out / "checkpoint.pt")["model"]["state_dict"]
    name = next(k for k, v in best.items() if v.is_floating_point() and not torch.equal(v, last[k]))
    assert torch.equal(evaluated[0][name], best[name])


def test_early_stopping_stops(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scores that only fall: with patience 2 the run stops at epoch 4 (stopping starts in the
    second half of the 8 epochs), keeps epoch 1, and a resume does not train on."""
    scores = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    real = loop.validate

    def falling(*args: Any, **kwargs: Any) -> dict[str, float]:
        return {**real(*args, **kwargs), "val_score": next(scores)}

    monkeypatch.setattr(loop, "validate", falling)
    out = tmp_path / "run"
    settings = {**QUICK, "epochs": 8, "patience": 2, "out_dir": str(out)}
    result = loop.train(load_config(None, settings))
    assert len(result.history) == 4
    assert result.metrics["kept"]["epoch"] == 1
    assert "early stop" in result.metrics["kept"]["reason"]
    again = loop.train(load_config(None, settings), resume=True)
    assert len(again.history) == 4 and again.metrics["kept"]["epoch"] == 1


@pytest.mark.slow
def test_resume_after_a_kill_keeps_the_best_score_and_the_patience(
    tmp_path: Path, fashion_sample: object
) -> None:
    settings = {**QUICK, "epochs": 6, "patience": 1, "train_subset": 2000}
    whole = loop.train(load_config(None, {**settings, "out_dir": str(tmp_path / "whole")}))

    out = tmp_path / "killed"
    flags = [
        x
        for k, v in {**settings, "out_dir": out}.items()
        for x in (
            "--" + k.replace("_", "-"),
            ",".join(map(str, v)) if isinstance(v, tuple) else str(v),
        )
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vmfml", "train", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["epoch"] < len(whole.history), "the run finished before it could be killed"
    resumed = loop.train(load_config(None, {**settings, "out_dir": str(out)}), resume=True)

    final = load_checkpoint(out / "checkpoint.pt")
    expected = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    assert final["early_stopping"] == expected["early_stopping"]
    assert final["epoch"] == expected["epoch"] and final["stop_reason"] == expected["stop_reason"]
    assert resumed.metrics["kept"] == whole.metrics["kept"]
    for key in ("accuracy", "recall@1", "map@r"):
        assert resumed.metrics[key] == whole.metrics[key], key
    assert load_checkpoint(out / "best.pt")["epoch"] == whole.metrics["kept"]["epoch"]


def test_a_tie_in_the_validation_score_goes_to_the_higher_map_at_r() -> None:
    """One image moves a small validation set's score by a step that later epochs often only
    tie: MAP@R decides between them, and an epoch that ties in both does not count."""
    stopper = EarlyStopping(patience=2)
    epochs = [(0.5, 0.30), (0.5, 0.35), (0.5, 0.35), (0.4, 0.90), (0.5, 0.34)]
    improved = [
        stopper.update({"val_score": score, "val_map@r": map_r}, epoch)
        for epoch, (score, map_r) in enumerate(epochs, 1)
    ]
    assert improved == [True, True, False, False, False]
    assert (stopper.best_epoch, stopper.best_score, stopper.best_map) == (2, 0.5, 0.35)
    assert stopper.stale == 3 and stopper.should_stop
    resumed = EarlyStopping(patience=2)
    resumed.load(stopper.state())
    assert resumed == stopper


def test_auto_length_is_a_step_budget_within_bounds() -> None:
    for steps_per_epoch in range(1, 3000):
        epochs = training_epochs(None, steps_per_epoch)
        assert AUTO_MIN_EPOCHS <= epochs <= AUTO_MAX_EPOCHS
        if AUTO_MIN_EPOCHS < epochs < AUTO_MAX_EPOCHS:
            # The fewest whole epochs that reach the budget.
            assert epochs * steps_per_epoch >= AUTO_STEPS > (epochs - 1) * steps_per_epoch
    assert training_epochs(None, 1) == AUTO_MAX_EPOCHS
    assert training_epochs(None, 10_000) == AUTO_MIN_EPOCHS
    assert training_epochs(7, 3) == 7  # an explicit --epochs N means N


def test_too_few_training_classes_train_without_validation(ten_class_folder: Path) -> None:
    """3 training classes cannot give 2 to validation and keep 2: the run trains on all, warned."""
    from vmfml.data import load_dataset
    from vmfml.data.splits import select_classes
    from vmfml.train.validation import carve_validation

    three = select_classes(load_dataset(str(ten_class_folder)), [0, 1, 2])
    with pytest.warns(UserWarning, match="no validation split"):
        train, val = carve_validation(three, 0.1, disjoint=True, seed=0)
    assert val is None and len(train) == len(three)
    train, val = carve_validation(three, 0.1, disjoint=False, seed=0)
    assert val is not None and len(train) + len(val) == len(three)


def test_split_seed_holds_the_class_split_across_seeds_and_validation_takes_each_source_alike() -> (
    None
):
    """The converged benchmark's protocol on the real combined set: with --split-seed the test
    classes, the validation classes and the training images are the same for every --seed;
    validation holds out 2 of each source's 5 training classes."""
    from vmfml.train.config import load_config
    from vmfml.train.datasets import build_datasets

    def split(**over: object) -> tuple[list[str], list[str], list[str]]:
        config = load_config(
            None, {"data": "combined-30", "split": "class-disjoint", "val_fraction": 0.4, **over}
        )
        data = build_datasets(config)
        return data.train.class_names, data.val.class_names, data.test.class_names

    fixed = [split(seed=seed, split_seed=0) for seed in (1, 2)]
    assert fixed[0] == fixed[1] == split(seed=0)
    train, val, test = fixed[0]
    assert len(train) == 9 and len(val) == 6 and len(test) == 15
    assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
    for source in ("fashion", "animal", "digit"):
        assert sum(name.startswith(f"{source}/") for name in val) == 2
    # Without --split-seed, --seed draws the split (the behaviour runs recorded before it had).
    assert split(seed=1)[2] != split(seed=0)[2]


TIMM = "mobilenetv3_small_050"  # 0.6M parameters: a pretrained backbone that runs fast on CPU


@pytest.fixture()
def backbone_weights(tmp_path: Path) -> Path:
    """A local weights file for the timm backbone: the network starts trained (--weights)."""
    import timm

    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(timm.create_model(TIMM, num_classes=0).state_dict(), path)
    return path


def fine_tuning(folder: Path, weights: Path, **overrides: Any) -> dict[str, Any]:
    """QUICK settings for the timm backbone started from `weights`, on the class-disjoint split."""
    return {
        **{k: v for k, v in QUICK.items() if k not in ("depth", "width")},  # small_cnn only
        "data": str(folder),
        "split": "class-disjoint",
        "model": f"timm:{TIMM}",
        "weights": str(weights),
        "image_size": 32,
        "embed_dim": 16,
        **overrides,
    }


# A validation score, or (score, MAP@R); MAP@R is 0.5 where not given.
Scripted = float | tuple[float, float]


@pytest.mark.parametrize(
    ("scores", "keep_start", "kept_epoch", "warns"),
    [
        ([0.9, 0.5, 0.6], True, 0, True),  # training only harms: the start is kept
        ([0.9, 0.5, 0.6], False, 2, True),  # ... unless --keep-start false
        ([0.5, 0.6, 0.7], True, 2, False),  # training helps: the usual best epoch
        ([0.6, 0.6, 0.5], True, 0, True),  # a full tie does not replace the start
        ([0.9, 0.5, 0.5], False, 1, True),  # fully tied trained epochs: the earlier is kept
        ([(0.6, 0.3), (0.6, 0.4), 0.5], True, 1, False),  # a tie goes to the higher MAP@R
        ([0.9, (0.5, 0.3), (0.5, 0.4)], False, 2, True),  # ... among trained epochs too
    ],
)
def test_a_pretrained_network_is_validated_before_training_and_kept_when_training_harms(
    tmp_path: Path,
    ten_class_folder: Path,
    backbone_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    scores: list[Scripted],
    keep_start: bool,
    kept_epoch: int,
    warns: bool,
) -> None:
    """Scripted validation scores over the real validation pass: the first call is the network
    before training (epoch 0). The test set is evaluated on the weights of the epoch kept, which
    best.pt holds, and a resume keeps them."""
    states: list[dict[str, torch.Tensor]] = []  # the weights at each validation
    ranks = [s if isinstance(s, tuple) else (s, 0.5) for s in scores]
    queue = iter(ranks)
    real = loop.validate

    def scripted(model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[str, float]:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        score, map_r = next(queue)
        return {**real(model, *args, **kwargs), "val_score": score, "val_map@r": map_r}

    monkeypatch.setattr(loop, "validate", scripted)
    evaluated = weights_evaluated(monkeypatch)
    out = tmp_path / "run"
    settings = fine_tuning(
        ten_class_folder, backbone_weights, val_fraction=0.4, epochs=2, keep_start=keep_start
    )
    settings["out_dir"] = str(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loop.train(load_config(None, settings))
    said = [str(w.message) for w in caught if "did not beat the pretrained" in str(w.message)]
    assert len(said) == int(warns)
    if warns:
        assert ("network before training is kept" in said[0]) == keep_start
        best_trained = max(range(1, 3), key=lambda e: (*ranks[e], -e))
        assert f"(epoch {best_trained})" in said[0]

    assert len(states) == 3  # before training, then after each of the 2 epochs
    kept = result.metrics["kept"]
    assert kept["epoch"] == kept_epoch
    assert kept["val_score_before_training"] == ranks[0][0]
    assert kept["training_helped"] == (not warns)
    assert result.metrics["before_training"]["val_score"] == ranks[0][0]
    assert [r["epoch"] for r in result.history] == [1, 2]  # epoch 0 is not a trained epoch
    for name, value in states[kept_epoch].items():
        assert torch.equal(evaluated[0][name], value), name
    best = load_checkpoint(out / "best.pt")
    assert best["epoch"] == kept_epoch
    for name, value in best["model"]["state_dict"].items():
        assert torch.equal(value, states[kept_epoch][name]), name

    # A resume of the finished run validates nothing again and keeps the same epoch.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = loop.train(load_config(None, settings), resume=True)
    assert len([w for w in caught if "did not beat" in str(w.message)]) == int(warns)
    assert len(states) == 3
    assert again.metrics["kept"] == kept
    assert again.metrics["before_training"] == result.metrics["before_training"]


def test_a_network_trained_from_scratch_is_not_validated_before_training(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = loop.validate

    def counted(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", counted)
    result = loop.train(load_config(None, {**QUICK, "epochs": 2, "out_dir": str(tmp_path)}))
    assert len(calls) == 2
    assert "before_training" not in result.metrics
    assert "training_helped" not in result.metrics["kept"]


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_fine_tuning_keeps_the_pretrained_batchnorm_by_default(
    tmp_path: Path, ten_class_folder: Path, backbone_weights: Path, freeze_bn: bool
) -> None:
    """After an epoch of fine-tuning, the backbone's BatchNorm statistics and parameters are
    those of the weights file (--freeze-bn, the default) or have moved (--freeze-bn false),
    while its convolutions moved either way."""
    settings = fine_tuning(ten_class_folder, backbone_weights, epochs=1, val_fraction=0)
    settings["out_dir"] = str(tmp_path / "run")
    if not freeze_bn:
        settings["freeze_bn"] = False
    loop.train(load_config(None, settings))
    pretrained = torch.load(backbone_weights)
    trained = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]["state_dict"]
    bn = [k for k in pretrained if k.endswith(("running_mean", "running_var"))]
    bn += [k[: -len("running_mean")] + p for k in bn[::2] for p in ("weight", "bias")]
    conv = [k for k, v in pretrained.items() if v.ndim == 4]
    assert bn and conv
    for name in bn:
        assert torch.equal(trained[f"backbone.{name}"], pretrained[name]) is freeze_bn, name
    assert any(not torch.equal(trained[f"backbone.{k}"], pretrained[k]) for k in conv)
