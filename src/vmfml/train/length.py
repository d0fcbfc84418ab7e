"""How long a run trains when --epochs is auto: a budget of optimizer steps, not of epochs.

A fixed number of epochs fits one data set size: 5 epochs are 1,050 steps on Fashion-MNIST's
54,000 training images but 75 steps on a folder of 4,000, far too few. A budget of steps gives a
small folder many epochs and a large data set few. Measured on real folders (BENCHMARKS.md
section 6, `benchmarks/bench_training_length.py`): test accuracy still rises up to about 500
steps on 1,440 to 7,200 training images and flattens between 500 and 1,100; Fashion-MNIST
reaches 91-92% in 1,050. So: 1,000 steps, at most 100 epochs (a folder of 1,440 images stops at
500 steps, past its plateau) and at least 5.
"""

from __future__ import annotations

import math

__all__ = ["AUTO_MAX_EPOCHS", "AUTO_MIN_EPOCHS", "AUTO_STEPS", "training_epochs"]

# Optimizer steps an auto-length run aims for, and the bounds on its epochs.
AUTO_STEPS = 1000
AUTO_MIN_EPOCHS = 5
AUTO_MAX_EPOCHS = 100


def training_epochs(epochs: int | None, steps_per_epoch: int) -> int:
    """`epochs` when given; otherwise ceil(AUTO_STEPS / steps_per_epoch), within the bounds."""
    if epochs is not None:
        return epochs
    wanted = math.ceil(AUTO_STEPS / max(1, steps_per_epoch))
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, wanted))
