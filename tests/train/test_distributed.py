"""Training and embedding under torchrun (2 CPU processes, gloo) against one process.

Equality is checked in float64 (`--precision 64`): there the two runs compute the same function,
so they must agree to rounding (1e-9 is asked; 1e-13 is seen). In float32 they agree only to about
2e-3 in the mean directions after 8 steps: the first layer's weight gradient is a sum over 100,000
positions with heavy cancellation (batch norm makes the upstream gradient sum to zero), so any
change in the arithmetic (two halves averaged instead of one sum; the processes' float64 batch-norm
statistics instead of torch's float32 layer) moves it by 1e-4 to 1e-3 relative at the first step,
and the optimizer carries that on. The float32 test therefore asks for the metrics to agree within
0.5 points: the measured gaps are under 0.2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_helpers import flags

pytestmark = pytest.mark.slow

RUN = {
    "train_subset": 1024,
    "batch_size": 128,
    "epochs": 2,
    "depth": 2,
    "width": 0.5,
    "plots": "false",
    "progress": "false",
    "eval_every": 0,
    "threads": 1,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def vmfml(*args: str, processes: int = 1, **kw: Any) -> subprocess.CompletedProcess[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*launcher, "-m", "vmfml", *args], env=ENV, capture_output=True, text=True, **kw
    )


def train(out: Path, processes: int, **settings: Any) -> dict[str, Any]:
    """Train with RUN's settings overridden by `settings` (None leaves one of RUN's out)."""
    chosen = {k: v for k, v in {**RUN, **settings, "out_dir": out}.items() if v is not None}
    result = vmfml("train", *flags(chosen), processes=processes, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out / "checkpoint.pt", weights_only=False)  # type: ignore[no-any-return]


def metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(
        float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
    )


@pytest.mark.parametrize("directions", ["accumulate", "global"])
def test_two_processes_train_what_one_does(
    tmp_path: Path, fashion_sample: object, directions: str
) -> None:
    one = train(tmp_path / "one", 1, directions=directions, precision=64)
    two = train(tmp_path / "two", 2, directions=directions, precision=64)
    mu_one, mu_two = (c["loss"]["state_dict"]["directions.mu"] for c in (one, two))
    assert mu_one.dtype == torch.float64
    assert float((mu_one - mu_two).abs().max()) < 1e-9
    assert max_difference(one["model"]["state_dict"], two["model"]["state_dict"]) < 1e-9
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for key in ("accuracy", "classifier_accuracy", "recall@1", "map@r", "nmi"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-9), key
    assert m2["run"]["processes"] == 2 and m1["run"]["processes"] == 1
    assert [h["train_loss"] for h in one["history"]] == pytest.approx(
        [h["train_loss"] for h in two["history"]], abs=1e-9
    )


def test_two_processes_augment_an_image_folder_as_one_does(
    tmp_path: Path, image_folder: Path
) -> None:
    """Issue 21: the folder path drew its flips per process (accuracy 0.394 against 0.412); each
    image's draw now comes from the seed, the epoch and the image alone."""
    settings = {"data": image_folder, "train_subset": None, "batch_size": 16, "epochs": 1}
    settings |= {"augment": "flip", "precision": 64}
    one = train(tmp_path / "one", 1, **settings)
    two = train(tmp_path / "two", 2, **settings)
    assert max_difference(one["model"]["state_dict"], two["model"]["state_dict"]) < 1e-9
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for key in ("accuracy", "recall@1", "map@r"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-9), key


@pytest.mark.parametrize("loss", ["triplet", "proxy_anchor"])
def test_a_loss_of_the_whole_batch_trains_on_two_processes_what_it_does_on_one(
    tmp_path: Path, fashion_sample: object, loss: str
) -> None:
    """Triplets mined across the processes' chunks, and Proxy-Anchor's proxies (a loss that is
    not a mean over samples, with parameters at 100x), match one process to rounding."""
    one = train(tmp_path / "one", 1, loss=loss, precision=64)
    two = train(tmp_path / "two", 2, loss=loss, precision=64)
    assert max_difference(one["model"]["state_dict"], two["model"]["state_dict"]) < 1e-9
    if loss == "proxy_anchor":
        assert max_difference(one["loss"]["state_dict"], two["loss"]["state_dict"]) < 1e-9
    assert [h["train_loss"] for h in one["history"]] == pytest.approx(
        [h["train_loss"] for h in two["history"]], abs=1e-9
    )


def test_float32_metrics_agree_within_half_a_point(tmp_path: Path, fashion_sample: object) -> None:
    train(tmp_path / "one", 1)
    # `vmfml train --nproc 2` is the shortcut for the torchrun command.
    two = vmfml("train", "--nproc", "2", *flags({**RUN, "out_dir": tmp_path / "two"}), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "-m torch.distributed.run --standalone --nproc-per-node 2 -m vmfml train" in two.stdout
    assert two.stdout.count("running: ") == 1
    assert "Setting OMP_NUM_THREADS" not in two.stdout + two.stderr  # torchrun's own banner
    m1, m2 = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert m2["run"]["processes"] == 2
    for key in ("accuracy", "recall@1", "map@r"):
        assert m1[key] == pytest.approx(m2[key], abs=0.005), key


def test_killed_process_ends_the_run_and_it_resumes_in_one_process(
    tmp_path: Path, fashion_sample: object
) -> None:
    """Kill one of two processes after the first checkpoint: the run ends with a message within
    30 s; one process resumes it and ends where an uninterrupted run ends."""
    extra = {"epochs": 3, "precision": 64, "directions": "global"}
    settings = {**RUN, **extra}
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.Popen(
        [*cmd, "-m", "vmfml", "train", *flags({**settings, "out_dir": out})],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # torchrun's children that run vmfml (not any helper process it may start).
    workers = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "vmfml"], capture_output=True, text=True
    ).stdout.split()
    assert len(workers) == 2, f"expected the 2 workers, found {workers} (did the run end?)"
    killed_at = time.monotonic()
    os.kill(int(workers[1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - killed_at < 30, err[-2000:]
    assert proc.returncode != 0
    # The survivor says why it stops (in one line, or in torchrun's words when it was faster).
    assert "another process of this run ended" in err, err[-2000:]
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] in (1, 2)  # a whole checkpoint, never a partial one

    resumed = vmfml("train", "--resume", *flags({**settings, "out_dir": out}), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {out / 'checkpoint.pt'}" in resumed.stdout
    whole = train(tmp_path / "whole", 1, **extra)
    after = torch.load(out / "checkpoint.pt", weights_only=False)
    assert max_difference(after["model"]["state_dict"], whole["model"]["state_dict"]) < 1e-9
    mu = [c["loss"]["state_dict"]["directions.mu"] for c in (after, whole)]
    assert float((mu[0] - mu[1]).abs().max()) < 1e-9


NAN_SCRIPT = """
import sys, torch
from vmfml import distributed
from vmfml.cli import main
from vmfml.losses.vmf import VMFLoss

forward = VMFLoss.forward
calls = [0]

def poisoned(self, embeddings, labels):
    calls[0] += 1
    value = forward(self, embeddings, labels)
    # Only process 1 sees a NaN, at its third step.
    return value * float("nan") if distributed.rank() == 1 and calls[0] == 3 else value

VMFLoss.forward = poisoned
sys.exit(main(sys.argv[1:]))
"""


def test_nan_on_one_process_stops_every_process(tmp_path: Path, fashion_sample: object) -> None:
    script = tmp_path / "poisoned.py"
    script.write_text(NAN_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = subprocess.run(
        [*cmd, str(script), "train", *flags({**RUN, "out_dir": tmp_path / "nan"})],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "the loss became nan at epoch 1, iteration 3" in result.stderr
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()  # no epoch finished


def test_two_processes_embed_what_one_does(tmp_path: Path, image_folder: Path) -> None:
    train(tmp_path / "run", 1, epochs=1)
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    files = []
    for processes in (1, 2):
        out = tmp_path / f"gallery{processes}.npz"
        common = ["--checkpoint", checkpoint, "--data", str(image_folder), "--batch-size", "16"]
        result = vmfml("embed", *common, "--out", str(out), processes=processes, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        files.append(np.load(out))
    one, two = files
    assert one["embeddings"].shape == (120, 128)
    np.testing.assert_allclose(one["embeddings"], two["embeddings"], atol=1e-5)
    assert (one["labels"] == two["labels"]).all() and (one["paths"] == two["paths"]).all()
