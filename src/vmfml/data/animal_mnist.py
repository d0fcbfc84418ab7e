"""Animal-MNIST: 10,000 28x28 grey animal silhouettes, 10 classes x 1,000 (PyPI `animal-mnist`).

The package ships two gzipped pickles of numpy arrays in `animal_mnist/data/Animal_MNIST/`:
`animal_data_version_3.gz` (uint8 [10000, 28, 28]) and `animal_label_version_3.gz` (int64
[10000]). Its own loader imports tensorflow, so the files are read here directly, through an
unpickler that only rebuilds numpy arrays (a pickle can otherwise run arbitrary code).

Label order (checked by looking at the images; the package README lists the names
alphabetically): 0 Bear, 1 Bird, 2 Cat, 3 Cow, 4 Dog, 5 Elephant, 6 Giraffe, 7 Horse,
8 Sheep, 9 Zebra.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vmfml.data.dataset import TensorImageDataset

CLASS_NAMES = [
    "Bear",
    "Bird",
    "Cat",
    "Cow",
    "Dog",
    "Elephant",
    "Giraffe",
    "Horse",
    "Sheep",
    "Zebra",
]
DATA_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
INSTALL_HINT = "pip install --no-deps animal-mnist==0.4"


def animal_mnist(root: str | Path | None = None) -> TensorImageDataset:
    """Animal-MNIST as a `TensorImageDataset` of uint8 [10000, 1, 28, 28] images.

    Args:
        root: the folder holding the two .gz files; None finds them inside the installed
            `animal_mnist` package (without importing it).
    """
    folder = Path(root).expanduser() if root is not None else package_data_dir()
    if folder is None:
        raise FileNotFoundError(
            f"Animal-MNIST is not installed: run `{INSTALL_HINT}` (or pass root=)"
        )
    data_path, label_path = folder / DATA_FILE, folder / LABEL_FILE
    for path in (data_path, label_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Animal-MNIST file not found: {path} (reinstall with `{INSTALL_HINT}`)"
            )
    images = _load_array(data_path)
    labels = _load_array(label_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{data_path}: expected uint8 images [N, H, W]; got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
        raise ValueError(
            f"{label_path}: expected {len(images)} integer labels; got {labels.dtype} of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{label_path}: labels must lie in [0, {len(CLASS_NAMES)})")
    return TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        CLASS_NAMES,
    )


def package_data_dir() -> Path | None:
    """`site-packages/animal_mnist/data/Animal_MNIST`, found without running the package's code."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global in the pickle is refused."""

    def find_class(self, module: str, name: str) -> Any:
        # The files were pickled with numpy 1 (numpy.core); numpy 2 moved it to numpy._core.
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct as fn  # type: ignore[no-redef]
    return fn


def _load_array(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            array = _NumpyOnlyUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: expected a pickled numpy array; got {type(array).__name__}")
    return array
