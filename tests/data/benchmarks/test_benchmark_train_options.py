"""`vmfml train` on a benchmark: options that cannot apply are refused, not silently ignored,
and --on-bad-image reaches the benchmark loaders."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_benchmark_cub import make_cub

train_config = pytest.importorskip("vmfml.train.config")
from vmfml.train.datasets import build_datasets  # noqa: E402


def config(root: Path, **options: object):  # type: ignore[no-untyped-def]
    return train_config.TrainConfig(data="cub200", data_root=str(root), progress=False, **options)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"split": "class-disjoint"}, "--split class-disjoint"),
        ({"test_fraction": 0.5}, "--test-fraction 0.5"),
    ],
)
def test_split_options_are_refused_for_a_benchmark(
    tmp_path: Path, jpegs, options: dict, named: str
) -> None:
    """As found: they were ignored, and config.yaml recorded `split: standard`."""
    make_cub(tmp_path, jpegs)
    with pytest.raises(ValueError, match=rf"{named} cannot apply to --data cub200: .*official"):
        build_datasets(config(tmp_path, **options))
    data = build_datasets(config(tmp_path))  # the defaults: the official split
    assert data.disjoint and not set(data.train.class_names) & set(data.test.class_names)


def test_on_bad_image_reaches_the_benchmark_loader(tmp_path: Path, jpegs) -> None:
    make_cub(tmp_path, jpegs)
    images = sorted((tmp_path / "CUB_200_2011" / "images").rglob("*.jpg"))
    images[1].unlink()  # a training image (class 1)
    with pytest.raises(FileNotFoundError, match=images[1].name):
        build_datasets(config(tmp_path))
    with pytest.warns(UserWarning, match=images[1].name):
        data = build_datasets(config(tmp_path, on_bad_image="skip"))
    assert str(images[1]) not in data.train.paths and len(data.train) == 6
