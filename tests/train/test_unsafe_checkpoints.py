"""A checkpoint file never runs code (issue 21 #1).

A `.pt` file is a pickle, and a pickle can call any function while it loads. Each command that
reads a checkpoint is given one whose pickle would create a marker file: every one refuses it in
one line, and the marker never appears. The other half, that vmfml's own checkpoints load as
tensors and plain data, is held by every test that trains and then evaluates or resumes.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import QUICK, flags

from vmfml.train import checkpoint, loop
from vmfml.train.config import load_config

REFUSED = "is not a vmfml checkpoint: it holds Python objects other than tensors and plain data"


class _TouchOnLoad:
    """Unpickling this calls `Path.touch(marker)`: what a hostile file could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"format": checkpoint.FORMAT, "version": 1, "epoch": 1, "model": _TouchOnLoad(marker)},
        path,
    )
    assert not marker.exists()
    return path


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(a run folder whose checkpoint.pt creates `marker` when unpickled, marker)."""
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    _evil_checkpoint(run / "checkpoint.pt", marker)
    return run, marker


def _one_line_refusal(result: Any, command: str, path: Path) -> None:
    assert result.code == 2, result
    assert result.err.strip().count("\n") == 0, result.err
    assert result.err.startswith(f"vmfml {command}: error: {path} {REFUSED}"), result.err


def test_the_loader_refuses_a_pickle_that_runs_code(evil: tuple[Path, Path]) -> None:
    run, marker = evil
    with pytest.raises(ValueError, match=REFUSED) as err:
        checkpoint.load_checkpoint(run / "checkpoint.pt")
    assert "refused unread" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=REFUSED):
        checkpoint.load_checkpoint(run / "checkpoint.pt", mmap=True)
    with pytest.raises(ValueError, match=REFUSED):
        checkpoint.load_embedding_model(run)
    # The benchmark asks whether a run folder can be resumed: not this one.
    assert not loop.resumable(run, load_config(None, {"out_dir": str(run)}))
    assert not marker.exists()


def test_train_never_unpickles_a_hostile_checkpoint(
    evil: tuple[Path, Path], run_cli: Callable[..., Any], fashion_sample: object
) -> None:
    run, marker = evil
    resumed = run_cli("train", "--resume", *flags({**QUICK, "epochs": 1, "out_dir": run}))
    _one_line_refusal(resumed, "train", run / "checkpoint.pt")
    # A new run into the folder: the check that refuses an existing run does not unpickle it.
    again = run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": run}))
    assert again.code == 2 and "already holds a run (checkpoint.pt" in again.err
    assert again.err.strip().count("\n") == 0
    assert not marker.exists()


def test_model_commands_never_unpickle_a_hostile_checkpoint(
    tmp_path: Path,
    evil: tuple[Path, Path],
    image_folder: Path,
    run_cli: Callable[..., Any],
) -> None:
    run, marker = evil
    ckpt = run / "checkpoint.pt"
    query = next(image_folder.glob("*/*.png"))
    commands: list[tuple[str, ...]] = [
        ("evaluate", "--checkpoint", str(ckpt)),
        ("evaluate", "--checkpoint", str(run)),  # a run folder: its checkpoint.pt
        ("export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")),
        ("embed", "--checkpoint", str(ckpt), "--data", str(image_folder), "--out", str(tmp_path / "g.npz")),
        ("index", "--checkpoint", str(ckpt), "--data", str(image_folder), "--out", str(tmp_path / "idx")),
        ("search", "--index", str(_index_of(tmp_path / "index", ckpt)), "--checkpoint", str(ckpt), str(query)),
    ]  # fmt: skip
    for command in commands:
        _one_line_refusal(run_cli(*command), command[0], ckpt)
        assert not marker.exists(), command
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "g.npz").exists()


def test_serve_never_unpickles_a_hostile_checkpoint(
    tmp_path: Path, evil: tuple[Path, Path]
) -> None:
    """`vmfml serve --index DIR` rebuilds the model of the checkpoint the index recorded."""
    from vmfml.index import Searcher

    run, marker = evil
    index = _index_of(tmp_path / "index", run / "checkpoint.pt")
    with pytest.raises(ValueError, match=REFUSED):
        Searcher.from_index(index)  # what src/vmfml/web/commands.py calls
    assert not marker.exists()


def _index_of(folder: Path, ckpt: Path) -> Path:
    """An index folder (8 random unit vectors) that records `ckpt` as its model's checkpoint."""
    from vmfml.index.search_index import SearchIndex

    vectors = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [{"path": f"{i}.png", "label": "a"} for i in range(8)]
    meta = {"model": {"checkpoint": str(ckpt.resolve())}}
    SearchIndex.build(vectors, items, meta).save(folder)
    return folder
