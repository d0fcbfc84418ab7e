"""Stanford Online Products (Oh Song et al. 2016): 120,053 eBay product photos of 22,634 products.

Official split: `Ebay_train.txt` (59,551 images of 11,318 products, class ids 1-11318) and
`Ebay_test.txt` (60,502 images of 11,316 products, class ids 11319-22634). The 12 super-classes
(bicycle, cabinet, ...) are not labels of the retrieval task.
"""

from __future__ import annotations

from pathlib import Path

from vmfml.data.benchmarks._layout import (
    PathLike,
    build_dataset,
    check_split,
    class_index,
    find_root,
    parse_int,
    read_rows,
)
from vmfml.data.image_folder import ImageFolderDataset

STANDARD_RECALL_KS: tuple[int, ...] = (1, 10, 100, 1000)
SPLITS: tuple[str, ...] = ("train", "test")
HEADER = ["image_id", "class_id", "super_class_id", "path"]

LAYOUT = """\
  ROOT/Stanford_Online_Products/    (or ROOT pointing at Stanford_Online_Products itself)
    Ebay_train.txt, Ebay_test.txt   header "image_id class_id super_class_id path", then rows
                                    like "1 1 1 bicycle_final/111085122871_0.JPG"
    bicycle_final/ cabinet_final/ chair_final/ coffee_maker_final/ fan_final/ kettle_final/
    lamp_final/ mug_final/ sofa_final/ stapler_final/ table_final/ toaster_final/   the photos"""


def load_sop(
    root: PathLike, split: str = "train", on_error: str = "raise", progress: bool = True
) -> ImageFolderDataset:
    """Stanford Online Products from its official layout.

    Args:
        root: the folder holding `Stanford_Online_Products/`, or that folder itself.
        split: "train" (`Ebay_train.txt`) or "test" (`Ebay_test.txt`).
        on_error: "raise" refuses missing images (all are checked at load); "skip" drops missing
            and unreadable ones with a warning (decoding every image once).
        progress: a progress bar while decoding (with "skip").

    Returns:
        An `ImageFolderDataset` in file order; labels `0..C-1` follow the class ids, and
        `class_names[label]` is the official `class_id` as a string.

    Raises:
        ValueError: besides malformed rows, a test class that is also a training class (the test
            classes must be unseen), when both lists are present.
    """
    check_split("sop", split, SPLITS)
    filename = f"Ebay_{split}.txt"
    base = find_root(root, filename, LAYOUT, subfolders=("Stanford_Online_Products",))
    path = base / filename
    rows = _read_list(path)
    other = base / f"Ebay_{'test' if split == 'train' else 'train'}.txt"
    if other.is_file():
        train_rows, test_rows = (
            (rows, _read_list(other)) if split == "train" else (_read_list(other), rows)
        )
        _check_disjoint(train_rows, test_rows, base / "Ebay_train.txt", base / "Ebay_test.txt")
    class_ids = [class_id for _, class_id, _ in rows]
    paths = [base / Path(relative) for _, _, relative in rows]
    return build_dataset(
        base,
        paths,
        class_ids,
        class_index(class_ids),
        LAYOUT,
        listed_in=path,
        on_error=on_error,
        progress=progress,
    )


def _read_list(path: Path) -> list[tuple[int, int, str]]:
    """`(line number, class_id, relative path)` of each row of an Ebay_*.txt file."""
    with path.open(encoding="utf-8") as f:
        header = f.readline().split()
    if header != HEADER:
        raise ValueError(
            f"{path}, line 1: expected the header {' '.join(HEADER)!r}; got {' '.join(header)!r}"
        )
    return [
        (line_no, parse_int(class_id, path, line_no, "class_id"), relative)
        for line_no, (_, class_id, _, relative) in read_rows(path, 4, skip_lines=1)
    ]


def _check_disjoint(
    train_rows: list[tuple[int, int, str]],
    test_rows: list[tuple[int, int, str]],
    train_path: Path,
    test_path: Path,
) -> None:
    """Refuse test classes that are training classes: retrieval is measured on unseen products."""
    train_line: dict[int, int] = {}
    for line_no, class_id, _ in train_rows:
        train_line.setdefault(class_id, line_no)
    shared = [(line_no, c) for line_no, c, _ in test_rows if c in train_line]
    if shared:
        line_no, class_id = shared[0]
        count = len({c for _, c in shared})
        raise ValueError(
            f"{test_path}, line {line_no}: class_id {class_id} is a training class "
            f"({train_path}, line {train_line[class_id]}); {count} test class(es) are also "
            "training classes, but the SOP test classes must be unseen in training"
        )
