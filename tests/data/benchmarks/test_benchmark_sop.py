"""Stanford Online Products loader on a tiny tree in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.data.benchmarks import load_sop

HEADER = "image_id class_id super_class_id path"
SUPER = {1: "bicycle_final", 2: "cabinet_final", 12: "toaster_final"}
# (class id, super class id, images): train ids start at 1, test ids at 11319 as released;
# "10" < "2" as strings, so a string sort of the ids would show.
TRAIN = [(1, 1, 2), (2, 1, 3), (10, 2, 2)]
TEST = [(11319, 2, 2), (11320, 12, 1), (22634, 12, 3)]


def make_sop(root: Path, jpegs) -> dict[str, int]:
    """Write root/Stanford_Online_Products as released; return {relative path: class id}."""
    base = root / "Stanford_Online_Products"
    truth, index, info = {}, 0, [HEADER]
    for split, classes in (("train", TRAIN), ("test", TEST)):
        rows = [HEADER]
        for class_id, super_id, count in classes:
            product = 111085122871 + class_id  # eBay listing id: file names are "<listing>_<n>.JPG"
            for n in range(count):
                index += 1
                rel = f"{SUPER[super_id]}/{product}_{n}.JPG"
                jpegs.write(base / rel, index)
                rows.append(f"{len(rows)} {class_id} {super_id} {rel}")
                info.append(f"{index} {class_id} {super_id} {rel}")
                truth[rel] = class_id
        (base / f"Ebay_{split}.txt").write_text("\n".join(rows) + "\n")
    (base / "Ebay_info.txt").write_text("\n".join(info) + "\n")
    return truth


@pytest.mark.parametrize(("split", "classes"), [("train", TRAIN), ("test", TEST)])
def test_split_follows_its_file(tmp_path: Path, jpegs, split: str, classes: list) -> None:
    truth = make_sop(tmp_path, jpegs)
    ds = load_sop(tmp_path, split)
    base = tmp_path / "Stanford_Online_Products"

    assert ds.class_names == [str(c) for c, _, _ in classes]
    assert len(ds) == sum(n for _, _, n in classes)
    lines = (base / f"Ebay_{split}.txt").read_text().splitlines()[1:]
    assert ds.paths == [str(base / line.split()[3]) for line in lines]
    for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
        assert ds.class_names[label] == str(truth[str(Path(path).relative_to(base))])
    assert sorted(set(ds.labels.tolist())) == list(range(len(classes)))


def test_splits_are_class_disjoint_and_images_decode(tmp_path: Path, jpegs) -> None:
    make_sop(tmp_path, jpegs)
    train, test = load_sop(tmp_path, "train"), load_sop(tmp_path, "test")
    assert not set(train.class_names) & set(test.class_names)
    image, label = test[0]
    first_test_index = sum(n for _, _, n in TRAIN) + 1
    jpegs.check(image, first_test_index)
    assert test.class_names[label] == "11319"


def test_root_may_be_the_sop_folder_itself(tmp_path: Path, jpegs) -> None:
    make_sop(tmp_path, jpegs)
    assert (
        load_sop(tmp_path / "Stanford_Online_Products", "train").paths
        == load_sop(tmp_path, "train").paths
    )


def test_missing_file_wrong_header_and_bad_split(tmp_path: Path, jpegs) -> None:
    make_sop(tmp_path, jpegs)
    base = tmp_path / "Stanford_Online_Products"
    (base / "Ebay_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Ebay_test.txt not found.*expected layout"):
        load_sop(tmp_path, "test")
    train = base / "Ebay_train.txt"
    train.write_text("\n".join(train.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match=r"Ebay_train.txt, line 1: expected the header"):
        load_sop(tmp_path, "train")
    with pytest.raises(ValueError, match="sop split must be one of train, test; got 'query'"):
        load_sop(tmp_path, "query")
