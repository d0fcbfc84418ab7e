"""load_dataset / load_splits: names, folders, and the refusal of unknown names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vmfml.data import (
    ImageFolderDataset,
    TensorImageDataset,
    list_datasets,
    load_dataset,
    load_splits,
)


@pytest.fixture()
def folder(fashion_folder: Callable[..., Path]) -> Path:
    """6 classes x 10 real Fashion-MNIST PNGs."""
    return fashion_folder([f"class{c}" for c in range(6)], 10, "six")


def test_names() -> None:
    assert list_datasets() == ["fashion-mnist", "animal-mnist", "mnist-digits", "combined-30"]


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="did you mean 'fashion-mnist'.*animal-mnist, mnist-digits, combined-30"
    ):
        load_dataset("fashion_mnist")
    with pytest.raises(ValueError, match="no folder exists at"):
        load_dataset("cifar-1000")


def test_folder_spec_and_split_checks(folder: Path) -> None:
    ds = load_dataset(str(folder), mode="L")
    assert (
        isinstance(ds, ImageFolderDataset) and ds.num_classes == 6 and ds[0][0].shape == (1, 28, 28)
    )
    with pytest.raises(ValueError, match="no predefined splits"):
        load_dataset(folder, split="test")
    with pytest.raises(ValueError, match="no predefined splits"):
        load_dataset("animal-mnist", split="train")
    with pytest.raises(ValueError, match="train, test"):
        load_dataset("fashion-mnist", split="validation")


def test_load_splits_on_a_folder(folder: Path) -> None:
    train, test = load_splits(folder, "standard", test_fraction=0.3, seed=0)
    assert train.class_counts().tolist() == [7] * 6 and test.class_counts().tolist() == [3] * 6
    train, test = load_splits(folder, "class-disjoint", seed=0)
    assert train.num_classes == test.num_classes == 3
    assert not set(train.class_names) & set(test.class_names)
    with pytest.raises(ValueError, match="standard, class-disjoint"):
        load_splits(folder, "random")


def test_load_splits_fashion_mnist(
    fashion_train: TensorImageDataset, fashion_test: TensorImageDataset
) -> None:
    train, test = load_splits("fashion-mnist", "class-disjoint", seed=0)
    assert len(train) == 30000 and len(test) == 5000
    assert train.num_classes == test.num_classes == 5
    assert set(train.class_names) | set(test.class_names) == set(fashion_train.class_names)
    assert not set(train.class_names) & set(test.class_names)
    # The test side is made of the official test images.
    assert isinstance(test, TensorImageDataset)
    first_name = test.class_names[int(test.labels[0])]
    first = int((fashion_test.labels == fashion_test.class_names.index(first_name)).nonzero()[0])
    assert (test.images[0] == fashion_test.images[first]).all()
