"""What a new user reads in their first hour (issue 25): the commands printed after training run
as printed, counts read in the singular when there is one, each --help line states one default,
a torchrun launch gives one notice, `evaluate` names the model it read, and a --train-subset too
small for its classes says which option to change."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from vmfml.text import command_prefix, plural
from vmfml.train import commands
from vmfml.train.config import load_config

# ---- the "next:" block -----------------------------------------------------------------------


def next_lines(capsys: pytest.CaptureFixture[str], out_dir: Path, data: str) -> list[str]:
    capsys.readouterr()
    commands.print_next_steps(out_dir, data)
    text = capsys.readouterr().out
    return [line.strip() for line in text.split("next:\n", 1)[1].splitlines() if line.strip()]


def test_the_next_commands_use_the_users_vmfml_and_quote_their_paths(
    tmp_path: Path,
    image_folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A run folder and a data folder whose names need quoting.
    photos = tmp_path / "my photos"
    shutil.copytree(image_folder, photos)
    out = tmp_path / "runs" / "first run"
    out.mkdir(parents=True)
    (out / "best.pt").write_bytes(b"")
    (out / "checkpoint.pt").write_bytes(b"")

    # `vmfml` on PATH is not this environment's (the README's set-up adds nothing to PATH).
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    lines = next_lines(capsys, Path("runs/first run"), str(photos))
    own = Path(sys.executable).parent / "vmfml"
    assert len(lines) == 6
    for line in lines:
        words = shlex.split(line)  # raises on a broken quote
        program = Path(words[0])
        if own.is_file():
            assert program.resolve() == own.resolve(), line
        assert os.access(tmp_path / program if not program.is_absolute() else program, os.X_OK)
        assert words[1] in ("evaluate", "index", "search", "serve", "embed", "export")
        assert "path/to" not in line  # every path is this run's
        for flag in ("--checkpoint", "--data"):
            if flag in words:
                assert (tmp_path / words[words.index(flag) + 1]).exists(), line
    search = shlex.split(lines[2])
    query = Path(search[search.index("--index") + 2])
    assert query.is_file() and query.parent.parent == photos
    assert "'runs/first run/best.pt'" in lines[0]

    # Where `vmfml` on PATH is this environment's own, the bare name is printed.
    if own.is_file():
        monkeypatch.setenv("PATH", str(own.parent))
        assert command_prefix() == "vmfml"
        assert next_lines(capsys, Path("runs/first run"), str(photos))[0].startswith("vmfml ")


def test_without_a_vmfml_script_the_interpreter_runs_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = tmp_path / "bin dir" / "python"
    python.parent.mkdir()
    monkeypatch.setattr(sys, "executable", str(python))
    assert shlex.split(command_prefix()) == [str(python), "-m", "vmfml"]


# ---- counts, help, notices -------------------------------------------------------------------


def test_counts_are_singular_for_one() -> None:
    assert plural(1, "step") == "1 step"
    assert plural(2, "step") == "2 steps"
    assert plural(0, "image") == "0 images"
    assert plural(1, "class", "classes") == "1 class"
    assert plural(3, "class", "classes") == "3 classes"


def test_a_folder_smaller_than_a_batch_says_one_step_of_its_images() -> None:
    from vmfml.train.loop import _describe_run

    config = load_config(None, {"data": "photos", "epochs": "1", "batch_size": "256"})
    data = SimpleNamespace(
        train=_Sized(180, ["a", "b"]),
        test=_Sized(1, ["a", "b"]),
        val=_Sized(1, ["a"]),
        disjoint=True,
        num_classes=2,
    )
    model = SimpleNamespace(preprocessing={"input_size": (1, 28, 28)})
    text = _describe_run(config, data, model, torch.device("cpu"), "32", 1, 1, 1)  # type: ignore[arg-type]
    assert "1 epoch (1 step of 180 images: all the training images" in text
    assert "1 test image " in text and "1 image of 1 held-out class," in text
    assert "1 epochs" not in text and "1 steps" not in text


class _Sized:
    def __init__(self, n: int, class_names: list[str]) -> None:
        self.n, self.class_names = n, class_names

    def __len__(self) -> int:
        return self.n


def test_each_help_line_states_one_default(capsys: pytest.CaptureFixture[str]) -> None:
    from vmfml.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    # One entry per option: its lines joined, up to the next option.
    entries = re.split(r"\n  (?=-)", text)
    assert len(entries) > 40
    repeated = [e.split()[0] for e in entries if e.count("(default") > 1]
    assert repeated == []


def test_a_torchrun_launch_prints_one_notice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    seen: dict[str, Any] = {}

    def fake_run(command: list[str], env: dict[str, str]) -> Any:
        seen.update(command=command, env=env)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    parser = argparse.ArgumentParser()
    commands.add_arguments(parser)
    args = parser.parse_args(["--nproc", "2", "--epochs", "1", "--out-dir", "a b"])
    assert commands.run(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("running: OMP_NUM_THREADS=")
    # torchrun prints its own banner only when OMP_NUM_THREADS is unset: it is set.
    assert int(seen["env"]["OMP_NUM_THREADS"]) >= 1
    # What is printed is what runs.
    words = shlex.split(out[0].removeprefix("running: "))
    assert words[0] == f"OMP_NUM_THREADS={seen['env']['OMP_NUM_THREADS']}"
    assert words[1:] == seen["command"]


# ---- evaluate --------------------------------------------------------------------------------


def test_evaluate_names_the_model_it_read_not_the_folder_above(
    tmp_path: Path, image_folder: Path, run_cli: Callable[..., Any]
) -> None:
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    run = tmp_path / "runs" / "default"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=16, depth=2, width=0.25).eval()
    save_model_checkpoint(run / "best.pt", model, ["tshirt", "trouser", "pullover", "dress"])
    shutil.copy(run / "best.pt", run / "checkpoint.pt")
    result = run_cli(
        "evaluate", "--checkpoint", run, "--data", image_folder, "--no-progress", "--eval-ks", "1"
    )
    assert result.code == 0, result.err
    assert "run folder:" not in result.out
    assert f"model: {run / 'best.pt'}" in result.out
    assert "recall@1" in result.out


# ---- --train-subset --------------------------------------------------------------------------


def test_a_subset_without_images_of_a_class_names_the_option_to_change(
    fashion_folder: Callable[..., Path],
) -> None:
    from vmfml.train.datasets import build_datasets

    folder = fashion_folder([f"c{i}" for i in range(8)], 30)
    settings = {"data": str(folder), "split": "class-disjoint", "progress": "false"}
    config = load_config(None, {**settings, "train_subset": "3"})
    with pytest.raises(ValueError) as err:
        build_datasets(config)
    message = str(err.value)
    assert "--train-subset 3" in message and "raise --train-subset" in message
    assert "cannot be split" not in message
    # The size it suggests does give every class images.
    suggested = int(re.search(r"(\d+) or more", message).group(1))  # type: ignore[union-attr]
    ok = load_config(None, {**settings, "train_subset": str(suggested)})
    data = build_datasets(ok)
    assert int(np.min(data.train.class_counts().numpy())) > 0


def test_the_kept_epoch_reason_counts_in_the_singular() -> None:
    import time

    from vmfml.train.loop import _stop_reason
    from vmfml.train.validation import EarlyStopping

    stopper = EarlyStopping(patience=1)
    assert _stop_reason(stopper, time.monotonic(), None, 1, 1) == "the only epoch done"
    assert _stop_reason(stopper, time.monotonic(), None, 3, 3) == "all 3 epochs done"
    stopper.update({"val_score": 0.5}, 1)
    stopper.update({"val_score": 0.4}, 2)
    reason = _stop_reason(stopper, time.monotonic(), None, 2, 2 + 1)
    assert reason is not None and "for 1 epoch (--patience 1)" in reason


def test_after_a_built_in_set_the_placeholders_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = next_lines(capsys, tmp_path / "run", "fashion-mnist")
    assert "--data path/to/gallery" in lines[1] and "path/to/query.jpg" in lines[2]
    assert lines[-1].startswith("(path/to/gallery: your folder of images")
