"""Stanford Cars / Cars196 (Krause et al. 2013): 16,185 car photos of 196 make-model-years.

Retrieval protocol (Oh Song et al. 2016): classes 1-98 train (8,054 images), classes 99-196 test
(8,131 images), pooling the official classification train and test images.

Two official layouts are read:
- the one-file layout: `cars_annos.mat` + `car_ims/` (what metric learning code uses);
- the devkit layout: `devkit/cars_train_annos.mat` + `cars_train/` and the labelled test
  annotations `cars_test_annos_withlabels.mat` + `cars_test/` (the devkit's own
  `cars_test_annos.mat` has no classes, so it cannot give the test half of the classes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from vmfml.data.benchmarks._layout import (
    PathLike,
    build_dataset,
    check_split,
    class_index,
)
from vmfml.data.image_folder import ImageFolderDataset

STANDARD_RECALL_KS: tuple[int, ...] = (1, 2, 4, 8)
SPLITS: tuple[str, ...] = ("train", "test")
NUM_TRAIN_CLASSES = 98
NUM_CLASSES = 196

LAYOUT = """\
  either the one-file layout:
    ROOT/cars_annos.mat         struct array 'annotations' with fields relative_im_path
                                ("car_ims/000001.jpg"), class (1..196), test (0/1), bbox_*
    ROOT/car_ims/000001.jpg ...
  or the devkit layout (ROOT or ROOT/stanford_cars):
    ROOT/devkit/cars_train_annos.mat            'annotations' with fields fname, class, bbox_*
    ROOT/cars_test_annos_withlabels.mat         (or under devkit/) the test annotations with class
    ROOT/cars_train/00001.jpg ...  ROOT/cars_test/00001.jpg ..."""


def _annotation_fields(path: Path, fields: tuple[str, ...]) -> dict[str, list[Any]]:
    """The `annotations` struct array of a Stanford Cars .mat file, one list per field.

    `loadmat` without `squeeze_me` keeps every struct field as an array (`[["car_ims/1.jpg"]]`,
    `[[1]]`), so one `.ravel()[0]` reads strings and numbers alike, even for a single record.
    """
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=False)
    # MatReadError: not a MATLAB file or truncated; NotImplementedError: a v7.3 (HDF5) file,
    # which the official releases are not.
    except (
        scipy.io.matlab.MatReadError,
        NotImplementedError,
        ValueError,
        OSError,
        TypeError,
    ) as err:
        raise ValueError(f"cannot read {path} as a MATLAB file: {err}") from err
    if "annotations" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no 'annotations' variable; found {found}\n{LAYOUT}")
    records = np.asarray(mat["annotations"]).ravel()
    present = records.dtype.names or ()
    missing = [f for f in fields if f not in present]
    if missing:
        raise ValueError(
            f"{path}: 'annotations' lacks the field(s) {missing}; found {list(present)}\n{LAYOUT}"
        )
    return {f: [np.asarray(r[f]).ravel()[0] for r in records] for f in fields}


def _one_file_layout(base: Path) -> tuple[list[Path], list[int]]:
    fields = _annotation_fields(base / "cars_annos.mat", ("relative_im_path", "class"))
    paths = [base / str(p) for p in fields["relative_im_path"]]
    return paths, [int(c) for c in fields["class"]]


def _devkit_layout(base: Path) -> tuple[list[Path], list[int]]:
    test_annos = next(
        (
            p
            for p in (
                base / "cars_test_annos_withlabels.mat",
                base / "devkit" / "cars_test_annos_withlabels.mat",
            )
            if p.is_file()
        ),
        None,
    )
    if test_annos is None:
        raise FileNotFoundError(
            f"cars_test_annos_withlabels.mat not found in {base} or {base / 'devkit'}: the "
            f"retrieval split needs the classes of the test images, which devkit/cars_test_annos.mat "
            f"does not have; expected layout:\n{LAYOUT}"
        )
    paths: list[Path] = []
    classes: list[int] = []
    for annos, folder in (
        (base / "devkit" / "cars_train_annos.mat", "cars_train"),
        (test_annos, "cars_test"),
    ):
        fields = _annotation_fields(annos, ("fname", "class"))
        paths += [base / folder / str(name) for name in fields["fname"]]
        classes += [int(c) for c in fields["class"]]
    return paths, classes


def load_cars196(
    root: PathLike, split: str = "train", on_error: str = "raise", progress: bool = True
) -> ImageFolderDataset:
    """Cars196 from either official layout, split class-disjointly at class 98.

    Args:
        root: the folder holding `cars_annos.mat` and `car_ims/`, or the devkit layout (also
            under `root/stanford_cars`, where torchvision puts it).
        split: "train" (classes 1-98) or "test" (classes 99-196).
        on_error: "raise" refuses missing images (all are checked at load); "skip" drops missing
            and unreadable ones with a warning (decoding every image once).
        progress: a progress bar while decoding (with "skip").

    Returns:
        An `ImageFolderDataset` in annotation order (devkit: train images, then test images);
        labels `0..C-1` follow the class ids, `class_names[label]` is the official class id
        as a string ("1".."196").
    """
    check_split("cars196", split, SPLITS)
    base = Path(root).expanduser()
    if (base / "cars_annos.mat").is_file():
        paths, classes = _one_file_layout(base)
        listed_in = str(base / "cars_annos.mat")
    else:
        devkit_base = next(
            (
                b
                for b in (base, base / "stanford_cars")
                if (b / "devkit" / "cars_train_annos.mat").is_file()
            ),
            None,
        )
        if devkit_base is None:
            raise FileNotFoundError(
                f"neither {base / 'cars_annos.mat'} nor {base / 'devkit' / 'cars_train_annos.mat'} "
                f"found; expected layout:\n{LAYOUT}"
            )
        base = devkit_base
        paths, classes = _devkit_layout(base)
        listed_in = f"the annotation files under {base}"
    out_of_range = [c for c in classes if not 1 <= c <= NUM_CLASSES]
    if out_of_range:
        raise ValueError(
            f"{listed_in}: class ids must lie in 1..{NUM_CLASSES} (Cars196 has {NUM_CLASSES} "
            f"classes); found {sorted(set(out_of_range))[:10]}"
        )

    keep = [i for i, c in enumerate(classes) if (c <= NUM_TRAIN_CLASSES) == (split == "train")]
    class_ids = [classes[i] for i in keep]
    return build_dataset(
        base,
        [paths[i] for i in keep],
        class_ids,
        class_index(class_ids),
        LAYOUT,
        listed_in=listed_in,
        on_error=on_error,
        progress=progress,
    )
