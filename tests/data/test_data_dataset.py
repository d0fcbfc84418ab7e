"""The ImageDataset contract on TensorImageDataset: validation, subset, relabel."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vmfml.data import ImageDataset, TensorImageDataset


def make(n: int = 6) -> TensorImageDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 3).contiguous()
    return TensorImageDataset(
        images, [i % 3 for i in range(n)], ["a", "b", "c"], paths=[f"f{i}" for i in range(n)]
    )


def test_contract() -> None:
    ds = make()
    assert isinstance(ds, ImageDataset) and len(ds) == 6 and ds.num_classes == 3
    image, label = ds[4]
    assert image.dtype == torch.uint8 and image.shape == (1, 2, 3) and int(image[0, 0, 0]) == 4
    assert type(label) is int and label == 1
    assert ds.labels.dtype == torch.long and ds.class_counts().tolist() == [2, 2, 2]
    assert ds.image_shape == (1, 2, 3) and "6 images, 3 classes, 1x2x3" in repr(ds)


@pytest.mark.parametrize(
    "indices",
    [[5, 0, 3], torch.tensor([5, 0, 3]), torch.tensor([-1, 0, 3])],
    ids=["list", "tensor", "negative"],
)
def test_subset(indices: list[int] | torch.Tensor) -> None:
    part = make().subset(indices)
    assert part.images[:, 0, 0, 0].tolist() == [5, 0, 3]
    assert part.labels.tolist() == [2, 0, 0] and part.paths == ["f5", "f0", "f3"]
    assert part.class_names == ["a", "b", "c"]


def test_subset_by_mask_and_empty() -> None:
    ds = make()
    part = ds.subset(ds.labels == 1)
    assert part.paths == ["f1", "f4"]
    assert len(ds.subset([])) == 0
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        ds.subset([0, 6])
    with pytest.raises(ValueError, match="boolean mask must have shape"):
        ds.subset(torch.ones(5, dtype=torch.bool))


def test_relabel_shares_images() -> None:
    ds = make()
    merged = ds.relabel([0, 1, 1, 0, 1, 1], ["x", "y"], ["s1", "s2"])
    assert merged.class_names == ["x", "y"] and merged.class_sources == ["s1", "s2"]
    assert merged.images is ds.images and ds.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="one label per image"):
        ds.relabel([0, 1], ["x", "y"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": torch.zeros(2, 1, 4, 4)}, "uint8 tensor"),
        ({"images": torch.zeros(2, 4, 4, dtype=torch.uint8)}, r"\[N, C, H, W\]"),
        ({"images": torch.zeros(2, 2, 4, 4, dtype=torch.uint8)}, "1 .grey. or 3"),
        ({"labels": [0, 3]}, r"\[0, 3\)"),
        ({"labels": [0, 1, 2]}, "2 images but 3 labels"),
        ({"labels": [0.0, 1.0]}, "integers"),
        ({"class_names": ["a", "a", "b"]}, "unique.*a"),
        ({"paths": ["only-one"]}, "1 paths for 2 labels"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "images": torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
        "labels": [0, 1],
        "class_names": ["a", "b", "c"],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TensorImageDataset(**args)
