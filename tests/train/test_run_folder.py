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


# ---- issue 21 #4: a run folder is owned by its run -----------------------------------------


def test_a_second_run_into_a_folder_in_use_is_refused_at_once(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    """Two `vmfml train` into one --out-dir used to both run and mix their files. The first,
    a real process, holds the folder's lock; the second is refused naming it, before any work;
    the kernel frees the lock when the first is killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from vmfml.train import run_folder

    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "vmfml", "train", *flags({**QUICK, "epochs": 50, "out_dir": out})],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = out / run_folder.LOCK
        deadline = time.monotonic() + 120
        while f"pid {first.pid} " not in (lock.read_text() if lock.is_file() else ""):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run never took the folder"
            time.sleep(0.2)
        _no_training(monkeypatch)
        started = time.monotonic()
        second = run_cli("train", "--overwrite", *flags({**QUICK, "epochs": 1, "out_dir": out}))
        assert time.monotonic() - started < 10
        assert second.code == 2 and second.err.count("\n") == 1
        assert second.err.startswith(f"vmfml train: error: {out} is in use by another run (")
        assert f"vmfml train, pid {first.pid} on {os.uname().nodename}, started 20" in second.err
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with run_folder.claim(out):  # the lock died with its holder
        pass


def test_files_vmfml_did_not_write_are_not_replaced_without_overwrite(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: own settings\n")
    (out / "history.json").write_text('{"my": "notes"}')
    with monkeypatch.context() as m:
        _no_training(m)
        refused = run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": out}))
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert (
        f"{out} holds config.yaml, history.json, which vmfml did not write; a new run would "
        "replace them: move them away, pass --overwrite to replace them" in refused.err
    )
    assert (out / "config.yaml").read_text() == "my: own settings\n"
    assert (out / "history.json").read_text() == '{"my": "notes"}'
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "history.json"]

    # With --overwrite they are replaced; the files the run wrote are its own from then on.
    assert run_cli("train", "--overwrite", *flags({**QUICK, "epochs": 1, "out_dir": out})).code == 0
    assert "my: own" not in (out / "config.yaml").read_text()
    for name in ("checkpoint.pt", "best.pt", "metrics.json"):
        (out / name).unlink()  # what is left is vmfml's: a new run may replace it
    assert run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": out})).code == 0
    # A file of the run changed by hand is the user's again.
    (out / "history.json").write_text("[]")
    (out / "checkpoint.pt").unlink()
    (out / "metrics.json").unlink()
    again = run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": out}))
    assert again.code == 2 and "holds history.json, which vmfml did not write" in again.err


# ---- issue 21 #6: the training side ---------------------------------------------------------


def test_a_failed_start_removes_what_it_wrote(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    """A run that fails before its first checkpoint (here: the loss is NaN from the first
    step) used to leave its folder holding config.yaml."""
    from train_helpers import nan_after

    monkeypatch.setattr(loop, "create_loss", nan_after(loop.create_loss, 0, "loss"))
    new = tmp_path / "runs" / "new"
    result = run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": new}))
    assert result.code == 1 and "stopped: the loss became nan" in result.err
    assert not new.exists() and not new.parent.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    assert run_cli("train", *flags({**QUICK, "epochs": 1, "out_dir": old})).code == 1
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt"]


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    import errno

    import torch

    from vmfml.train import checkpoint

    real_save = torch.save

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and obj.get("epoch") == 2 and "optimizer" in obj:
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    out = tmp_path / "run"
    result = run_cli("train", *flags({**QUICK, "epochs": 2, "out_dir": out}))
    assert result.code == 2
    assert result.err == (
        f"vmfml train: error: cannot write {out / 'checkpoint.pt'}: No space left on device; "
        "the previous checkpoint.pt is kept\n"
    )
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_absurd_but_finite_lr_ends_in_the_documented_stop(
    tmp_path: Path, fashion_sample: object, run_cli: Any
) -> None:
    """`--lr 1e300` ended in a RuntimeError traceback (the step overflows float32)."""
    for lr in ("1e300", "1e30"):
        out = tmp_path / lr
        result = run_cli("train", *flags({**QUICK, "epochs": 1, "lr": lr, "out_dir": out}))
        assert result.code == 1, (lr, result.err[-500:])
        assert result.err.startswith("vmfml train: stopped: ") and result.err.count("\n") == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"out_dir": "afile"}, "--out-dir {afile} is a file, not a folder"),
        ({"device": "mps"}, "device 'mps' asked for, but MPS (Apple's GPU) is not available"),
        ({"seed": -1}, "seed must be 0 or more; got -1"),
        ({"lr": "inf"}, "lr must be a finite number; got inf"),
        ({"warmup_epochs": "nan"}, "warmup_epochs must be a finite number; got nan"),
        (
            {"nproc": 3, "batch_size": 100},
            "--batch-size 100 is the global batch, shared by 3 processes: it must be a multiple "
            "of 3 (e.g. 99 or 102)",
        ),
    ],
)
def test_bad_starts_are_one_line_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Any,
    settings: dict[str, Any],
    message: str,
) -> None:
    """Issue 21 #6: tracebacks for these, and --nproc's batch checked only after torchrun
    started (naming the wrong batch size)."""
    import subprocess

    _no_training(monkeypatch)

    def no_launch(*args: object, **kwargs: object) -> None:
        raise AssertionError("torchrun was launched")

    monkeypatch.setattr(subprocess, "run", no_launch)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    settings = {"out_dir": tmp_path / "runs" / "r", **settings}
    if settings["out_dir"] == "afile":
        settings["out_dir"] = a_file
    message = message.format(afile=a_file)
    result = run_cli("train", *flags({**QUICK, "epochs": 1, **settings}))
    assert result.code == 2, result
    assert result.err.startswith(f"vmfml train: error: {message}"), result.err
    assert result.err.count("\n") == 1, result.err
    assert not (tmp_path / "runs").exists()
    assert a_file.read_text() == "x"


def test_an_image_size_that_cannot_fit_is_refused_with_what_fits(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    """--image-size 2048 was killed by the kernel without a word: refused before training,
    with what fits (the free memory fixed, so that the test means the same on every machine)."""
    from vmfml.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 8 * 2**30)
    monkeypatch.setattr(loop, "build_loss", _refuse_loss)
    out = tmp_path / "b"
    big = run_cli("train", *flags({**QUICK, "epochs": 1, "image_size": 2048, "out_dir": out}))
    assert big.code == 2 and big.err.count("\n") == 1, big.err
    assert "--model small_cnn at 2048 px does not fit: " in big.err
    assert "GiB" in big.err and "about --image-size " in big.err
    assert not out.exists()


def _refuse_loss(*args: object, **kwargs: object) -> None:
    raise AssertionError("the run started")


def test_a_run_stopped_by_its_time_cap_resumes_with_a_larger_one(
    tmp_path: Path, fashion_sample: object, run_cli: Any
) -> None:
    out = tmp_path / "run"
    capped = run_cli("train", *flags({**QUICK, "epochs": 3, "max_minutes": 1e-6, "out_dir": out}))
    assert capped.code == 0 and load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    more = run_cli(
        "train", "--resume", *flags({**QUICK, "epochs": 3, "max_minutes": 60, "out_dir": out})
    )
    assert more.code == 0, more.err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 3


def test_nproc_takes_the_folder_before_launching_and_its_processes_run_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    """`vmfml train --nproc N` checks and holds the folder before torchrun starts (a busy folder
    launches nothing); the processes it starts find the lock held for them (`HELD_ENV`)."""
    import subprocess

    from vmfml.train import run_folder

    out = tmp_path / "run"
    launched: list[dict[str, str]] = []

    def fake_torchrun(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        launched.append(env)
        # What torchrun's process 0 does: claim the folder without taking the lock.
        with monkeypatch.context() as m:
            m.setattr(run_folder.os, "environ", env)
            assert run_folder.held_by_launcher(out)
            with run_folder.claim(out, lock=not run_folder.held_by_launcher(out)):
                pass
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_torchrun)
    with run_folder.claim(out):  # another run holds the folder
        busy = run_cli("train", "--nproc", "2", *flags({**QUICK, "out_dir": out}))
    assert busy.code == 2 and f"{out} is in use by another run (vmfml train, pid" in busy.err
    assert not launched
    assert run_cli("train", "--nproc", "2", *flags({**QUICK, "out_dir": out})).code == 0
    assert launched and launched[0][run_folder.HELD_ENV] == str((out / run_folder.LOCK).resolve())
    assert not out.exists()  # nothing was written: the folder made for the lock is gone


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
        f"{out} holds a finished run (epoch 1 of 1: the only epoch done); nothing to resume. Its "
        f"test metrics are in {out / 'metrics.json'}, measured on the kept epoch 1. Pass "
        "--overwrite to train it again, or --out-dir NEW."
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
