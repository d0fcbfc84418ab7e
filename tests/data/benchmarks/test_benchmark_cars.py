"""Cars196 loader on tiny trees in both official layouts, with .mat files written by scipy in the
structure of the released ones (struct array `annotations` [1, N], field order as released)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from vmfml.data.benchmarks import load_cars196

# (class id, images); 98 and 99 sit on the split boundary, and "98" > "150" as strings.
CLASSES = [(1, 2), (2, 1), (98, 3), (99, 2), (150, 2), (196, 1)]
ANNOS_FIELDS = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
DEVKIT_FIELDS = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
NAMES = {c: f"Make{c} Model {2000 + c % 13}" for c, _ in CLASSES}


def struct_array(records: list[dict], fields: list[str]) -> np.ndarray:
    """A MATLAB 1xN struct array for savemat, one record per dict, fields in the given order."""
    array = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, record in enumerate(records):
        array[0, i] = tuple(record[f] for f in fields)
    return array


def cell_row(strings: list[str]) -> np.ndarray:
    cells = np.empty((1, len(strings)), dtype=object)
    cells[0, :] = strings
    return cells


def bbox() -> dict:
    return {k: np.uint16(v) for k, v in zip(ANNOS_FIELDS[1:5], (3, 4, 10, 7), strict=True)}


def samples() -> list[tuple[int, int, int]]:
    """(image index, class id, official classification 'test' flag) in annotation order."""
    out, index = [], 0
    for class_id, count in CLASSES:
        for n in range(count):
            index += 1
            out.append((index, class_id, n % 2))
    return out


def class_names_cells() -> np.ndarray:
    return cell_row([NAMES.get(c, f"Unused {c}") for c in range(1, 197)])


def make_one_file_layout(root: Path, jpegs) -> dict[str, int]:
    """root/cars_annos.mat + root/car_ims/; return {relative_im_path: class id}."""
    records, truth = [], {}
    for index, class_id, test in samples():
        rel = f"car_ims/{index:06d}.jpg"
        jpegs.write(root / rel, index)
        records.append(
            {"relative_im_path": rel, **bbox(), "class": np.uint8(class_id), "test": np.uint8(test)}
        )
        truth[rel] = class_id
    scipy.io.savemat(
        root / "cars_annos.mat",
        {"annotations": struct_array(records, ANNOS_FIELDS), "class_names": class_names_cells()},
    )
    return truth


def make_devkit_layout(root: Path, jpegs, with_test_labels: bool = True) -> dict[str, int]:
    """devkit/*.mat + cars_train/ + cars_test/ (+ cars_test_annos_withlabels.mat); returns
    {folder/fname: class id}."""
    halves: dict[str, list[dict]] = {"cars_train": [], "cars_test": []}
    truth = {}
    for index, class_id, test in samples():
        folder = "cars_test" if test else "cars_train"
        fname = f"{len(halves[folder]) + 1:05d}.jpg"
        jpegs.write(root / folder / fname, index)
        halves[folder].append({**bbox(), "class": np.uint8(class_id), "fname": fname})
        truth[f"{folder}/{fname}"] = class_id
    devkit = root / "devkit"
    devkit.mkdir()
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": class_names_cells()})
    scipy.io.savemat(
        devkit / "cars_train_annos.mat",
        {"annotations": struct_array(halves["cars_train"], DEVKIT_FIELDS)},
    )
    # The devkit's own test annotations have no class; the labelled ones came out separately.
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in halves["cars_test"]]
    scipy.io.savemat(
        devkit / "cars_test_annos.mat",
        {"annotations": struct_array(unlabelled, [f for f in DEVKIT_FIELDS if f != "class"])},
    )
    if with_test_labels:
        scipy.io.savemat(
            root / "cars_test_annos_withlabels.mat",
            {"annotations": struct_array(halves["cars_test"], DEVKIT_FIELDS)},
        )
    return truth


def test_written_mat_has_the_released_structure(tmp_path: Path, jpegs) -> None:
    make_one_file_layout(tmp_path, jpegs)
    mat = scipy.io.loadmat(tmp_path / "cars_annos.mat")
    assert mat["annotations"].shape == (1, sum(n for _, n in CLASSES))
    assert list(mat["annotations"].dtype.names) == ANNOS_FIELDS
    assert mat["class_names"].shape == (1, 196)
    first = mat["annotations"][0, 0]
    assert first["relative_im_path"][0] == "car_ims/000001.jpg" and first["class"][0, 0] == 1


@pytest.mark.parametrize("layout", ["one_file", "devkit"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_split_holds_exactly_its_classes(tmp_path: Path, jpegs, layout: str, split: str) -> None:
    make = make_one_file_layout if layout == "one_file" else make_devkit_layout
    truth = make(tmp_path, jpegs)
    ds = load_cars196(tmp_path, split)

    wanted = [c for c, _ in CLASSES if (c <= 98) == (split == "train")]
    assert ds.class_names == [str(c) for c in wanted]
    assert len(ds) == sum(n for c, n in CLASSES if c in wanted)
    expected = {rel for rel, c in truth.items() if c in wanted}
    assert {str(Path(p).relative_to(tmp_path)) for p in ds.paths} == expected
    for path, label in zip(ds.paths, ds.labels.tolist(), strict=True):
        assert ds.class_names[label] == str(truth[str(Path(path).relative_to(tmp_path))])


def test_one_file_layout_ignores_the_classification_test_flag(tmp_path: Path, jpegs) -> None:
    make_one_file_layout(tmp_path, jpegs)
    train, test = load_cars196(tmp_path, "train"), load_cars196(tmp_path, "test")
    flagged = [f"car_ims/{i:06d}.jpg" for i, c, t in samples() if t == 1 and c <= 98]
    assert flagged and all(str(tmp_path / rel) in train.paths for rel in flagged)
    assert not set(train.class_names) & set(test.class_names)
    assert len(train) + len(test) == len(samples())
    # annotation order is kept: car_ims/000001.jpg ... in file order
    assert train.paths == sorted(train.paths)


def test_both_layouts_give_the_same_images(tmp_path: Path, jpegs) -> None:
    one, dev = tmp_path / "one", tmp_path / "dev"
    make_one_file_layout(one, jpegs)
    make_devkit_layout(dev, jpegs)
    for split in ("train", "test"):
        a, b = load_cars196(one, split), load_cars196(dev, split)
        assert a.class_names == b.class_names
        # same pixels per label: match images by their decoded colour
        colors_a = sorted(
            (int(a.labels[i]), tuple(a[i][0].float().mean((1, 2)).round().tolist()))
            for i in range(len(a))
        )
        colors_b = sorted(
            (int(b.labels[i]), tuple(b[i][0].float().mean((1, 2)).round().tolist()))
            for i in range(len(b))
        )
        assert colors_a == colors_b


def test_image_decodes(tmp_path: Path, jpegs) -> None:
    make_one_file_layout(tmp_path, jpegs)
    ds = load_cars196(tmp_path, "test")
    image, label = ds[0]
    first_test = next(i for i, c, _ in samples() if c > 98)
    jpegs.check(image, first_test)
    assert ds.class_names[label] == "99"


def test_torchvision_folder_is_found(tmp_path: Path, jpegs) -> None:
    make_devkit_layout(tmp_path / "stanford_cars", jpegs)
    assert len(load_cars196(tmp_path, "train")) == sum(n for c, n in CLASSES if c <= 98)


def test_devkit_without_test_labels_says_which_file_is_needed(tmp_path: Path, jpegs) -> None:
    make_devkit_layout(tmp_path, jpegs, with_test_labels=False)
    with pytest.raises(FileNotFoundError, match="cars_test_annos_withlabels.mat.*expected layout"):
        load_cars196(tmp_path, "train")


def test_missing_annotations_and_bad_split(tmp_path: Path, jpegs) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"cars_annos.mat.*devkit/cars_train_annos.mat.*expected layout"
    ):
        load_cars196(tmp_path, "train")
    make_one_file_layout(tmp_path, jpegs)
    with pytest.raises(ValueError, match="split must be one of train, test; got 'eval'"):
        load_cars196(tmp_path, "eval")


def test_mat_without_the_expected_fields_is_refused(tmp_path: Path) -> None:
    records = [{"relative_im_path": "car_ims/000001.jpg", "label": np.uint8(1)}]
    scipy.io.savemat(
        tmp_path / "cars_annos.mat",
        {"annotations": struct_array(records, ["relative_im_path", "label"])},
    )
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['class'\]"):
        load_cars196(tmp_path, "train")
    (tmp_path / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="cannot read .*cars_annos.mat as a MATLAB file"):
        load_cars196(tmp_path, "train")
