"""The run folder of `vmfml train`: settings that depend on the data are refused before training,
a failed start leaves no folder behind, an existing run is never replaced without --overwrite,
and the summary names only the files the run wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmfml.train import loop
from vmfml.train.datasets import DataSplit

pytestmark = pytest.mark.slow

QUICK = {
    "train_subset": 300,
    "depth": 1,
    "width": 0.5,
    "batch_size": 100,
    "plots": False,
    "progress": False,
    "threads": 1,
    "eval_ks": (1, 2),
}


def flags(settings: dict[str, object]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        out += [
            "--" + key.replace("_", "-"),
            ",".join(map(str, value)) if isinstance(value, tuple) else str(value),
        ]
    return out


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the model fails loudly: a refusal must come before it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(loop, "build_model", refuse)


def test_eval_ks_beyond_the_test_set_are_refused_before_training(
    tmp_path: Path,
    image_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
) -> None:
    _no_training(monkeypatch)
    out = tmp_path / "runs" / "r"
    settings = {**QUICK, "data": image_folder, "epochs": 1, "eval_ks": (1, 1000)}
    result = run_cli("train", *flags({**settings, "out_dir": out}))
    assert result.code == 2
    err = result.err.strip()
    assert "\n" not in err
    # 4 classes x 30 images, a fifth of each class held out: 24 test images, 23 neighbours.
    assert "Recall@1000 needs 1000 neighbours" in err and "24 images" in err
    assert "K <= 23" in err
    assert not out.exists() and not out.parent.exists()  # a refused run leaves no folder


def test_eval_ks_against_a_separate_gallery_count_the_gallery() -> None:
    def split(test: int, gallery: int | None) -> DataSplit:
        return DataSplit(
            train=[0] * 10,
            test=[0] * test,
            disjoint=True,
            gallery=None if gallery is None else [0] * gallery,
        )

    loop._check_eval_ks((1, 9), split(10, None))  # 9 other test images
    with pytest.raises(ValueError, match="K <= 9"):
        loop._check_eval_ks((1, 10), split(10, None))
    loop._check_eval_ks((1, 10), split(3, 10))  # queries search the whole gallery
    with pytest.raises(ValueError, match="the gallery has 10 images; use K <= 10"):
        loop._check_eval_ks((11,), split(3, 10))


def test_a_failed_start_leaves_no_new_folder_and_keeps_an_old_one(
    tmp_path: Path, image_folder: Path, run_cli: Callable[..., Any]
) -> None:
    bad = image_folder / "dress" / "broken.png"
    bad.write_bytes(b"not a png")
    settings = {**QUICK, "data": image_folder, "epochs": 1}
    out = tmp_path / "new"
    assert run_cli("train", *flags({**settings, "out_dir": out})).code == 2
    assert not out.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    assert run_cli("train", *flags({**settings, "out_dir": old})).code == 2
    assert (old / "notes.txt").read_text() == "mine"
