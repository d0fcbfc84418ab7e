"""Fashion-MNIST + Animal-MNIST + MNIST digits as one 30-class set of 28x28 grey images.

No real image set with more than 10 classes ships in a package registry; these three together
give 30 real classes, enough for retrieval of unseen classes: train on half of each source's
classes, search among the other 15 (`combined_30_retrieval_split`).

Class names carry their source as a prefix ("fashion/Bag", "animal/Zebra", "digit/3") and
`class_sources` lists the source of each class.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from vmfml.data.animal_mnist import animal_mnist
from vmfml.data.dataset import TensorImageDataset
from vmfml.data.fashion_mnist import fashion_mnist
from vmfml.data.mnist_digits import mnist_digits
from vmfml.data.splits import per_source_class_split

FASHION_SPLITS = ("test", "train", "both")


def combined_30(
    fashion_split: str = "test",
    fashion_root: str | Path | None = None,
    animal_root: str | Path | None = None,
    digits_root: str | Path | None = None,
    download: bool = False,
) -> TensorImageDataset:
    """The 30-class set: uint8 [N, 1, 28, 28], classes 0-9 fashion, 10-19 animal, 20-29 digits.

    Args:
        fashion_split: which Fashion-MNIST images: "test" (10,000: then every source has about
            1,000 images per class, N = 30,000), "train" (60,000) or "both" (70,000).
        fashion_root, animal_root, digits_root: where each source's files are (see
            `fashion_mnist`, `animal_mnist`, `mnist_digits`); None uses their defaults.
        download: let Fashion-MNIST download its files when missing.
    """
    if fashion_split not in FASHION_SPLITS:
        raise ValueError(
            f"fashion_split must be one of {', '.join(FASHION_SPLITS)}; got {fashion_split!r}"
        )
    if fashion_split == "both":
        parts = [fashion_mnist(s, fashion_root, download) for s in ("train", "test")]
        fashion = TensorImageDataset(
            torch.cat([p.images for p in parts]),
            torch.cat([p.labels for p in parts]),
            parts[0].class_names,
        )
    else:
        fashion = fashion_mnist(fashion_split, fashion_root, download)
    return concat_sources(
        {
            "fashion": fashion,
            "animal": animal_mnist(animal_root),
            "digit": mnist_digits(digits_root),
        }
    )


def concat_sources(parts: Mapping[str, TensorImageDataset]) -> TensorImageDataset:
    """Stack in-memory datasets of the same image shape into one with classes "source/name".

    The classes of the first part come first, then the second's, and so on; `class_sources`
    records each class's source.
    """
    if len(parts) < 1:
        raise ValueError("concat_sources needs at least one dataset")
    shapes = {source: part.image_shape for source, part in parts.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"datasets to combine must share one image shape; got {shapes}")
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    names: list[str] = []
    sources: list[str] = []
    for source, part in parts.items():
        labels.append(part.labels + len(names))
        images.append(part.images)
        names.extend(f"{source}/{name}" for name in part.class_names)
        sources.extend([source] * part.num_classes)
    return TensorImageDataset(torch.cat(images), torch.cat(labels), names, class_sources=sources)


def combined_30_retrieval_split(
    dataset: TensorImageDataset | None = None, seed: int | None = 0
) -> tuple[TensorImageDataset, TensorImageDataset]:
    """(train, test) of the combined set: half of each source's classes for training (15), the
    other 15 unseen for testing; see `per_source_class_split`.

    Args:
        dataset: a loaded `combined_30(...)` (for other roots or Fashion splits); None loads
            `combined_30()` with its defaults.
        seed: the draw of the training classes; None takes each source's first 5.
    """
    if dataset is None:
        dataset = combined_30()
    return per_source_class_split(dataset, train_fraction_of_classes=0.5, seed=seed)
