"""In-Shop Clothes Retrieval (DeepFashion, Liu et al. 2016): 52,712 shop photos of 7,982 items.

Official partition (`list_eval_partition.txt`): train 25,882 images of 3,997 items; query 14,218
and gallery 12,612 images of the same 3,985 other items. Evaluation retrieves each query among
the gallery (not among the other queries), so query and gallery share one label space: an item
has the same label in both, and `class_names` is the same list for both splits.
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

STANDARD_RECALL_KS: tuple[int, ...] = (1, 10, 20, 30, 40, 50)
SPLITS: tuple[str, ...] = ("train", "query", "gallery")
HEADER = ["image_name", "item_id", "evaluation_status"]

LAYOUT = """\
  ROOT/list_eval_partition.txt      line 1: the number of images; line 2: "image_name item_id
                                    evaluation_status"; then rows like
                                    "img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train"
                                    with evaluation_status train, query or gallery
  ROOT/img/...                      the photos (img.zip extracted), image_name relative to ROOT
  or the download's own layout: ROOT/Eval/list_eval_partition.txt with ROOT/Img/img/..."""


def _image_base(root: Path, partition_dir: Path, images: list[str]) -> Path:
    """The folder that `image_name`s are relative to: next to the partition file, or the
    download's `Img/` folder (found by the first of the split's first images that exists)."""
    for name in images[:20]:
        for candidate in (partition_dir, root, root / "Img"):
            if (candidate / name).is_file():
                return candidate
    raise FileNotFoundError(
        f"image {images[0]} listed in {partition_dir / 'list_eval_partition.txt'} was not found "
        f"under {partition_dir}, {root} or {root / 'Img'}; expected layout:\n{LAYOUT}"
    )


def load_inshop(
    root: PathLike, split: str = "train", on_error: str = "raise", progress: bool = True
) -> ImageFolderDataset:
    """In-Shop Clothes from its official layout.

    Args:
        root: the folder holding `list_eval_partition.txt` and `img/` (or `Eval/` and `Img/img/`).
        split: "train", "query" or "gallery".
        on_error: "raise" refuses missing images (all are checked at load); "skip" drops missing
            and unreadable ones with a warning (decoding every image once).
        progress: a progress bar while decoding (with "skip").

    Returns:
        An `ImageFolderDataset` in file order; `class_names[label]` is the `item_id`
        ("id_00000001"). Train labels index the train items; query and gallery labels index the
        sorted union of query and gallery items, so they agree across the two splits.
    """
    check_split("inshop", split, SPLITS)
    base = Path(root).expanduser()
    partition_dir = find_root(base, "list_eval_partition.txt", LAYOUT, subfolders=("Eval",))
    path = partition_dir / "list_eval_partition.txt"
    with path.open(encoding="utf-8") as f:
        count_line, header_line = f.readline(), f.readline()
    declared = parse_int(count_line.strip(), path, 1, "the image count")
    if header_line.split() != HEADER:
        raise ValueError(
            f"{path}, line 2: expected the header {' '.join(HEADER)!r}; got {header_line.strip()!r}"
        )
    rows = read_rows(path, 3, skip_lines=2)
    if len(rows) != declared:
        raise ValueError(f"{path} declares {declared} images on line 1 but lists {len(rows)}")
    for line_no, (_, _, status) in rows:
        if status not in SPLITS:
            raise ValueError(
                f"{path}, line {line_no}: evaluation_status must be one of {', '.join(SPLITS)}; "
                f"got {status!r}"
            )

    _check_disjoint_items(rows, path)

    # Query and gallery are two views of the same test items: one label space for both.
    label_space = ("train",) if split == "train" else ("query", "gallery")
    index = class_index(item for _, (_, item, status) in rows if status in label_space)
    selected = [(name, item) for _, (name, item, status) in rows if status == split]
    if not selected:
        raise ValueError(f"{path} lists no {split} images; expected layout:\n{LAYOUT}")
    image_base = _image_base(base, partition_dir, [name for name, _ in selected])
    paths = [image_base / Path(name) for name, _ in selected]
    return build_dataset(
        image_base,
        paths,
        [item for _, item in selected],
        index,
        LAYOUT,
        listed_in=path,
        on_error=on_error,
        progress=progress,
    )


def _check_disjoint_items(rows: list[tuple[int, list[str]]], path: Path) -> None:
    """Refuse a training item listed as a query or gallery image: test items must be unseen."""
    train_line: dict[str, int] = {}
    for line_no, (_, item, status) in rows:
        if status == "train":
            train_line.setdefault(item, line_no)
    shared = [
        (line_no, item, status)
        for line_no, (_, item, status) in rows
        if status != "train" and item in train_line
    ]
    if shared:
        line_no, item, status = shared[0]
        count = len({item for _, item, _ in shared})
        raise ValueError(
            f"{path}, line {line_no}: item {item} is listed as {status} but is a training item "
            f"(line {train_line[item]}); {count} item(s) are both, but the test items must be "
            "unseen in training"
        )
