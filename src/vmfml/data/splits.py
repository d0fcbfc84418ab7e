"""Train/test splits of an `ImageDataset`.

- `stratified_split`: the same classes on both sides, a share of each class held out (the
  usual split of a folder of images into train and test).
- `class_disjoint_split`: train on some classes, test on the others (retrieval of unseen
  classes, the CUB / Cars / SOP protocol). Each side's labels are renumbered 0..C_side-1 and
  its `class_names` list the original names, so "label 3 of the test set" still reads as a name.
- `per_source_class_split`: a class-disjoint split taking the same share of each source's
  classes (the combined Fashion + Animal + digits set: half of each for training).

Every split is deterministic given `seed` (a `torch.Generator`, so the same on every
platform), and refuses a side with fewer than 2 classes or a class without images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from vmfml.data.dataset import ImageDataset

D = TypeVar("D", bound=ImageDataset)


def select_classes(dataset: D, classes: Sequence[str | int]) -> D:
    """The images of `classes` (names or label indices), relabelled 0..len(classes)-1 in the
    given order, with those classes' names and sources."""
    keep = _class_indices(dataset, classes)
    new_label = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    new_label[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
    mask = new_label[dataset.labels] >= 0
    part = dataset.subset(mask)
    sources = None if dataset.class_sources is None else [dataset.class_sources[c] for c in keep]
    return part.relabel(new_label[part.labels], [dataset.class_names[c] for c in keep], sources)


def class_disjoint_split(
    dataset: D,
    train_classes: Sequence[str | int] | None = None,
    test_fraction_of_classes: float = 0.5,
    seed: int | None = 0,
) -> tuple[D, D]:
    """Split by class: (train set of the train classes, test set of the other classes).

    Args:
        dataset: any `ImageDataset`.
        train_classes: names or label indices of the training classes; None draws them.
        test_fraction_of_classes: with `train_classes=None`, the share of classes held out
            (rounded to a whole number of classes).
        seed: with `train_classes=None`, the draw of the held-out classes; None takes the last
            classes in label order (the CUB-200 / Cars-196 convention: first half for training).

    Returns:
        (train, test), each relabelled 0..C_side-1 with its own `class_names`, classes in
        their original order.
    """
    _refuse_empty_classes(dataset)
    num_classes = dataset.num_classes
    if train_classes is None:
        if not 0.0 < test_fraction_of_classes < 1.0:
            raise ValueError(
                f"test_fraction_of_classes must be in (0, 1); got {test_fraction_of_classes}"
            )
        num_test = round(num_classes * test_fraction_of_classes)
        if seed is None:
            test = list(range(num_classes - num_test, num_classes))
        else:
            order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
            test = sorted(order[:num_test].tolist())
        train = [c for c in range(num_classes) if c not in set(test)]
    else:
        train = sorted(set(_class_indices(dataset, train_classes)))
        test = [c for c in range(num_classes) if c not in set(train)]
    for side, classes in (("train", train), ("test", test)):
        if len(classes) < 2:
            raise ValueError(
                f"a class-disjoint split of {num_classes} classes would leave {len(classes)} class(es) "
                f"on the {side} side; each side needs at least 2 (train: {len(train)}, test: {len(test)})"
            )
    return select_classes(dataset, train), select_classes(dataset, test)


def per_source_class_split(
    dataset: D, train_fraction_of_classes: float = 0.5, seed: int | None = 0
) -> tuple[D, D]:
    """A class-disjoint split that trains on the same share of every source's classes.

    For the combined 30-class set (10 fashion, 10 animal, 10 digit classes) the default trains
    on 5 classes of each source and tests on the 15 others, unseen.

    Args:
        dataset: a dataset with `class_sources` (one source name per class).
        train_fraction_of_classes: share of each source's classes used for training.
        seed: the draw of each source's training classes; None takes each source's first ones.
    """
    if dataset.class_sources is None:
        raise ValueError(
            "per_source_class_split needs a dataset with class_sources (e.g. combined_30)"
        )
    if not 0.0 < train_fraction_of_classes < 1.0:
        raise ValueError(
            f"train_fraction_of_classes must be in (0, 1); got {train_fraction_of_classes}"
        )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    train: list[int] = []
    for source in dict.fromkeys(dataset.class_sources):  # sources in order of first appearance
        classes = [c for c, s in enumerate(dataset.class_sources) if s == source]
        num_train = round(len(classes) * train_fraction_of_classes)
        order = (
            torch.arange(len(classes))
            if generator is None
            else torch.randperm(len(classes), generator=generator)
        )
        train.extend(classes[i] for i in order[:num_train].tolist())
    return class_disjoint_split(dataset, train_classes=train)


def stratified_split(dataset: D, test_fraction: float = 0.2, seed: int = 0) -> tuple[D, D]:
    """Hold out `test_fraction` of each class's images: (train, test) with the same classes.

    Each class puts round(n * test_fraction) images on the test side, at least 1 and at most
    n - 1, so that every class is seen in training and tested. Labels and names are unchanged.
    Both sides keep the dataset's order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    _refuse_empty_classes(dataset)
    if dataset.num_classes < 2:
        raise ValueError(f"a split needs at least 2 classes; the dataset has {dataset.num_classes}")
    counts = dataset.class_counts()
    too_small = [
        name for name, n in zip(dataset.class_names, counts.tolist(), strict=True) if n < 2
    ]
    if too_small:
        raise ValueError(
            f"classes with a single image cannot be on both sides of a split: {', '.join(too_small)}"
        )
    generator = torch.Generator().manual_seed(seed)
    is_test = torch.zeros(len(dataset), dtype=torch.bool)
    for c in range(dataset.num_classes):
        members = (dataset.labels == c).nonzero().flatten()
        n = len(members)
        num_test = min(max(round(n * test_fraction), 1), n - 1)
        is_test[members[torch.randperm(n, generator=generator)[:num_test]]] = True
    return dataset.subset(~is_test), dataset.subset(is_test)


def _class_indices(dataset: ImageDataset, classes: Sequence[str | int]) -> list[int]:
    """Label indices of `classes`, given as names or indices; unknown ones are refused."""
    if isinstance(classes, str):
        raise ValueError(
            f"classes must be a list of names or indices, not the single string {classes!r}"
        )
    index = {name: i for i, name in enumerate(dataset.class_names)}
    out: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if c not in index:
                raise ValueError(
                    f"unknown class {c!r}; the classes are: {', '.join(dataset.class_names)}"
                )
            out.append(index[c])
        elif isinstance(c, int) or (isinstance(c, torch.Tensor) and c.dim() == 0):
            i = int(c)
            if not 0 <= i < dataset.num_classes:
                raise ValueError(f"class index {i} out of range for {dataset.num_classes} classes")
            out.append(i)
        else:
            raise ValueError(f"a class must be a name or an index; got {c!r}")
    if len(set(out)) != len(out):
        raise ValueError("classes are listed more than once")
    return out


def _refuse_empty_classes(dataset: ImageDataset) -> None:
    counts = dataset.class_counts().tolist()
    empty = [name for name, n in zip(dataset.class_names, counts, strict=True) if n == 0]
    if empty:
        raise ValueError(f"classes without images cannot be split: {', '.join(empty)}")
