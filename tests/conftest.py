"""Shared fixtures: small real images from the Debian Fashion-MNIST package."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="session")
def fashion_sample() -> tuple[np.ndarray, np.ndarray]:
    """The first 2,000 Fashion-MNIST test images `[N, 28, 28]` uint8 and their labels."""
    images = FASHION / "t10k-images-idx3-ubyte.gz"
    if not images.exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    x = _read_idx(images, 16).reshape(-1, 28, 28)[:2000]
    y = _read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)[:2000]
    return x, y


@pytest.fixture()
def image_folder(tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]) -> Path:
    """A folder of real PNGs, one subfolder per class (4 classes x 30 images)."""
    from PIL import Image

    x, y = fashion_sample
    root = tmp_path / "images"
    names = ["tshirt", "trouser", "pullover", "dress"]
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(y == c)[:30]):
            Image.fromarray(x[idx]).save(root / name / f"{i:03d}.png")
    return root
