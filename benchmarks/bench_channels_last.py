"""Channels-last against the default weight layout for EfficientNet-Lite0 at 64 px on this CPU.

`EmbeddingModel` stores every backbone's convolution weights channels-last; this measures what
that buys for the pretrained backbone of the retrieval benchmark: images/s for inference (batch
256) and for training steps (batch 128, AdamW), and the largest output difference.

    .venv/bin/python benchmarks/bench_channels_last.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from vmfml.models import create_model


def images_per_second(
    model: torch.nn.Module, batch: torch.Tensor, repeats: int, train: bool
) -> float:
    if train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad()
            model(batch).sum().backward()
            opt.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(batch)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return repeats * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for mode, size, train in (("inference", 256, False), ("training", 128, True)):
        batch = torch.randn(size, 3, 64, 64)
        speeds = {}
        for layout in ("default", "channels_last"):
            model = create_model("efficientnet_lite0", embed_dim=128, pretrained=True)
            if layout == "default":
                model.to(memory_format=torch.contiguous_format)
            speeds[layout] = images_per_second(model, batch, args.repeats, train)
        rows.append((mode, speeds))
    a = create_model("efficientnet_lite0", embed_dim=128, pretrained=True).eval()
    b = create_model("efficientnet_lite0", embed_dim=128, pretrained=True).eval()
    b.to(memory_format=torch.contiguous_format)
    b.load_state_dict(a.state_dict())
    with torch.inference_mode():
        x = torch.randn(16, 3, 64, 64)
        diff = float((a(x) - b(x)).abs().max())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| pass | default images/s | channels-last images/s | ratio |")
    print("|---|--:|--:|--:|")
    for mode, s in rows:
        print(
            f"| {mode} | {s['default']:.0f} | {s['channels_last']:.0f} | {s['channels_last'] / s['default']:.2f} |"
        )
    print(f"largest output difference: {diff:.1e}")


if __name__ == "__main__":
    main()
