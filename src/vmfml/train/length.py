"""How long a run trains when --epochs is auto: a budget of optimizer steps, not of epochs.

A fixed number of epochs fits one data set size: 5 epochs are 1,170 steps on Fashion-MNIST's
60,000 images but 80 steps on a folder of 4,000, far too few. A budget of steps gives a small
folder many epochs and a large data set few. The numbers were chosen by measurement on real
folders of 2,000 to 60,000 images (BENCHMARKS.md section 6, `benchmarks/bench_training_length.py`).
"""

from __future__ import annotations

import math

__all__ = ["AUTO_MAX_EPOCHS", "AUTO_MIN_EPOCHS", "AUTO_STEPS", "training_epochs"]

# Optimizer steps an auto-length run aims for, and the bounds on its epochs.
AUTO_STEPS = 1200
AUTO_MIN_EPOCHS = 5
AUTO_MAX_EPOCHS = 100


def training_epochs(epochs: int | None, steps_per_epoch: int) -> int:
    """`epochs` when given; otherwise ceil(AUTO_STEPS / steps_per_epoch), within the bounds."""
    if epochs is not None:
        return epochs
    wanted = math.ceil(AUTO_STEPS / max(1, steps_per_epoch))
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, wanted))
