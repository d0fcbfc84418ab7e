"""`vmfml train` end to end on real images: metrics, resume after a kill, NaN, bad folders."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import QUICK as BASE
from train_helpers import flags, nan_after

from vmfml.cli import main
from vmfml.train import loop
from vmfml.train.checkpoint import load_checkpoint
from vmfml.train.config import load_config

pytestmark = pytest.mark.slow

QUICK = {**BASE, "train_subset": 1500, "eval_ks": (1, 2, 4)}


def test_train_on_fashion_mnist_writes_metrics(tmp_path: Path, fashion_sample: object) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            *flags(
                {
                    **QUICK,
                    "epochs": 4,
                    "depth": 2,
                    "train_subset": 2000,
                    "out_dir": out,
                    "plots": True,
                }
            ),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "classifier_accuracy",
        "ece",
        "recall@1",
        "recall@4",
        "map@r",
        "r_precision",
        "nmi",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert set(metrics["concentration"]) == {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    }
    assert (out / "training_curves.png").stat().st_size > 0 and (
        out / "embedding.png"
    ).stat().st_size > 0
    # `vmfml evaluate` recomputes the same numbers from the checkpoint alone.
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "checkpoint.pt"),
                "--out",
                str(tmp_path / "eval.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "eval.json").read_text())
    for key in ("accuracy", "classifier_accuracy", "recall@1", "map@r"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


@pytest.mark.parametrize("directions", ["global", "accumulate"])
def test_resume_after_kill_matches_uninterrupted_run(
    tmp_path: Path, fashion_sample: object, directions: str
) -> None:
    settings = {
        **QUICK,
        "epochs": 3,
        "train_subset": 3000,
        "directions": directions,
        "refresh_period": "epoch" if directions == "global" else "7",
    }
    whole = loop.train(load_config(None, {**settings, "out_dir": str(tmp_path / "whole")}))

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vmfml.cli", "train", *flags({**settings, "out_dir": out})]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["epoch"]
    assert killed_at < 3, "the run finished before it could be killed"

    resumed = loop.train(load_config(None, {**settings, "out_dir": str(out)}), resume=True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(ckpt)
    for name, tensor in a["model"]["state_dict"].items():
        assert torch.equal(tensor, b["model"]["state_dict"][name]), name
    for name, tensor in a["loss"]["state_dict"].items():
        assert torch.equal(tensor, b["loss"]["state_dict"][name]), name
    for key in ("accuracy", "recall@1", "map@r", "nmi"):
        assert resumed.metrics[key] == whole.metrics[key], key


@pytest.mark.parametrize("init", ["data", "random"])
def test_global_starts_from_the_untrained_class_means_or_at_random(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, init: str
) -> None:
    from vmfml.directions import GlobalDirections

    refreshed = []  # the mean directions just before each full-pass refresh
    original = GlobalDirections._set_mu_from

    def spy(self: GlobalDirections, *args: object) -> None:
        refreshed.append(self.mu.clone())
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(GlobalDirections, "_set_mu_from", spy)
    settings = {**QUICK, "epochs": 1, "directions": "global", "global_init": init}
    loop.train(load_config(None, {**settings, "out_dir": str(tmp_path)}))
    from vmfml.directions import create_directions

    drawn = create_directions("global", 10, 128).mu  # the random start (init_seed 0)
    if init == "random":
        assert len(refreshed) == 1  # only the end-of-epoch pass
        assert torch.equal(refreshed[0], drawn)  # epoch 1 trained towards the random start
    else:
        assert len(refreshed) == 2  # a pass of the untrained network, then the epoch's
        assert torch.equal(refreshed[0], drawn)
        assert not torch.allclose(refreshed[1], drawn)  # epoch 1 trained towards its class means


def test_resume_refuses_changed_settings(tmp_path: Path, fashion_sample: object) -> None:
    out = tmp_path / "run"
    loop.train(load_config(None, {**QUICK, "epochs": 1, "out_dir": str(out)}))
    with pytest.raises(ValueError, match="embed_dim"):
        loop.train(
            load_config(None, {**QUICK, "epochs": 1, "embed_dim": 32, "out_dir": str(out)}),
            resume=True,
        )
    assert (
        main(["train", "--resume", *flags({**QUICK, "epochs": 1, "out_dir": tmp_path / "none"})])
        == 2
    )


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # epoch 2 of 13 steps: the loss turns NaN
    monkeypatch.setattr(loop, "create_loss", nan_after(loop.create_loss, 20, "loss"))
    out = tmp_path / "run"
    code = main(["train", *flags({**QUICK, "epochs": 3, "out_dir": out})])
    assert code == 1
    assert "the loss became nan at epoch 2" in capsys.readouterr().err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert all(
        torch.isfinite(t).all()
        for t in ckpt["model"]["state_dict"].values()
        if t.is_floating_point()
    )


def test_folder_with_corrupt_image_is_named_or_skipped(
    tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = image_folder / "dress" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    settings = {**QUICK, "data": image_folder, "epochs": 1, "batch_size": 16, "image_size": 28}
    assert main(["train", *flags({**settings, "out_dir": tmp_path / "a"})]) == 2
    assert "broken.png" in capsys.readouterr().err
    code = main(["train", *flags({**settings, "out_dir": tmp_path / "b", "on_bad_image": "skip"})])
    assert code == 0
    # The warning names it, on one line of its own (not Python's file:line: UserWarning form).
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "broken.png" in x]
    assert line.startswith("vmfml train: warning: ") and "UserWarning" not in err
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert 0.0 <= metrics["recall@1"] <= 1.0


def test_single_class_folder_is_refused(
    tmp_path: Path, image_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("trouser", "pullover", "dress"):
        for f in (image_folder / name).iterdir():
            f.unlink()
        (image_folder / name).rmdir()
    assert (
        main(
            [
                "train",
                *flags({**QUICK, "data": image_folder, "epochs": 1, "out_dir": tmp_path / "r"}),
            ]
        )
        == 2
    )
    assert "class" in capsys.readouterr().err


def test_unknown_flag_value_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--directions", "globl", "--out-dir", str(tmp_path / "x")]) == 2
    assert "global" in capsys.readouterr().err  # the valid names are listed


def test_train_on_a_cub_layout_uses_the_standard_class_split(
    tmp_path: Path, fashion_sample: tuple[object, object]
) -> None:
    """`--data cub200 --data-root DIR` reads the official files: classes 1-100 train, 101-200 test."""
    import numpy as np
    from PIL import Image

    images, labels = fashion_sample
    base = tmp_path / "CUB_200_2011"
    rows, classes, split_rows = [], [], []
    image_id = 0
    for class_id in (1, 2, 101, 102):
        folder = f"{class_id:03d}.Bird_{class_id}"
        classes.append(f"{class_id} {folder}")
        for idx in np.flatnonzero(np.asarray(labels) == class_id % 10)[:6]:
            image_id += 1
            name = f"{folder}/Bird_{image_id:04d}.jpg"
            (base / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(images)[idx]).convert("RGB").save(base / "images" / name)
            rows.append((image_id, name, class_id))
            split_rows.append(f"{image_id} {image_id % 2}")
    (base / "images.txt").write_text("".join(f"{i} {n}\n" for i, n, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c in rows))
    (base / "train_test_split.txt").write_text("\n".join(split_rows) + "\n")
    (base / "classes.txt").write_text("\n".join(classes) + "\n")

    out = tmp_path / "run"
    settings = {**QUICK, "data": "cub200", "data_root": tmp_path, "image_size": 28, "epochs": 1}
    assert main(["train", *flags({**settings, "batch_size": 4, "out_dir": out})]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "accuracy" not in metrics  # test classes are unseen: retrieval only
    assert set(metrics["concentration"]) == {"1", "2"}  # trained on classes 1 and 2 only
    assert 0.0 <= metrics["recall@1"] <= 1.0


def test_small_cnn_on_large_photos_defaults_to_64_pixels(
    tmp_path: Path, image_folder: Path
) -> None:
    from PIL import Image

    from vmfml.train.checkpoint import load_embedding_model

    for path in image_folder.rglob("*.png"):
        Image.open(path).convert("RGB").resize((120, 120)).save(path)
    out = tmp_path / "run"
    settings = {**QUICK, "data": image_folder, "epochs": 1, "batch_size": 16, "out_dir": out}
    assert main(["train", *flags(settings)]) == 0
    model, _ = load_embedding_model(out / "checkpoint.pt")
    assert tuple(model.preprocessing["input_size"]) == (3, 64, 64)


def test_a_diverged_run_resumes_with_a_lower_lr_and_another_kappa(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The NaN stop's advice can be followed: resume with a lower --lr and another --kappa."""
    # epoch 2 of 13 steps: the network's embeddings turn NaN
    create_diverging = nan_after(loop.create_loss, 20, "embeddings")

    settings = {**QUICK, "epochs": 3, "out_dir": tmp_path / "run"}
    with monkeypatch.context() as m:
        m.setattr(loop, "create_loss", create_diverging)
        assert main(["train", *flags(settings)]) == 1
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 2" in err and "Lower --lr or --kappa" in err
    first = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert first["epoch"] == 1

    assert main(["train", "--resume", *flags({**settings, "lr": 1e-3, "kappa": 8.0})]) == 0
    assert "resumed from" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["epoch"] == 3 and ckpt["config"]["lr"] == 1e-3 and ckpt["config"]["kappa"] == 8.0
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(1e-3)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0] == pytest.approx(first["history"][0])  # epoch 1 as the first run left it
    assert [r["kappa"] for r in history] == [16.0, 8.0, 8.0]
    # Epochs 2 and 3 follow the schedule of a run at --lr 1e-3: the optimizer used the new lr.
    ref = loop.train(load_config(None, {**settings, "lr": 1e-3, "out_dir": str(tmp_path / "ref")}))
    assert [r["lr"] for r in history[1:]] == pytest.approx([r["lr"] for r in ref.history[1:]])
    assert history[0]["lr"] == pytest.approx(3 * ref.history[0]["lr"])  # the first run's 3e-3
    assert all(math.isfinite(r["train_loss"]) for r in history)
