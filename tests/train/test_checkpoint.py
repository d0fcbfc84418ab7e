from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from vmfml.train import checkpoint
from vmfml.train.checkpoint import atomic_save, load_checkpoint


def test_atomic_save_keeps_the_previous_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_save({"format": checkpoint.FORMAT, "version": 1, "epoch": 1}, path)

    def broken_save(obj: object, f: str) -> None:
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": checkpoint.FORMAT, "version": 1, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_load_refuses_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    good = tmp_path / "good.pt"
    atomic_save({"format": checkpoint.FORMAT, "version": 1, "w": torch.zeros(1000)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cannot read vmfml checkpoint .*: PytorchStreamReader"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a vmfml checkpoint"):
        load_checkpoint(foreign)


def test_a_run_folder_loads_best_pt_and_names_the_file_for_resuming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmfml.models.registry import create_model

    model = create_model("small_cnn", embed_dim=8)
    run = tmp_path / "run"
    run.mkdir()
    checkpoint.save_model_checkpoint(run / "checkpoint.pt", model, epoch=3)
    checkpoint.load_embedding_model(run)  # no best.pt: the last epoch, nothing to say
    assert capsys.readouterr().err == ""

    checkpoint.save_model_checkpoint(run / "best.pt", model, epoch=2)
    for named in (run, run / "checkpoint.pt"):
        _, ckpt = checkpoint.load_embedding_model(named)
        assert ckpt["epoch"] == 2
        err = capsys.readouterr().err
        assert f"model from {run / 'best.pt'} (epoch 2, kept by validation;" in err
        assert f"{run / 'checkpoint.pt'} holds the last epoch, for --resume" in err
