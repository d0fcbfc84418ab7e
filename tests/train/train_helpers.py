"""What the training tests share: a quick small-CNN setting and its command-line form."""

from __future__ import annotations

from typing import Any

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
