"""load_benchmark dispatch, the benchmark table and the standard Recall@K values."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vmfml.data.benchmarks import (
    BENCHMARKS,
    STANDARD_RECALL_KS,
    cars,
    cub,
    get_benchmark,
    inshop,
    load_benchmark,
    load_cub200,
    load_inshop,
    registry,
    sop,
)
from vmfml.data.dataset import ImageDataset


def test_standard_recall_ks_are_the_published_ones() -> None:
    assert STANDARD_RECALL_KS == {
        "cub200": (1, 2, 4, 8),
        "cars196": (1, 2, 4, 8),
        "sop": (1, 10, 100, 1000),
        "inshop": (1, 10, 20, 30, 40, 50),
    }
    assert cub.STANDARD_RECALL_KS == cars.STANDARD_RECALL_KS == (1, 2, 4, 8)
    assert sop.STANDARD_RECALL_KS == (1, 10, 100, 1000)
    assert inshop.STANDARD_RECALL_KS == (1, 10, 20, 30, 40, 50)


def test_table_describes_each_protocol() -> None:
    for name, bench in BENCHMARKS.items():
        assert bench.name == name and bench.train_split in bench.splits
        assert (
            set(bench.eval_splits) <= set(bench.splits)
            and bench.train_split not in bench.eval_splits
        )
    assert get_benchmark("inshop").eval_splits == ("query", "gallery")
    assert get_benchmark("cub200").eval_splits == ("test",)


def test_unknown_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown benchmark 'cub'; valid names: cub200, cars196, sop, inshop"
    ):
        load_benchmark("cub", tmp_path, "train")


def test_dispatch_reaches_the_loader(tmp_path: Path, jpegs) -> None:
    base = tmp_path / "CUB_200_2011"
    jpegs.write(base / "images" / "001.A/a_1.jpg", 0)
    jpegs.write(base / "images" / "150.B/b_1.jpg", 1)
    (base / "images.txt").write_text("1 001.A/a_1.jpg\n2 150.B/b_1.jpg\n")
    (base / "image_class_labels.txt").write_text("1 1\n2 150\n")
    via = load_benchmark("cub200", tmp_path, "test")
    direct = load_cub200(tmp_path, "test")
    assert via.paths == direct.paths == [str(base / "images" / "150.B/b_1.jpg")]
    assert via.class_names == ["150"]
    # the split is checked by the loader with the benchmark's own valid splits
    with pytest.raises(ValueError, match="split must be one of train, query, gallery"):
        load_benchmark("inshop", tmp_path, "test")
    assert get_benchmark("inshop").load is load_inshop


def test_loaders_return_the_project_image_dataset(tmp_path: Path, jpegs) -> None:
    """The shared `ImageDataset` contract: lazy uint8 RGB decoding, subset keeping the classes,
    a corrupt file named in the error, and batches through DataLoader workers."""
    base = tmp_path / "CUB_200_2011"
    names = [f"150.B/b_{i}.jpg" for i in range(4)]
    for i, name in enumerate(names):
        jpegs.write(base / "images" / name, i)
    (base / "images.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (base / "image_class_labels.txt").write_text("1 150\n2 160\n3 150\n4 160\n")
    ds = load_benchmark("cub200", tmp_path, "test")
    assert isinstance(ds, ImageDataset) and ds.labels.tolist() == [0, 1, 0, 1]

    sub = ds.subset([3, 0])
    assert sub.paths == [ds.paths[3], ds.paths[0]] and sub.class_names == ["150", "160"]
    jpegs.check(sub[0][0], 3)

    images, labels = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    assert images.shape == (4, 3, jpegs.size[1], jpegs.size[0]) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 0, 1]

    (base / "images" / names[2]).write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="150.B/b_2.jpg"):
        ds[2]


def test_docstring_examples() -> None:
    result = doctest.testmod(registry, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
