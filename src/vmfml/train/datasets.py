"""From the config's `data` and `split` to a training set, a validation set carved from it, a test
set and (In-Shop) a gallery."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from vmfml.data import load_open_set_splits, load_splits
from vmfml.data.benchmarks import BENCHMARKS, get_benchmark
from vmfml.train.config import TrainConfig
from vmfml.train.validation import carve_validation


@dataclass
class DataSplit:
    train: Any
    test: Any
    # True when the test classes were never seen in training (retrieval only: no classifier applies).
    disjoint: bool
    # A separate gallery (In-Shop): `test` holds the queries. None: the test set is query and gallery.
    gallery: Any = None
    # Held out of the training images (--val-fraction); None without validation.
    val: Any = None
    # --split open-set: images of the classes held out whole (never trained on); else None.
    unknown: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.train.class_names)


def build_datasets(config: TrainConfig) -> DataSplit:
    data = _benchmark(config) if config.data in BENCHMARKS else _local(config)
    data.train = _subset(data.train, config)
    if config.val_fraction > 0:
        data.train, data.val = carve_validation(
            data.train, config.val_fraction, data.disjoint, data_seed(config)
        )
    return data


def data_seed(config: TrainConfig) -> int:
    """The seed of every draw that decides which images train, validate and test."""
    return config.seed if config.split_seed is None else config.split_seed


def _local(config: TrainConfig) -> DataSplit:
    is_folder = config.data not in ("fashion-mnist", "animal-mnist", "mnist-digits", "combined-30")
    options: dict[str, Any] = {
        "test_fraction": config.test_fraction,
        "seed": data_seed(config),
        "root": config.data_root,
        "on_error": config.on_bad_image,
        "image_size": config.image_size,
        # A corrupt file is named before training starts, not in the middle of an epoch.
        "validate": is_folder,
        "progress": config.progress,
    }
    if config.split == "open-set":
        train, test, unknown = load_open_set_splits(
            config.data, unknown_fraction=config.unknown_fraction, **options
        )
        return DataSplit(train, test, disjoint=False, unknown=unknown)
    train, test = load_splits(config.data, split=config.split, **options)
    return DataSplit(train, test, disjoint=config.split == "class-disjoint")


def _benchmark(config: TrainConfig) -> DataSplit:
    """The standard class-disjoint protocols (CUB-200-2011, Cars196, SOP, In-Shop)."""
    if config.data_root is None:
        raise ValueError(
            f"--data {config.data} needs --data-root: the folder holding its official files"
        )
    _check_no_split_options(config)
    bench = get_benchmark(config.data)

    def load(split: str) -> Any:
        return bench.load(
            config.data_root, split, on_error=config.on_bad_image, progress=config.progress
        )

    train = load(bench.train_split)
    if len(bench.eval_splits) == 2:
        query, gallery = (load(s) for s in bench.eval_splits)
        return DataSplit(train, query, disjoint=True, gallery=gallery)
    test = load(bench.eval_splits[0])
    return DataSplit(train, test, disjoint=True)


def _check_no_split_options(config: TrainConfig) -> None:
    """A benchmark has its official class-disjoint split: --split and --test-fraction would be
    ignored, so a value other than the default is refused rather than silently dropped."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    given = [
        f"--{name.replace('_', '-')} {getattr(config, name)}"
        for name in ("split", "test_fraction")
        if getattr(config, name) != defaults[name]
    ]
    if given:
        raise ValueError(
            f"{' and '.join(given)} cannot apply to --data {config.data}: the benchmark has its "
            "official class-disjoint train/test split, always used; leave these options out "
            "(they split folders and the built-in data sets)"
        )


def _subset(dataset: Any, config: TrainConfig) -> Any:
    """The first `train_subset` images of a seeded shuffle (every class keeps its share on average)."""
    if config.train_subset is None or config.train_subset >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(data_seed(config)))
    subset = dataset.subset(order[: config.train_subset].sort().values)
    counts = subset.class_counts().tolist()
    empty = [name for name, n in zip(subset.class_names, counts, strict=True) if n == 0]
    if empty:
        # Said here, in the options' words: the splits that follow would only name the classes.
        shown = ", ".join(str(name) for name in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise ValueError(
            f"--train-subset {config.train_subset} draws no image of {len(empty)} of the "
            f"{len(counts)} training classes ({shown}) out of {len(dataset)} training images: "
            f"raise --train-subset (every class needs images; {_enough(dataset)} or more is "
            "safe here) or leave it out"
        )
    return subset


def _enough(dataset: Any) -> int:
    """A --train-subset that gives every class of `dataset` a few images on average."""
    counts = dataset.class_counts().tolist()
    smallest = max(1, min(n for n in counts if n > 0))
    return min(len(dataset), -(-10 * len(dataset) // smallest))
