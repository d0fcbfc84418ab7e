"""The cost of batch norm over the global batch (float64 statistics, `GlobalBatchNorm`) against
torch's own layer, in one process: forward and backward of the default small CNN on a batch of
256 Fashion-MNIST-sized images, two rounds interleaved.

    python benchmarks/bench_batchnorm.py
"""

from __future__ import annotations

import time

import torch

from vmfml.distributed import global_batchnorm
from vmfml.models import create_model


def seconds_per_step(global_stats: bool, steps: int = 6) -> float:
    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=128, depth=3, in_chans=1, input_size=28)
    if global_stats:
        global_batchnorm(model)
    x = torch.randn(256, 1, 28, 28)
    for _ in range(2):  # warm-up
        model(x).sum().backward()
    start = time.perf_counter()
    for _ in range(steps):
        model(x).sum().backward()
    return (time.perf_counter() - start) / steps


def main() -> None:
    print("| round | torch BatchNorm s/step | global float64 BatchNorm s/step |")
    print("|---|---|---|")
    for round_ in (1, 2):
        plain, global_ = seconds_per_step(False), seconds_per_step(True)
        print(f"| {round_} | {plain:.3f} | {global_:.3f} |")


if __name__ == "__main__":
    main()
