"""Data sets by name: `load_dataset("fashion-mnist")`, or a folder path; `load_splits` for training.

Built-in names: fashion-mnist, animal-mnist, mnist-digits, combined-30. Any other spec must be
an existing folder of class subfolders (`image_folder`); an unknown name is refused with the
valid ones listed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmfml.data.animal_mnist import animal_mnist
from vmfml.data.combined import FASHION_SPLITS, combined_30
from vmfml.data.dataset import ImageDataset
from vmfml.data.fashion_mnist import SPLITS as FASHION_MNIST_SPLITS
from vmfml.data.fashion_mnist import (
    download_fashion_mnist,
    fashion_mnist,
    find_fashion_mnist,
)
from vmfml.data.fashion_mnist import search_dirs as fashion_search_dirs
from vmfml.data.image_folder import image_folder
from vmfml.data.mnist_digits import mnist_digits
from vmfml.data.splits import (
    class_disjoint_split,
    per_source_class_split,
    select_classes,
    stratified_split,
)

SPLIT_KINDS = ("standard", "class-disjoint", "open-set")


def _fashion(split: str | None, root: str | Path | None, download: bool) -> ImageDataset:
    return fashion_mnist(split or "train", root, download)


def _combined(split: str | None, root: str | Path | None, download: bool) -> ImageDataset:
    return combined_30(split or "test", fashion_root=root, digits_root=root, download=download)


def _no_split(
    loader: Callable[[str | Path | None], ImageDataset], name: str
) -> Callable[..., ImageDataset]:
    def load(split: str | None, root: str | Path | None, download: bool) -> ImageDataset:
        if split not in (None, "all"):
            raise ValueError(
                f"{name} has no predefined splits (got split={split!r}); use split=None and stratified_split"
            )
        return loader(root)

    return load


# name -> (loader(split, root, download), the splits it accepts)
BUILTIN: dict[
    str, tuple[Callable[[str | None, str | Path | None, bool], ImageDataset], tuple[str, ...]]
] = {
    "fashion-mnist": (_fashion, FASHION_MNIST_SPLITS),  # 10 classes, 60,000 train + 10,000 test
    "animal-mnist": (_no_split(animal_mnist, "animal-mnist"), ()),  # 10 classes x 1,000
    "mnist-digits": (_no_split(mnist_digits, "mnist-digits"), ()),  # 10 classes, 10,000
    "combined-30": (_combined, FASHION_SPLITS),  # 30 classes; the split picks Fashion's part
}


# The built-in sets whose files (all of them, or a part) can be downloaded: `download_dataset`.
DOWNLOADABLE = ("fashion-mnist", "combined-30")


def download_dataset(spec: str | Path, root: str | Path | None = None) -> Path | None:
    """Fetch the files of built-in data set `spec` that are missing (`--download`): the folder
    written, or None when they were all found already. A set without a downloader, or a folder,
    is refused with what to do instead.

    Fashion-MNIST (also the Fashion part of combined-30) downloads from its official site (or
    `$VMFML_FASHION_MNIST_URL`) into `root`, else `$VMFML_DATA/fashion-mnist`.
    """
    name = str(spec)
    if name in DOWNLOADABLE:
        if find_fashion_mnist(root) is not None:
            return None
        return download_fashion_mnist(fashion_search_dirs(root)[0])
    if name in BUILTIN:
        raise ValueError(
            f"--download: {name} has no downloader (it ships in a package: bash scripts/setup.sh "
            f"installs it); the sets that download are {', '.join(DOWNLOADABLE)}"
        )
    raise ValueError(
        f"--download fetches a built-in data set ({', '.join(DOWNLOADABLE)}); "
        f"{name} is not one: leave --download out"
    )


def list_datasets() -> list[str]:
    """The built-in data set names."""
    return list(BUILTIN)


def load_dataset(
    spec: str | Path,
    split: str | None = None,
    root: str | Path | None = None,
    download: bool = False,
    on_error: str = "raise",
    image_size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    validate: bool = False,
    progress: bool = True,
) -> ImageDataset:
    """A data set by name or folder.

    Args:
        spec: a built-in name (`list_datasets()`) or a folder of class subfolders.
        split: for fashion-mnist "train" (default) or "test"; for combined-30 the Fashion part,
            "test" (default), "train" or "both"; others have no predefined split (None).
        root: where a built-in set's files are (see each source); ignored for folders.
        download: allow fetching Fashion-MNIST from its official site when missing.
        on_error, image_size, mode, validate, progress: for folders, see `image_folder`.
    """
    name = str(spec)
    if name in BUILTIN:
        loader, splits = BUILTIN[name]
        if split is not None and splits and split not in splits:
            raise ValueError(f"{name} split must be one of {', '.join(splits)}; got {split!r}")
        return loader(split, root, download)
    path = Path(name).expanduser()
    if path.is_dir():
        if split is not None:
            raise ValueError(
                f"a folder has no predefined splits (got split={split!r}); use stratified_split"
            )
        return image_folder(
            path,
            on_error=on_error,
            image_size=image_size,
            mode=mode,
            validate=validate,
            progress=progress,
        )
    close = difflib.get_close_matches(name, list(BUILTIN), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown data set {name!r}{hint}: use one of {', '.join(BUILTIN)}, "
        f"or a folder of class subfolders (no folder exists at {path})"
    )


def load_splits(
    spec: str | Path,
    split: str = "standard",
    test_fraction: float = 0.2,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = False,
    on_error: str = "raise",
    image_size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    validate: bool = False,
    progress: bool = True,
) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) sets for a training run.

    split="standard" (test classes = train classes):
        fashion-mnist: the official 60,000 / 10,000 split; everything else: `stratified_split`
        holding out `test_fraction` of each class.
    split="class-disjoint" (test classes unseen in training):
        combined-30: half of each source's classes for training (`per_source_class_split`);
        fashion-mnist: 5 classes drawn by `seed`, trained on their official training images,
        the other 5 tested on the official test images; everything else: half the classes
        (`class_disjoint_split`).
    """
    if split not in SPLIT_KINDS or split == "open-set":
        known = ", ".join(k for k in SPLIT_KINDS if k != "open-set")
        hint = " (open-set has a third part: load_open_set_splits)" if split == "open-set" else ""
        raise ValueError(f"split must be one of {known}; got {split!r}{hint}")

    def load(part: str | None) -> ImageDataset:
        return load_dataset(
            spec, part, root, download, on_error, image_size, mode, validate, progress
        )

    if str(spec) == "fashion-mnist":
        train, test = load("train"), load("test")
        if split == "standard":
            return train, test
        train_part, test_part = class_disjoint_split(train, seed=seed)
        return train_part, select_classes(test, test_part.class_names)
    dataset = load(None)
    if split == "standard":
        return stratified_split(dataset, test_fraction=test_fraction, seed=seed)
    if dataset.class_sources is not None:
        return per_source_class_split(dataset, seed=seed)
    return class_disjoint_split(dataset, seed=seed)


def load_open_set_splits(
    spec: str | Path, unknown_fraction: float = 0.3, seed: int = 0, **options: Any
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(train, test, unknown) for open-set recognition: the split="standard" sets of
    `load_splits` (`options` are its own), with `unknown_fraction` of the classes, drawn by
    `seed`, never trained on: `unknown` holds their test images, train and test the other
    classes' images (fashion-mnist: 3 of its 10 classes by default, 3,000 unknown images)."""
    if not 0.0 < unknown_fraction < 1.0:
        raise ValueError(f"unknown_fraction must be in (0, 1); got {unknown_fraction}")
    train, test = load_splits(spec, "standard", seed=seed, **options)
    known, unseen = class_disjoint_split(
        train, test_fraction_of_classes=unknown_fraction, seed=seed
    )
    return (
        known,
        select_classes(test, known.class_names),
        select_classes(test, unseen.class_names),
    )
