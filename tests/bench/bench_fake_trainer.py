"""A stand-in for `vmfml.train.loop.train` for the harness's own tests (resume, failures, time
budget, worker processes): instant, with metrics that are a known function of the settings.

Behaviour by loss: "contrastive" diverges, "npair" raises an error; the environment variable
FAKE_TRAIN_SLEEP (seconds) makes every run take that long.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vmfml.train.config import TrainConfig
from vmfml.train.loop import RunResult, TrainingDiverged


def expected_accuracy(config: TrainConfig | dict[str, Any]) -> float:
    get = config.get if isinstance(config, dict) else lambda k: getattr(config, k)
    return 0.5 + 0.1 * get("depth") + 0.01 * get("seed") + (0.05 if get("loss") == "vmf" else 0.0)


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    assert resume is False
    time.sleep(float(os.environ.get("FAKE_TRAIN_SLEEP", "0")))
    if config.loss == "contrastive":
        raise TrainingDiverged("the loss became nan at epoch 1, iteration 3")
    if config.loss == "npair":
        raise RuntimeError("CUDA out of memory (simulated)")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.pt").write_bytes(b"weights")
    accuracy = expected_accuracy(config)
    metrics: dict[str, Any] = {
        "accuracy": accuracy,
        "classifier_accuracy": accuracy,
        "ece": 0.02,
        "recall@1": accuracy,
        "recall@2": accuracy,
        "map@r": accuracy / 2,
        "nmi": 0.5,
        "timing": {
            "train_seconds": 2.0 * config.epochs,
            "refresh_seconds": 1.0 * config.epochs
            if config.directions == "global" and config.loss == "vmf"
            else 0.0,
            "epoch_seconds_mean": 3.0
            if config.directions == "global" and config.loss == "vmf"
            else 2.0,
            "images_per_second": 1000.0,
        },
        "run": {"config": config.to_dict(), "machine": "fake"},
    }
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1)} for e in range(config.epochs)]
    return RunResult(metrics=metrics, history=history, out_dir=out)
