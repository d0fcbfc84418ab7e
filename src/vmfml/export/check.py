"""Check an exported model against PyTorch: same embeddings, to 1e-4, at several batch sizes.

An export can go wrong silently (an op traced as a constant, a batch size baked in, a kernel
with different numerics), so every export is run on real images, in one batch and one image at
a time, and compared with the PyTorch model it came from.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

DEFAULT_ATOL = 1e-4


class ExportMismatchError(ValueError):
    """The exported model's embeddings differ from PyTorch's by more than the tolerance."""


def run_exported(path: str | Path, fmt: str, images: Tensor) -> np.ndarray:
    """Embeddings `[B, D]` of float images `[B, C, H, W]` from an exported file.

    ONNX runs on onnxruntime's CPU provider; TorchScript with `torch.jit.load` on the CPU.
    """
    x = images.detach().cpu().float().contiguous()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray(session.run(None, {name: x.numpy()})[0])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # torch.jit is deprecated
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(x).numpy()
    raise ValueError(f"unknown export format {fmt!r}; valid formats: onnx, torchscript")


def check_export(
    path: str | Path,
    fmt: str,
    model: nn.Module,
    images: Tensor,
    atol: float = DEFAULT_ATOL,
) -> dict[str, Any]:
    """Compare the exported model with `model` on `images`, all at once and one by one.

    Args:
        path: the exported file.
        fmt: "onnx" or "torchscript".
        model: the PyTorch model it was exported from.
        images: float `[B, C, H, W]` (B >= 2), normalized with the model's preprocessing.
        atol: the largest allowed absolute difference of any embedding coordinate.

    Returns:
        `{"max_abs_diff", "images", "batch_sizes"}`.

    Raises:
        ExportMismatchError: a difference above `atol`, or an output of the wrong shape (the
            message gives the batch size and the difference).
    """
    if not (isinstance(atol, (int, float)) and np.isfinite(atol) and atol >= 0):
        raise ValueError(f"atol must be a finite number >= 0, got {atol!r}")
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"check images must be [B >= 2, C, H, W], got {tuple(images.shape)}")
    model = model.cpu().eval()
    x = images.detach().cpu().float()
    with torch.no_grad():
        reference = model(x).numpy()  # [B, D]
    worst = 0.0
    # The full batch (a size other than the export example's 2) and single images: a batch
    # axis fixed at export time fails one of the two.
    cases = [(x, reference), *((x[i : i + 1], reference[i : i + 1]) for i in range(min(3, len(x))))]
    for batch, expected in cases:
        got = run_exported(path, fmt, batch)
        if got.shape != expected.shape:
            raise ExportMismatchError(
                f"exported {fmt} model {path} returned shape {got.shape} for a batch of "
                f"{len(batch)}, PyTorch {expected.shape}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        if not np.isfinite(diff) or diff > atol:
            raise ExportMismatchError(
                f"exported {fmt} model {path} differs from PyTorch by {diff:.3g} (max abs) on a "
                f"batch of {len(batch)} images; tolerance {atol:g}"
            )
        worst = max(worst, diff)
    return {
        "max_abs_diff": worst,
        "images": len(x),
        "batch_sizes": sorted({len(b) for b, _ in cases}),
    }
