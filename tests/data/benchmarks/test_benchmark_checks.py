"""Benchmark lists are checked whole at load, before any training: every listed image exists
(missing ones named, or dropped with on_error="skip", which also drops unreadable ones), class ids
lie in the official range, and no training class or item is reused among the test ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from test_benchmark_cars import make_one_file_layout
from test_benchmark_cub import make_cub
from test_benchmark_inshop import ROWS, make_inshop, write_partition
from test_benchmark_sop import make_sop

from vmfml.data.benchmarks import (
    get_benchmark,
    load_benchmark,
    load_cars196,
    load_cub200,
    load_inshop,
    load_sop,
)


def cub_images(root: Path) -> list[Path]:
    return sorted((root / "CUB_200_2011" / "images").rglob("*.jpg"))


def make(name: str, root: Path, jpegs) -> list[Path]:
    """The benchmark's tiny tree; returns the images of its training split in list order."""
    if name == "cub200":
        make_cub(root, jpegs)
    elif name == "cars196":
        make_one_file_layout(root, jpegs)
    elif name == "sop":
        make_sop(root, jpegs)
    else:
        make_inshop(root, jpegs)
        # two more training images of the item with one, so that two can go without emptying it
        extra = [
            (f"img/MEN/Denim/id_00000080/01_{n}_side.jpg", "id_00000080", "train") for n in (2, 3)
        ]
        for n, (image, _, _) in enumerate(extra):
            jpegs.write(root / image, 20 + n)
        write_partition(root / "list_eval_partition.txt", [*ROWS, *extra])
    return [Path(p) for p in load_benchmark(name, root, "train").paths]


@pytest.mark.parametrize("name", ["cub200", "cars196", "sop", "inshop"])
def test_every_listed_image_is_checked_at_load(tmp_path: Path, jpegs, name: str) -> None:
    """As found: only the first image of a split was opened at load; the others failed when an
    epoch reached them, possibly hours in."""
    paths = make(name, tmp_path, jpegs)
    gone = paths[1:3]
    for path in gone:
        path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark(name, tmp_path, "train")
    message = str(err.value)
    assert f"2 of the {len(paths)} images listed in" in message
    for path in gone:
        assert path.name in message
    assert "--on-bad-image skip" in message and "\n" not in message


@pytest.mark.parametrize("name", ["cub200", "cars196", "sop", "inshop"])
def test_skip_drops_missing_and_unreadable_images_with_a_warning(
    tmp_path: Path, jpegs, name: str
) -> None:
    """As found: `--on-bad-image skip` did nothing for the benchmark loaders."""
    paths = make(name, tmp_path, jpegs)
    missing, corrupt = paths[1], paths[-1]
    missing.unlink()
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.warns(UserWarning) as record:
        ds = load_benchmark(name, tmp_path, "train", on_error="skip", progress=False)
    text = " ".join(str(w.message) for w in record)
    assert f"skipping 1 of the {len(paths)} images listed in" in text and missing.name in text
    assert "skipping unreadable image" in text and corrupt.name in text
    assert ds.paths == [str(p) for p in paths if p not in (missing, corrupt)]
    for i in range(len(ds)):
        ds[i]  # every image left decodes
    # The registry's loaders take the option too (what `vmfml train` calls).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_benchmark(name).load(tmp_path, "train", on_error="skip").paths == ds.paths


def test_skip_refuses_to_empty_a_class(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    # class 200 has a single image
    (only,) = [p for p in cub_images(tmp_path) if p.parent.name.startswith("200.")]
    only.unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no existing images left"):
        load_cub200(tmp_path, "test", on_error="skip")


def test_a_split_without_any_of_its_images_names_the_layout(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    for path in cub_images(tmp_path):
        path.unlink()
    for on_error in ("raise", "skip"):
        with pytest.raises(FileNotFoundError, match=r"none of the \d+ images .*expected layout"):
            load_cub200(tmp_path, "train", on_error=on_error)


def test_cub_class_id_outside_1_to_200_is_refused(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    labels = tmp_path / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels.read_text().splitlines()
    for bad in ("201", "0"):
        image_id = lines[-1].split()[0]
        lines[-1] = f"{image_id} {bad}"
        labels.write_text("\n".join(lines) + "\n")
        with pytest.raises(
            ValueError,
            match=rf"image_class_labels.txt, line {len(lines)}: class_id {bad} is outside 1..200",
        ):
            load_cub200(tmp_path, "train")


def test_cars_class_id_outside_1_to_196_is_refused(tmp_path: Path, jpegs) -> None:
    import numpy as np
    import scipy.io

    make_one_file_layout(tmp_path, jpegs)
    mat = scipy.io.loadmat(str(tmp_path / "cars_annos.mat"))
    mat["annotations"][0, 0]["class"] = np.uint8(197)
    scipy.io.savemat(tmp_path / "cars_annos.mat", {"annotations": mat["annotations"]})
    with pytest.raises(ValueError, match=r"cars_annos.mat: class ids must lie in 1..196.*197"):
        load_cars196(tmp_path, "test")


@pytest.mark.parametrize("split", ["train", "test"])
def test_sop_training_class_in_the_test_list_is_refused(tmp_path: Path, jpegs, split: str) -> None:
    make_sop(tmp_path, jpegs)
    test_list = tmp_path / "Stanford_Online_Products" / "Ebay_test.txt"
    lines = test_list.read_text().splitlines()
    fields = lines[3].split()
    lines[3] = " ".join([fields[0], "2", *fields[2:]])  # class 2 is a training class
    test_list.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError,
        match=r"Ebay_test.txt, line 4: class_id 2 is a training class \(.*Ebay_train.txt, line 4\)",
    ):
        load_sop(tmp_path, split)


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_inshop_training_item_among_the_test_items_is_refused(
    tmp_path: Path, jpegs, split: str
) -> None:
    make_inshop(tmp_path, jpegs)
    rows = list(ROWS)
    name, _, status = rows[6]  # a query image
    rows[6] = (name, "id_00000080", status)  # ... of a training item
    write_partition(tmp_path / "list_eval_partition.txt", rows)
    with pytest.raises(
        ValueError,
        match=r"line 9: item id_00000080 is listed as query but is a training item \(line 5\)",
    ):
        load_inshop(tmp_path, split)
