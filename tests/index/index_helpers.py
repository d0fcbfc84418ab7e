"""Helpers of the index tests. Real image folders: Fashion-MNIST test images written as PNGs in class
subfolders (a gallery and a disjoint query set), an untrained small CNN checkpoint, and the
model's embeddings computed by hand (independently of vmfml's transforms and loaders)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat"]
GALLERY_PER_CLASS = 12
QUERIES_PER_CLASS = 2


@dataclass
class Folders:
    gallery: Path  # gallery/<class>/<n>.png
    queries: Path  # queries/<class>/<n>.png, other images than the gallery's
    checkpoint: Path
    model: torch.nn.Module
    gallery_pixels: dict[str, np.ndarray]  # path -> uint8 [28, 28]
    query_pixels: dict[str, np.ndarray]


def write_pngs(
    root: Path, x: np.ndarray, y: np.ndarray, picks: dict[int, np.ndarray]
) -> dict[str, np.ndarray]:
    written = {}
    for c, rows in picks.items():
        folder = root / CLASSES[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in rows:
            path = folder / f"{i:05d}.png"
            Image.fromarray(x[i]).save(path)
            written[str(path.resolve())] = x[i]
    return written


def reference_embeddings(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """float64 [N, D]: the model applied to grey 28x28 pixels normalized by hand."""
    pre = model.preprocessing  # type: ignore[attr-defined]
    assert tuple(pre["input_size"]) == (1, 28, 28)
    x = torch.from_numpy(np.array(pixels)).float().div(255.0).unsqueeze(1)
    x = (x - pre["mean"][0]) / pre["std"][0]
    with torch.inference_mode():
        return model.eval()(x).double().numpy()


def make_checkpoint(path: Path, seed: int, embed_dim: int = 16) -> torch.nn.Module:
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    torch.manual_seed(seed)
    model = create_model("small_cnn", embed_dim=embed_dim, depth=2, width=0.25).eval()
    save_model_checkpoint(path, model, CLASSES)
    return model


def clustered_unit_vectors(
    n: int, d: int, clusters: int, seed: int, spread: float = 0.35
) -> np.ndarray:
    """float32 [n, d] unit vectors around `clusters` random centres (a gallery-like layout)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by float64 dot products: (scores [Q, k], ids [Q, k])."""
    sims = queries.astype(np.float64) @ gallery.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def image_options(
    folders: Folders, data: Path | None = None, checkpoint: Path | None = None
) -> list[str]:
    """The options of `vmfml embed` / `vmfml index` that embed a folder of images: the checkpoint
    (the test model's unless given), the folder (the gallery unless given), no progress bar."""
    return [
        "--checkpoint",
        str(checkpoint or folders.checkpoint),
        "--data",
        str(data or folders.gallery),
        "--no-progress",
    ]


def embed_gallery(run_cli: Callable[..., Any], folders: Folders, out: Path) -> Path:
    """`vmfml embed` of the gallery into the file `out` (`run_cli` is the fixture)."""
    assert run_cli("embed", *image_options(folders), "--out", out).code == 0
    return out


def index_gallery(run_cli: Callable[..., Any], folders: Folders, out: Path) -> Path:
    """`vmfml index` straight from the gallery's images into the folder `out`."""
    assert run_cli("index", *image_options(folders), "--out", out).code == 0
    return out
