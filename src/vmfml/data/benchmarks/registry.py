"""The standard retrieval benchmarks by name: loader, splits and the Recall@K values papers report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmfml.data.benchmarks import cars, cub, inshop, sop
from vmfml.data.benchmarks._layout import PathLike
from vmfml.data.image_folder import ImageFolderDataset


@dataclass(frozen=True)
class Benchmark:
    """One retrieval benchmark.

    Attributes:
        name: the name `load_benchmark` and configs use.
        load: `load(root, split, on_error="raise", progress=True) -> ImageFolderDataset`;
            on_error="skip" drops missing and unreadable images with a warning.
        splits: the valid `split` values.
        train_split: the split to train on.
        eval_splits: `(test,)` when the test split is query and gallery at once (the query
            excluded from its own neighbours), `(query, gallery)` when they are separate.
        recall_ks: the K of Recall@K that papers report on this benchmark.
    """

    name: str
    load: Callable[..., ImageFolderDataset]
    splits: tuple[str, ...]
    train_split: str
    eval_splits: tuple[str, ...]
    recall_ks: tuple[int, ...]


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="cub200",
            load=cub.load_cub200,
            splits=cub.SPLITS,
            train_split="train",
            eval_splits=("test",),
            recall_ks=cub.STANDARD_RECALL_KS,
        ),
        Benchmark(
            name="cars196",
            load=cars.load_cars196,
            splits=cars.SPLITS,
            train_split="train",
            eval_splits=("test",),
            recall_ks=cars.STANDARD_RECALL_KS,
        ),
        Benchmark(
            name="sop",
            load=sop.load_sop,
            splits=sop.SPLITS,
            train_split="train",
            eval_splits=("test",),
            recall_ks=sop.STANDARD_RECALL_KS,
        ),
        Benchmark(
            name="inshop",
            load=inshop.load_inshop,
            splits=inshop.SPLITS,
            train_split="train",
            eval_splits=("query", "gallery"),
            recall_ks=inshop.STANDARD_RECALL_KS,
        ),
    )
}

STANDARD_RECALL_KS: dict[str, tuple[int, ...]] = {
    name: b.recall_ks for name, b in BENCHMARKS.items()
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`; a ValueError lists the valid names otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def load_benchmark(
    name: str, root: PathLike, split: str = "train", on_error: str = "raise", progress: bool = True
) -> ImageFolderDataset:
    """Load split `split` of benchmark `name` ("cub200", "cars196", "sop", "inshop") from `root`.

    Every listed image is checked to exist; `on_error="skip"` drops missing and unreadable
    images with a warning instead of refusing them.

    Example:
        >>> load_benchmark("cifar", "/data", "train")
        Traceback (most recent call last):
        ...
        ValueError: unknown benchmark 'cifar'; valid names: cub200, cars196, sop, inshop
    """
    return get_benchmark(name).load(root, split, on_error=on_error, progress=progress)
