"""Scale-out and precision: what N processes and bf16 buy, measured with the project's own code.

Two measurements, each printed as a markdown table:

- `processes`: the real `vmfml train` (Fashion-MNIST subset, small CNN, `global` directions so the
  full pass is timed too) with 1 process and with N under torchrun; images/s of the training steps,
  seconds of the full pass per epoch, wall time. On a CPU each of N processes gets cores/N threads,
  so 1 against N processes on the same cores is a like-for-like comparison.
- `precision`: images/s of a training step (the loop's `Objective`: forward, vMF loss, backward,
  AdamW step) of small_cnn, EfficientNet-Lite0 and timm resnet50 at 224 px, in float32, bf16
  autocast, and bf16 with the weights and inputs in channels-last layout.

    python benchmarks/bench_scaleout.py processes --nproc 1 2            # CPU (gloo) or GPUs (NCCL)
    python benchmarks/bench_scaleout.py precision --device cuda --steps 30
    python benchmarks/bench_scaleout.py precision --device cpu --steps 2 --size 64 --batch 16  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TRAIN = [
    "--train-subset", "16384", "--epochs", "2", "--batch-size", "256", "--directions", "global",
    "--val-fraction", "0", "--eval-every", "0", "--plots", "false", "--progress", "false",
]  # fmt: skip


def processes(counts: list[int], device: str) -> str:
    cores = os.cpu_count() or 1
    rows = [
        "| processes | images/s (training steps) | full pass s/epoch | wall s |",
        "|---|---|---|---|",
    ]
    for n in counts:
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ}
            if device == "cpu":
                env["OMP_NUM_THREADS"] = str(max(1, cores // n))
            launcher = [sys.executable]
            if n > 1:
                launcher += [
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc-per-node",
                    str(n),
                ]
            command = [*launcher, "-m", "vmfml", "train", *TRAIN, "--device", device]
            command += ["--out-dir", out]
            if device == "cpu":
                command += ["--threads", str(max(1, cores // n))]
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            history = json.loads((Path(out) / "history.json").read_text())
        images = sum(r["images_per_second"] * r["train_seconds"] for r in history)
        seconds = sum(r["train_seconds"] for r in history)
        refresh = sum(r["refresh_seconds"] for r in history) / len(history)
        rows.append(f"| {n} | {images / seconds:.0f} | {refresh:.1f} | {wall:.0f} |")
    return "\n".join(rows)


def precision(device: str, steps: int, size: int, batch: int) -> str:
    from vmfml.losses import create_loss
    from vmfml.models import create_model
    from vmfml.train.loop import Objective

    dev = torch.device(device)
    rows = ["| model | fp32 images/s | bf16 images/s | bf16 + channels-last images/s |"]
    rows.append("|---|---|---|---|")
    models = {
        "small_cnn": {"name": "small_cnn", "in_chans": 3, "input_size": size},
        "efficientnet_lite0": {"name": "efficientnet_lite0", "input_size": size},
        "timm resnet50": {"name": "timm:resnet50", "input_size": size},
    }
    for label, opts in models.items():
        cells = []
        for precision_name, channels_last in (("32", False), ("bf16", False), ("bf16", True)):
            model = create_model(embed_dim=128, **opts).to(dev)
            layout = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=layout)
            loss = create_loss("vmf", 100, 128, seed=0).to(dev)
            objective = Objective(model, loss, dev, precision_name)
            optimizer = torch.optim.AdamW([*model.parameters()], lr=1e-4)
            images = torch.randn(batch, 3, size, size, device=dev).to(memory_format=layout)
            labels = torch.randint(0, 100, (batch,), device=dev)
            for step in range(steps + 3):  # 3 warm-up steps
                if step == 3:
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                value, _ = objective(images, labels)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            cells.append(f"{steps * batch / (time.perf_counter() - start):.0f}")
        rows.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("processes", "precision"))
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"# {args.what} on {args.device}, torch {torch.__version__}")
    if args.what == "processes":
        print(processes(args.nproc, args.device))
    else:
        print(precision(args.device, args.steps, args.size, args.batch))


if __name__ == "__main__":
    main()
