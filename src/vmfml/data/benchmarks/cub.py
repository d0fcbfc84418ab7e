"""CUB-200-2011 (Wah et al. 2011): 11,788 bird photos of 200 species.

Retrieval protocol (Oh Song et al. 2016, followed by every deep metric learning paper since):
classes 1-100 train (5,864 images), classes 101-200 test (5,924 images); the official
`train_test_split.txt` (a classification split) is not used.
"""

from __future__ import annotations

from pathlib import Path

from vmfml.data.benchmarks._layout import (
    PathLike,
    build_dataset,
    check_class_range,
    check_split,
    class_index,
    find_root,
    parse_int,
    read_rows,
    require_file,
)
from vmfml.data.image_folder import ImageFolderDataset

STANDARD_RECALL_KS: tuple[int, ...] = (1, 2, 4, 8)
SPLITS: tuple[str, ...] = ("train", "test")
NUM_TRAIN_CLASSES = 100
NUM_CLASSES = 200

LAYOUT = """\
  ROOT/CUB_200_2011/            (or ROOT pointing at CUB_200_2011 itself)
    images.txt                  "<image_id> <image_name>", e.g. "1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    image_class_labels.txt      "<image_id> <class_id>", class ids 1..200
    images/<image_name>         the photos"""


def load_cub200(
    root: PathLike, split: str = "train", on_error: str = "raise", progress: bool = True
) -> ImageFolderDataset:
    """CUB-200-2011 from its official layout, split class-disjointly at class 100.

    Args:
        root: the folder holding `CUB_200_2011/`, or `CUB_200_2011/` itself.
        split: "train" (classes 1-100) or "test" (classes 101-200).
        on_error: "raise" refuses missing images (all are checked at load); "skip" drops missing
            and unreadable ones with a warning (decoding every image once).
        progress: a progress bar while decoding (with "skip").

    Returns:
        An `ImageFolderDataset` in `images.txt` order; labels `0..C-1` follow the class ids, and
        `class_names[label]` is the official class id as a string ("1".."200").
    """
    check_split("cub200", split, SPLITS)
    base = find_root(root, "images.txt", LAYOUT, subfolders=("CUB_200_2011",))
    images_file = base / "images.txt"
    labels_file = require_file(base / "image_class_labels.txt", LAYOUT)

    names: dict[int, str] = {}
    for line_no, (image_id, name) in read_rows(images_file, 2):
        key = parse_int(image_id, images_file, line_no, "image_id")
        if key in names:
            raise ValueError(f"{images_file}, line {line_no}: image_id {key} listed twice")
        names[key] = name

    class_of: dict[int, int] = {}
    for line_no, (image_id, class_id) in read_rows(labels_file, 2):
        key = parse_int(image_id, labels_file, line_no, "image_id")
        if key not in names:
            raise ValueError(
                f"{labels_file}, line {line_no}: image_id {key} is not in {images_file}"
            )
        class_of[key] = parse_int(class_id, labels_file, line_no, "class_id")
        check_class_range(class_of[key], 1, NUM_CLASSES, labels_file, line_no, "CUB-200-2011")
    unlabelled = [key for key in names if key not in class_of]
    if unlabelled:
        raise ValueError(
            f"{labels_file} has no class for image ids {unlabelled[:10]} of {images_file}"
        )

    in_split = [key for key in names if (class_of[key] <= NUM_TRAIN_CLASSES) == (split == "train")]
    class_ids = [class_of[key] for key in in_split]
    paths = [base / "images" / Path(names[key]) for key in in_split]
    return build_dataset(
        base,
        paths,
        class_ids,
        class_index(class_ids),
        LAYOUT,
        listed_in=images_file,
        on_error=on_error,
        progress=progress,
    )
