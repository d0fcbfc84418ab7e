"""In-Shop Clothes loader on tiny trees in the official layout (and the download's Eval/Img one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.data.benchmarks import load_inshop

# (image name, item id, evaluation status), as list_eval_partition.txt lists them.
ROWS = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg", "id_00000001", "gallery"),
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_2_side.jpg", "id_00000001", "query"),
    ("img/WOMEN/Blouses_Shirts/id_00000001/02_3_back.jpg", "id_00000001", "query"),
    ("img/WOMEN/Tees_Tanks/id_00000007/01_1_front.jpg", "id_00000007", "query"),
    ("img/WOMEN/Tees_Tanks/id_00000007/01_2_side.jpg", "id_00000007", "gallery"),
    ("img/MEN/Shirts_Polos/id_00000011/03_1_front.jpg", "id_00000011", "gallery"),  # gallery only
    ("img/MEN/Shirts_Polos/id_00000003/01_4_full.jpg", "id_00000003", "query"),
    ("img/MEN/Shirts_Polos/id_00000003/01_7_additional.jpg", "id_00000003", "gallery"),
]


def write_partition(path: Path, rows: list[tuple[str, str, str]], count: int | None = None) -> None:
    """The released format: the count, the header, then left-aligned padded columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    lines += [f"{name:<70} {item:<14} {status}" for name, item, status in rows]
    path.write_text("\n".join(lines) + "\n")


def make_inshop(root: Path, jpegs, download_layout: bool = False) -> Path:
    """Write the partition file and img/; return the folder image names are relative to."""
    if download_layout:
        write_partition(root / "Eval" / "list_eval_partition.txt", ROWS)
        image_base = root / "Img"
    else:
        write_partition(root / "list_eval_partition.txt", ROWS)
        image_base = root
    for index, (name, _, _) in enumerate(ROWS):
        jpegs.write(image_base / name, index)
    return image_base


@pytest.mark.parametrize("download_layout", [False, True])
@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_split_lists_its_rows_in_file_order(
    tmp_path: Path, jpegs, split: str, download_layout: bool
) -> None:
    image_base = make_inshop(tmp_path, jpegs, download_layout)
    ds = load_inshop(tmp_path, split)
    rows = [(name, item) for name, item, status in ROWS if status == split]
    assert ds.paths == [str(image_base / name) for name, _ in rows]
    assert [ds.class_names[label] for label in ds.labels.tolist()] == [item for _, item in rows]
    index = next(i for i, row in enumerate(ROWS) if row[2] == split)
    jpegs.check(ds[0][0], index)


def test_query_and_gallery_share_one_label_space(tmp_path: Path, jpegs) -> None:
    make_inshop(tmp_path, jpegs)
    train, query, gallery = (load_inshop(tmp_path, s) for s in ("train", "query", "gallery"))
    test_items = sorted({item for _, item, status in ROWS if status != "train"})
    assert query.class_names == gallery.class_names == test_items
    assert train.class_names == ["id_00000002", "id_00000080"]
    assert not set(train.class_names) & set(query.class_names)
    # every query's label is the label of the gallery images of the same item
    gallery_label = {item: gallery.class_names.index(item) for _, item, s in ROWS if s == "gallery"}
    for label in query.labels.tolist():
        assert label == gallery_label[query.class_names[label]]
        assert label in gallery.labels.tolist()


def test_missing_partition_and_images_are_named(tmp_path: Path, jpegs) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"list_eval_partition.txt not found.*expected layout"
    ):
        load_inshop(tmp_path, "train")
    write_partition(tmp_path / "list_eval_partition.txt", ROWS)
    with pytest.raises(
        FileNotFoundError, match=r"img/WOMEN/Dresses/id_00000002/02_1_front.jpg .*was not found"
    ):
        load_inshop(tmp_path, "train")


def test_malformed_partition_files_are_refused(tmp_path: Path, jpegs) -> None:
    make_inshop(tmp_path, jpegs)
    partition = tmp_path / "list_eval_partition.txt"
    with pytest.raises(
        ValueError, match="inshop split must be one of train, query, gallery; got 'test'"
    ):
        load_inshop(tmp_path, "test")
    write_partition(partition, ROWS, count=len(ROWS) + 1)
    with pytest.raises(
        ValueError, match=f"declares {len(ROWS) + 1} images on line 1 but lists {len(ROWS)}"
    ):
        load_inshop(tmp_path, "train")
    write_partition(partition, [*ROWS[:-1], (ROWS[-1][0], ROWS[-1][1], "val")])
    with pytest.raises(ValueError, match=f"line {len(ROWS) + 2}: evaluation_status must be one of"):
        load_inshop(tmp_path, "train")
    partition.write_text("\n".join(partition.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match="line 1: the image count must be an integer"):
        load_inshop(tmp_path, "train")
