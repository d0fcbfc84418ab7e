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


def load_sop(root: PathLike, split: str = "train") -> ImageFolderDataset:
    """Stanford Online Products from its official layout.

    Args:
        root: the folder holding `Stanford_Online_Products/`, or that folder itself.
        split: "train" (`Ebay_train.txt`) or "test" (`Ebay_test.txt`).

    Returns:
        An `ImageFolderDataset` in file order; labels `0..C-1` follow the class ids, and
        `class_names[label]` is the official `class_id` as a string.
    """
    check_split("sop", split, SPLITS)
    filename = f"Ebay_{split}.txt"
    base = find_root(root, filename, LAYOUT, subfolders=("Stanford_Online_Products",))
    path = base / filename
    with path.open(encoding="utf-8") as f:
        header = f.readline().split()
    if header != HEADER:
        raise ValueError(
            f"{path}, line 1: expected the header {' '.join(HEADER)!r}; got {' '.join(header)!r}"
        )

    paths: list[Path] = []
    class_ids: list[int] = []
    for line_no, (_, class_id, _, relative) in read_rows(path, 4, skip_lines=1):
        class_ids.append(parse_int(class_id, path, line_no, "class_id"))
        paths.append(base / Path(relative))
    return build_dataset(base, paths, class_ids, class_index(class_ids), LAYOUT)
