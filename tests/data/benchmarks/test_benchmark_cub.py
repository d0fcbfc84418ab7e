"""CUB-200-2011 loader on a tiny tree in the official layout (file formats as in the release)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.data.benchmarks import load_cub200

# (class id, official class folder name, images in the class); ids 100 and 101 sit on the split
# boundary, and "100" > "2" only numerically, so a string sort of the ids would show.
CLASSES = [
    (1, "001.Black_footed_Albatross", 2),
    (2, "002.Laysan_Albatross", 3),
    (100, "100.Brown_Pelican", 2),
    (101, "101.White_Pelican", 2),
    (150, "150.Sage_Thrasher", 3),
    (200, "200.Common_Yellowthroat", 1),
]


def make_cub(root: Path, jpegs) -> dict[str, tuple[int, int]]:
    """Write root/CUB_200_2011 as released; return {relative image name: (class id, image index)}."""
    base = root / "CUB_200_2011"
    images, labels, split, truth = [], [], [], {}
    image_id = 0
    for class_id, folder, count in CLASSES:
        species = folder.split(".", 1)[1]
        for n in range(count):
            image_id += 1
            name = f"{folder}/{species}_{n:04d}_{1000 + image_id}.jpg"
            # CUB holds a few grey-scale JPEGs; one here checks they come back as RGB.
            jpegs.write(base / "images" / name, image_id, mode="L" if image_id == 4 else "RGB")
            images.append(f"{image_id} {name}")
            labels.append(f"{image_id} {class_id}")
            split.append(f"{image_id} {image_id % 2}")
            truth[name] = (class_id, image_id)
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("".join(f"{c} {f}\n" for c, f, _ in CLASSES))
    return truth


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_holds_exactly_its_classes_in_file_order(tmp_path: Path, jpegs, split: str) -> None:
    truth = make_cub(tmp_path, jpegs)
    ds = load_cub200(tmp_path, split)

    wanted = [c for c, _, _ in CLASSES if (c <= 100) == (split == "train")]
    assert ds.class_names == [str(c) for c in wanted]
    base = tmp_path / "CUB_200_2011" / "images"
    expected = [name for name, (c, _) in truth.items() if c in wanted]
    assert ds.paths == [str(base / name) for name in expected]
    assert len(ds) == sum(n for c, _, n in CLASSES if c in wanted)
    for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
        class_id, _ = truth[str(Path(path).relative_to(base))]
        assert ds.class_names[label] == str(class_id)
    assert sorted(set(ds.labels.tolist())) == list(range(len(wanted)))


def test_train_and_test_classes_are_disjoint_and_cover_all(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    train, test = load_cub200(tmp_path, "train"), load_cub200(tmp_path, "test")
    assert not set(train.class_names) & set(test.class_names)
    assert len(train) + len(test) == sum(n for _, _, n in CLASSES)
    assert set(train.paths).isdisjoint(test.paths)


def test_images_decode_to_the_written_pixels(tmp_path: Path, jpegs) -> None:
    truth = make_cub(tmp_path, jpegs)
    ds = load_cub200(tmp_path, "train")
    base = tmp_path / "CUB_200_2011" / "images"
    for i in range(len(ds)):  # includes the grey-scale file (image id 4)
        image, label = ds[i]
        class_id, index = truth[str(Path(ds.paths[i]).relative_to(base))]
        assert label == ds.labels[i] and ds.class_names[label] == str(class_id)
        jpegs.check(image, index, grey=index == 4)


def test_root_may_be_the_cub_folder_itself(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    outer = load_cub200(tmp_path, "test")
    inner = load_cub200(tmp_path / "CUB_200_2011", "test")
    assert inner.paths == outer.paths and inner.labels.tolist() == outer.labels.tolist()


@pytest.mark.parametrize("missing", ["images.txt", "image_class_labels.txt"])
def test_missing_annotation_file_is_named_with_the_layout(
    tmp_path: Path, jpegs, missing: str
) -> None:
    make_cub(tmp_path, jpegs)
    (tmp_path / "CUB_200_2011" / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*expected layout") as err:
        load_cub200(tmp_path, "train")
    assert "images/<image_name>" in str(err.value)


def test_missing_images_folder_is_reported(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    for path in sorted((tmp_path / "CUB_200_2011" / "images").rglob("*.jpg")):
        path.unlink()
    with pytest.raises(
        FileNotFoundError, match="001.Black_footed_Albatross/Black_footed_Albatross_0000"
    ):
        load_cub200(tmp_path, "train")


def test_bad_split_and_bad_rows_are_refused(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    with pytest.raises(ValueError, match="split must be one of train, test; got 'val'"):
        load_cub200(tmp_path, "val")
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    good = labels.read_text()
    labels.write_text(good.replace("3 2\n", "3 two\n"))
    with pytest.raises(
        ValueError, match=r"image_class_labels.txt, line 3: class_id must be an integer"
    ):
        load_cub200(tmp_path, "train")
    labels.write_text("".join(good.splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"no class for image ids \[13\]"):
        load_cub200(tmp_path, "train")
