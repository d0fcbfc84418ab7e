"""Checkpoints: written atomically, loadable without the training code that made them.

A checkpoint is one `torch.save` dict. The `model` entry (architecture config, weights and
preprocessing) is enough to rebuild the embedding model anywhere (`load_embedding_model`); the
other entries (loss state, optimizer, RNG states, history) let `vmfml train --resume` continue
exactly where a run stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vmfml.files import atomic_write
from vmfml.safe_load import load_tensors

if TYPE_CHECKING:
    from vmfml.models import EmbeddingModel

FORMAT = "vmfml-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, then rename it over `path`.

    A crash mid-write leaves the previous checkpoint intact (`vmfml.files.atomic_write`).
    """
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def model_entry(model: torch.nn.Module) -> dict[str, Any]:
    """What a checkpoint stores about an `EmbeddingModel`: enough to rebuild it anywhere."""
    return {
        "config": dict(model.config),  # type: ignore[arg-type]
        "state_dict": model.state_dict(),
        "preprocessing": dict(model.preprocessing),  # type: ignore[arg-type]
    }


def save_model_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    class_names: list[str] | None = None,
    **extra: Any,
) -> None:
    """Write a checkpoint holding the model (and anything in `extra`) atomically."""
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "model": model_entry(model),
            "class_names": class_names,
            **extra,
        },
        path,
    )


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint, refusing files that are missing, truncated or not vmfml checkpoints.

    Every command that reads a checkpoint reads it here, as tensors and plain data only
    (`vmfml.safe_load`): a file whose pickle would run code is refused before any of it runs.
    `mmap=True` maps the tensors instead of reading them (a cheap look at the small entries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = load_tensors(path, "vmfml checkpoint", map_location=map_location, mmap=mmap)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vmfml checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise ValueError(
            f"{path} was written by a newer vmfml (format {ckpt['version']} > {VERSION})"
        )
    return ckpt


def model_file(path: str | Path) -> Path:
    """The file to take a run's model from: a run folder, or its checkpoint.pt, means its best.pt
    when validation kept one (checkpoint.pt holds the last epoch, for resuming); any other file
    is itself."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (path.is_dir() or path.name == "checkpoint.pt") and (folder / "best.pt").is_file():
        return folder / "best.pt"
    if path.is_dir():
        return folder / "checkpoint.pt"
    return path


def load_embedding_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[EmbeddingModel, dict[str, Any]]:
    """Rebuild the embedding model of a checkpoint (or of a run: `model_file`), in eval mode.

    Returns (model, checkpoint dict). Says on stderr when a run's best.pt is used instead of the
    checkpoint.pt named.
    """
    from vmfml.models.registry import create_model

    chosen = model_file(path)
    ckpt = load_checkpoint(chosen, map_location)
    if chosen != Path(path) and chosen.name == "best.pt":
        print(
            f"vmfml: model from {chosen} (epoch {ckpt.get('epoch')}, kept by validation; "
            f"{chosen.parent / 'checkpoint.pt'} holds the last epoch, for --resume)",
            file=sys.stderr,
        )
    entry = ckpt["model"]
    config = dict(entry["config"])
    # Weights come from the checkpoint: never download or read pretrained files again.
    config.pop("pretrained", None)
    config.pop("weights", None)
    model = create_model(**config)
    model.load_state_dict(entry["state_dict"])
    model.preprocessing = dict(entry["preprocessing"])  # type: ignore[assignment]
    model.eval()
    return model, ckpt
