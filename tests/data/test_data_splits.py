"""Split invariants on real Fashion-MNIST images: disjointness, coverage, determinism, names."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from vmfml.data import (
    TensorImageDataset,
    class_disjoint_split,
    per_source_class_split,
    select_classes,
    stratified_split,
)


def name_of_each_image(ds: TensorImageDataset) -> dict[str, str]:
    """image id (path) -> class name: what must survive any relabelling."""
    assert ds.paths is not None
    return {p: ds.class_names[int(c)] for p, c in zip(ds.paths, ds.labels, strict=True)}


def test_class_disjoint_split_invariants(small_set: TensorImageDataset) -> None:
    train, test = class_disjoint_split(small_set, test_fraction_of_classes=0.4, seed=3)
    assert train.num_classes == 6 and test.num_classes == 4
    assert not set(train.class_names) & set(test.class_names)  # disjoint classes
    assert set(train.class_names) | set(test.class_names) == set(small_set.class_names)  # covered
    assert train.paths is not None and test.paths is not None
    assert not set(train.paths) & set(test.paths) and len(train) + len(test) == len(small_set)
    # Labels renumbered 0..C-1 on each side, each image still under its own class name.
    original = name_of_each_image(small_set)
    position = {p: i for i, p in enumerate(small_set.paths or [])}
    for side in (train, test):
        assert side.paths is not None
        assert side.labels.unique().tolist() == list(range(side.num_classes))
        assert name_of_each_image(side) == {p: original[p] for p in side.paths}
        assert side.class_names == [
            n for n in small_set.class_names if n in side.class_names
        ]  # order kept
        for i in range(0, len(side), 97):
            assert torch.equal(side[i][0], small_set.images[position[side.paths[i]]])


def test_class_disjoint_split_is_deterministic_and_seeded(small_set: TensorImageDataset) -> None:
    a_train, a_test = class_disjoint_split(small_set, seed=7)
    b_train, b_test = class_disjoint_split(small_set, seed=7)
    assert a_train.class_names == b_train.class_names and a_train.paths == b_train.paths
    assert a_test.paths == b_test.paths
    draws = {tuple(class_disjoint_split(small_set, seed=s)[1].class_names) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    # seed=None: the last classes are held out (the CUB / Cars convention).
    _, last = class_disjoint_split(small_set, seed=None)
    assert last.class_names == small_set.class_names[5:]


def test_class_disjoint_split_with_named_train_classes(small_set: TensorImageDataset) -> None:
    train, test = class_disjoint_split(small_set, train_classes=["Bag", "Trouser", 0])
    assert train.class_names == ["T-shirt/top", "Trouser", "Bag"]
    assert train.class_counts().tolist() == [60, 60, 60]
    assert test.num_classes == 7 and "Bag" not in test.class_names
    with pytest.raises(ValueError, match="unknown class 'Hat'.*Ankle boot"):
        class_disjoint_split(small_set, train_classes=["Hat", "Bag"])
    with pytest.raises(ValueError, match="out of range"):
        class_disjoint_split(small_set, train_classes=[0, 10])


def test_class_disjoint_split_refuses_one_class_sides(small_set: TensorImageDataset) -> None:
    with pytest.raises(ValueError, match="1 class.*test side"):
        class_disjoint_split(small_set, test_fraction_of_classes=0.1)
    with pytest.raises(ValueError, match="1 class.*train side"):
        class_disjoint_split(small_set, train_classes=["Bag"])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        class_disjoint_split(small_set, test_fraction_of_classes=1.0)
    no_bags = small_set.subset(small_set.labels != 8)  # "Bag" still a class, now without images
    with pytest.raises(ValueError, match="without images.*Bag"):
        class_disjoint_split(no_bags)


def test_stratified_split_invariants(small_set: TensorImageDataset) -> None:
    train, test = stratified_split(small_set, test_fraction=0.25, seed=1)
    assert train.class_counts().tolist() == [45] * 10 and test.class_counts().tolist() == [15] * 10
    assert train.class_names == test.class_names == small_set.class_names
    assert train.paths is not None and test.paths is not None
    assert not set(train.paths) & set(test.paths)
    assert set(train.paths) | set(test.paths) == set(small_set.paths or [])
    original = name_of_each_image(small_set)
    assert name_of_each_image(test) == {p: original[p] for p in test.paths}
    # Both sides keep the dataset's order.
    order = {p: i for i, p in enumerate(small_set.paths or [])}
    assert [order[p] for p in test.paths] == sorted(order[p] for p in test.paths)
    # Deterministic given the seed, different for another seed.
    assert stratified_split(small_set, 0.25, seed=1)[1].paths == test.paths
    assert stratified_split(small_set, 0.25, seed=2)[1].paths != test.paths


def test_stratified_split_keeps_every_class_on_both_sides(small_set: TensorImageDataset) -> None:
    # 2 images of "Bag": round(2 * 0.1) = 0 test images would be rounded up to 1.
    keep = torch.cat(
        [
            (small_set.labels != 8).nonzero().flatten(),
            (small_set.labels == 8).nonzero().flatten()[:2],
        ]
    )
    ds = small_set.subset(keep.sort().values)
    train, test = stratified_split(ds, test_fraction=0.1)
    assert train.class_counts()[8] == 1 and test.class_counts()[8] == 1
    assert (test.class_counts() >= 1).all() and (train.class_counts() >= 1).all()
    one_bag = small_set.subset(
        torch.cat(
            [
                (small_set.labels != 8).nonzero().flatten(),
                (small_set.labels == 8).nonzero().flatten()[:1],
            ]
        )
    )
    with pytest.raises(ValueError, match="single image.*Bag"):
        stratified_split(one_bag)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        stratified_split(small_set, test_fraction=0.0)


def test_per_source_class_split_takes_half_of_each_source(small_set: TensorImageDataset) -> None:
    sources = ["clothes"] * 4 + [
        "shoes_bags"
    ] * 6  # an uneven grouping, to check rounding per source
    ds = small_set.relabel(small_set.labels, small_set.class_names, sources)
    train, test = per_source_class_split(ds, seed=0)
    assert Counter(train.class_sources) == {"clothes": 2, "shoes_bags": 3}
    assert Counter(test.class_sources) == {"clothes": 2, "shoes_bags": 3}
    for side in (train, test):
        assert side.class_sources == [
            sources[small_set.class_names.index(n)] for n in side.class_names
        ]
    assert per_source_class_split(ds, seed=0)[0].class_names == train.class_names
    with pytest.raises(ValueError, match="class_sources"):
        per_source_class_split(small_set)


def test_select_classes_orders_labels_as_asked(small_set: TensorImageDataset) -> None:
    part = select_classes(small_set, ["Sneaker", "Coat"])
    assert part.class_names == ["Sneaker", "Coat"] and len(part) == 120
    original = name_of_each_image(small_set)
    assert all(original[p] == n for p, n in name_of_each_image(part).items())
    with pytest.raises(ValueError, match="more than once"):
        select_classes(small_set, ["Coat", 4])
