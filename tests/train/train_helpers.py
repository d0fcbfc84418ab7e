"""What the training tests share: a quick small-CNN setting and its command-line form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# A one-block, half-width CNN on a few hundred Fashion-MNIST images: seconds per run.
QUICK: dict[str, Any] = {
    "depth": 1,
    "width": 0.5,
    "batch_size": 100,
    "plots": False,
    "progress": False,
    "threads": 1,
}


def flags(settings: dict[str, Any]) -> list[str]:
    """`vmfml train` flags for config settings (tuples as comma lists)."""
    out: list[str] = []
    for key, value in settings.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        out += ["--" + key.replace("_", "-"), text]
    return out


def nan_after(create: Callable[..., Any], calls: int, where: str) -> Callable[..., Any]:
    """A `create_loss` whose losses turn NaN after `calls` forward passes: the loss value itself
    (where="loss") or the network's embeddings handed to it (where="embeddings")."""

    def create_poisoned(*args: Any, **kwargs: Any) -> Any:
        inner = create(*args, **kwargs)
        seen = {"n": 0}
        real_forward = inner.forward

        def forward(emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            seen["n"] += 1
            poisoned = seen["n"] > calls
            if poisoned and where == "embeddings":
                emb = emb * float("nan")
            value = real_forward(emb, labels)
            return value * float("nan") if poisoned and where == "loss" else value

        inner.forward = forward
        return inner

    return create_poisoned
