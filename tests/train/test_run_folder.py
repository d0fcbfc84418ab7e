"""The run folder of `vmfml train`: settings that depend on the data are refused before training,
a failed start leaves no folder behind, an existing run is never replaced without --overwrite,
and the summary names only the files the run wrote."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from train_helpers import QUICK as BASE
from train_helpers import flags

from vmfml.train import loop
from vmfml.train.checkpoint import load_checkpoint
from vmfml.train.datasets import DataSplit

pytestmark = pytest.mark.slow

QUICK = {**BASE, "train_subset": 300, "eval_ks": (1, 2)}


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


def _interrupted_run(
    out: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Callable[..., Any]
) -> None:
    """A run of 2 epochs stopped by Ctrl-C in its second: checkpoint.pt holds epoch 1."""
    real = loop._end_period
    calls = {"n": 0}

    def end_period(*args: Any) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop, "_end_period", end_period)
    assert run_cli("train", *flags({**QUICK, "epochs": 2, "out_dir": out})).code == 130
    monkeypatch.setattr(loop, "_end_period", real)
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_an_existing_run_is_refused_until_resume_or_overwrite(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
) -> None:
    out = tmp_path / "run"
    _interrupted_run(out, monkeypatch, run_cli)
    before = (out / "checkpoint.pt").read_bytes()

    def load_no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded")

    with monkeypatch.context() as m:
        m.setattr(loop, "build_datasets", load_no_data)
        again = run_cli("train", *flags({**QUICK, "epochs": 2, "out_dir": out}))
        assert again.code == 2
        assert again.err.strip() == (
            f"vmfml train: error: {out} already holds a run (checkpoint.pt, epoch 1 of 2); pass "
            "--resume to continue it, --overwrite to replace it, or --out-dir NEW"
        )
        both = run_cli("train", "--resume", "--overwrite", *flags({**QUICK, "out_dir": out}))
        assert both.code == 2 and "give one of them" in both.err
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing was touched

    resumed = run_cli("train", "--resume", *flags({**QUICK, "epochs": 2, "out_dir": out}))
    assert resumed.code == 0 and "resumed from" in resumed.out
    finished = run_cli("train", *flags({**QUICK, "epochs": 2, "out_dir": out}))
    assert finished.code == 2
    assert "(checkpoint.pt, finished: epoch 2 of 2); pass --overwrite to replace it" in finished.err

    # Only metrics.json left (as the benchmark leaves its runs): still a run.
    (out / "checkpoint.pt").unlink()
    only_metrics = run_cli("train", *flags({**QUICK, "epochs": 2, "out_dir": out}))
    assert (
        only_metrics.code == 2 and "already holds a finished run (metrics.json)" in only_metrics.err
    )

    replaced = run_cli("train", "--overwrite", *flags({**QUICK, "epochs": 1, "out_dir": out}))
    assert replaced.code == 0
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert len(json.loads((out / "history.json").read_text())) == 1


def test_the_summary_names_only_the_files_written(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
) -> None:
    out = tmp_path / "run"
    _interrupted_run(out, monkeypatch, run_cli)
    with_plots = run_cli(
        "train", "--resume", *flags({**QUICK, "epochs": 2, "plots": True, "out_dir": out})
    )
    assert with_plots.code == 0
    assert (
        f"run folder: {out} (metrics.json, best.pt, checkpoint.pt, training_curves.png, "
        "embedding.png)" in with_plots.out
    )
    # A new run in its place removes the old run's plots: none is listed, none is left.
    no_plots = run_cli("train", "--overwrite", *flags({**QUICK, "epochs": 1, "out_dir": out}))
    assert no_plots.code == 0
    assert f"run folder: {out} (metrics.json, best.pt, checkpoint.pt)\n" in no_plots.out
    assert not (out / "training_curves.png").exists() and not (out / "embedding.png").exists()


def test_resume_with_a_runs_config_continues_that_run_where_it_lies(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
) -> None:
    first = tmp_path / "first"
    _interrupted_run(first, monkeypatch, run_cli)
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(first, moved)  # config.yaml still records out_dir: first
    before = (first / "checkpoint.pt").read_bytes()

    resumed = run_cli("train", "--resume", "--config", moved / "config.yaml")
    assert resumed.code == 0
    assert f"resuming the run in {moved} (the folder of --config {moved / 'config.yaml'})" in (
        resumed.out
    )
    assert load_checkpoint(moved / "checkpoint.pt")["epoch"] == 2
    assert (first / "checkpoint.pt").read_bytes() == before  # the recorded folder is left alone
    # --out-dir on the command line still wins.
    other = run_cli("train", "--resume", "--config", moved / "config.yaml", "--out-dir", first)
    assert other.code == 0 and load_checkpoint(first / "checkpoint.pt")["epoch"] == 2


def test_resume_of_a_finished_run_says_it_is_done_and_neither_trains_nor_tests(
    tmp_path: Path,
    fashion_sample: object,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Callable[..., Any],
) -> None:
    out = tmp_path / "run"
    settings = {**QUICK, "epochs": 1, "out_dir": out}
    assert run_cli("train", *flags(settings)).code == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded: the run is trained or tested again")

    monkeypatch.setattr(loop, "build_datasets", no_data)
    again = run_cli("train", "--resume", *flags(settings))
    assert again.code == 0, again.err
    assert again.out.strip() == (
        f"{out} holds a finished run (epoch 1 of 1: all 1 epochs done); nothing to resume. Its "
        f"test metrics are in {out / 'metrics.json'}, measured on the kept epoch 1. Pass "
        "--overwrite to train it again, or --out-dir NEW."
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
