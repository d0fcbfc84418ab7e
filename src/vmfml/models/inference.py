"""Running a model over batches without gradients: the one routine that embeds images.

Training (the full pass of `global`, the end-of-run evaluation), `vmfml embed`, `vmfml index` and
the search service all embed through `embed_batches`, so eval mode, inference mode, mixed
precision and float32 outputs are decided in one place.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "autocast", "embed_batches", "model_inputs", "resolve_precision"]

# "64" runs the network in float64: slow, for reference runs and tests (e.g. that N processes
# compute what one does, free of float32 rounding).
PRECISIONS = ("auto", "32", "bf16", "fp16", "64")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 on a GPU that supports it and 32 elsewhere; fp16 and bf16 are refused
    where they cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if bf16_gpu else "32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA GPU; on this device use 32 or bf16")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a resolved precision ("32" and "64": none)."""
    if precision in ("32", "64"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def model_inputs(images: Tensor, device: torch.device, precision: str) -> Tensor:
    """Images on the model's device, in float64 for a float64 model."""
    images = images.to(device, non_blocking=True)
    return images.double() if precision == "64" else images


def embed_batches(
    model: Callable[..., Tensor],
    batches: Iterable[tuple[Tensor, Any]],
    device: torch.device | str,
    *,
    normalize: bool = True,
    precision: str = "32",
) -> Generator[tuple[Tensor, Any], None, None]:
    """Embed every (images [B, C, H, W], labels) batch in eval mode, without gradients.

    Yields (embeddings [B, D] on `device`, float32 or float64 as the model computes them, the batch's labels as given). Unit rows when
    `normalize`; otherwise the head's output before L2 normalization (an `EmbeddingModel`'s
    `normalize=False`). A module's training mode is restored when the iteration ends.
    """
    device = torch.device(device)
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        for images, labels in batches:
            with torch.inference_mode(), autocast(device, precision):
                x = model_inputs(images, device, precision)
                out = model(x) if normalize else model(x, normalize=False)
            yield out.to(torch.promote_types(out.dtype, torch.float32)), labels
    finally:
        if module is not None:
            module.train(was_training)
