"""--split open-set: a share of the classes held out whole as unknown, the rest split as
`standard`; a run on it reports the open-set figures of its held-out classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmfml.data import load_open_set_splits


def test_unknown_classes_are_held_out_whole_and_the_rest_split_by_image(
    fashion_folder: Callable[..., Path],
) -> None:
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    folder = fashion_folder(names, 20)
    train, test, unknown = load_open_set_splits(
        folder, unknown_fraction=0.3, seed=1, progress=False
    )
    assert len(unknown.class_names) == 3 and len(unknown) == 3 * 4  # their test images
    assert set(unknown.class_names).isdisjoint(train.class_names)
    assert train.class_names == test.class_names and len(train.class_names) == 7
    assert len(test) == 7 * 4 and len(train) == 7 * 16  # 20% of each known class
    assert {Path(p).parent.name for p in unknown.paths} == set(unknown.class_names)
    again = load_open_set_splits(folder, unknown_fraction=0.3, seed=1, progress=False)
    assert again[2].class_names == unknown.class_names  # deterministic given the seed
    with pytest.raises(ValueError, match="unknown_fraction must be in"):
        load_open_set_splits(folder, unknown_fraction=1.0)


def test_fashion_mnist_open_set_uses_the_official_images() -> None:
    train, test, unknown = load_open_set_splits("fashion-mnist", seed=0, progress=False)
    assert len(train) == 7 * 6000 and len(test) == 7 * 1000 and len(unknown) == 3 * 1000


@pytest.mark.slow
def test_a_run_on_an_open_set_split_reports_its_unknown_classes(
    tmp_path: Path, fashion_folder: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    folder = fashion_folder(["a", "b", "c", "d", "e", "f"], 40)
    out = tmp_path / "run"
    quick = "--depth 1 --width 0.5 --batch-size 64 --plots false --progress false --threads 1"
    result = run_cli(
        "train", "--data", folder, "--split", "open-set", "--unknown-fraction", 0.34,
        *quick.split(), "--epochs", 1, "--out-dir", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads((out / "metrics.json").read_text())["open_set"]
    assert report["unknown_images"] == 2 * 8 and report["known_images"] == 4 * 8
    assert "open set: 32 test images of the known classes against 16 unknown images" in result.out
    refused = run_cli(
        "train", "--data", folder, "--unknown-fraction", 0.2, "--out-dir", tmp_path / "x"
    )
    assert (
        refused.code == 2 and "--unknown-fraction applies only to --split open-set" in refused.err
    )
