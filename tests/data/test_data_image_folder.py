"""Folders of real images (Fashion-MNIST samples written as PNG and JPEG) and the ways they go wrong."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vmfml.data import ImageFolderDataset, TransformedDataset, decode_image, make_transform
from vmfml.data import image_folder as load_folder

CLASSES = ["bag", "sneaker", "trouser"]  # Fashion-MNIST labels 8, 7, 1; sorted on disk
LABELS = {"bag": 8, "sneaker": 7, "trouser": 1}


@pytest.fixture()
def folder(
    tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]
) -> tuple[Path, dict[str, np.ndarray]]:
    """root/<class>/ with 6 PNGs and 2 JPEGs per class; returns root and the source pixels by file."""
    x, y = fashion_sample
    root = tmp_path / "photos"
    pixels: dict[str, np.ndarray] = {}
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(y == LABELS[name])[:8]):
            path = root / name / (f"{i:02d}.png" if i < 6 else f"{i:02d}.JPG")
            Image.fromarray(x[idx]).save(path, quality=95)  # quality: JPEG only
            pixels[str(path)] = x[idx]
    return root, pixels


def test_classes_labels_and_exact_png_pixels(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, pixels = folder
    ds = load_folder(root, mode="L")
    assert ds.class_names == CLASSES and len(ds) == 24
    assert ds.labels.tolist() == [c for c in range(3) for _ in range(8)]
    assert all(
        Path(p).parent.name == CLASSES[int(c)] for p, c in zip(ds.paths, ds.labels, strict=True)
    )
    for i, path in enumerate(ds.paths):
        image, label = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (1, 28, 28) and isinstance(label, int)
        if path.endswith(".png"):  # lossless: the very same pixels
            assert np.array_equal(image[0].numpy(), pixels[path])
        else:  # JPEG at quality 95: close
            assert np.abs(image[0].numpy().astype(int) - pixels[path]).mean() < 3


def test_rgb_mode_repeats_grey(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, pixels = folder
    ds = load_folder(root)  # RGB by default
    image, _ = ds[0]
    assert image.shape == (3, 28, 28)
    for c in range(3):
        assert np.array_equal(image[c].numpy(), pixels[ds.paths[0]])


def test_corrupt_file_is_named_lazily_by_validate_and_skipped(
    folder: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = folder
    garbage = root / "bag" / "zz_garbage.png"
    garbage.write_bytes(b"this is not a png at all")
    truncated = root / "sneaker" / "zz_truncated.png"
    truncated.write_bytes((root / "sneaker" / "00.png").read_bytes()[:60])

    ds = load_folder(root)  # lazy: indexing does not decode
    assert len(ds) == 26
    with pytest.raises(ValueError, match="zz_garbage.png"):
        ds[ds.paths.index(str(garbage))]
    with pytest.raises(ValueError, match="zz_garbage.png"):
        load_folder(root, validate=True, progress=False)

    with pytest.warns(UserWarning) as record:
        clean = load_folder(root, on_error="skip", progress=False)
    messages = " ".join(str(w.message) for w in record)
    assert "zz_garbage.png" in messages and "zz_truncated.png" in messages
    assert (
        len(clean) == 24 and str(garbage) not in clean.paths and str(truncated) not in clean.paths
    )
    assert clean.class_counts().tolist() == [8, 8, 8]
    for i in range(len(clean)):
        clean[i]  # every remaining file decodes


def test_skip_refuses_a_class_left_empty(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    for path in (root / "trouser").iterdir():
        path.write_bytes(b"broken")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="no readable images left .*trouser"),
    ):
        load_folder(root, on_error="skip", progress=False)


def test_non_image_and_hidden_files_are_ignored(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    (root / "bag" / "notes.txt").write_text("not an image")
    (root / "bag" / ".DS_Store").write_bytes(b"\0\0")
    (root / "README.md").write_text("a data set")
    (root / ".cache").mkdir()
    with pytest.warns(UserWarning, match=r"ignored 2 file\(s\).*bag/notes.txt"):
        ds = load_folder(root)
    assert ds.class_names == CLASSES and len(ds) == 24
    assert not any(p.endswith((".txt", ".DS_Store", ".md")) for p in ds.paths)


def test_nested_folders_belong_to_their_class(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    (root / "bag" / "more").mkdir()
    (root / "bag" / "00.png").rename(root / "bag" / "more" / "00.png")
    ds = load_folder(root)
    nested = ds.paths.index(str(root / "bag" / "more" / "00.png"))
    assert ds.class_names[int(ds.labels[nested])] == "bag"


def test_bad_layouts_are_refused(
    tmp_path: Path, folder: tuple[Path, dict[str, np.ndarray]]
) -> None:
    root, _ = folder
    (root / "empty_class").mkdir()
    with pytest.raises(ValueError, match="without images .*empty_class"):
        load_folder(root)

    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    Image.new("L", (5, 5)).save(single / "only" / "a.png")
    with pytest.raises(ValueError, match="only one class folder .'only'"):
        load_folder(single)

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (5, 5)).save(flat / "a.png")
    with pytest.raises(ValueError, match="no class subfolders"):
        load_folder(flat)

    with pytest.raises(FileNotFoundError, match="not found"):
        load_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a folder"):
        load_folder(flat / "a.png")
    with pytest.raises(ValueError, match="raise, skip"):
        load_folder(flat, on_error="ignore")
    with pytest.raises(ValueError, match="RGB, L"):
        load_folder(flat, mode="CMYK")


def test_image_size_resizes_on_load_and_read_keeps_the_original(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    for name, size in (("big", (40, 30)), ("small", (10, 12))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", size, (200, 100, 50)).save(root / name / f"{i}.png")
    ds = load_folder(root, image_size=(16, 20))
    assert ds.image_shape == (3, 16, 20)
    for i in range(len(ds)):
        image = ds[i][0]
        assert image.shape == (3, 16, 20)
        assert image[:, 0, 0].tolist() == [200, 100, 50]  # a flat colour stays that colour
    assert ds.read(0).shape == (3, 30, 40)
    assert load_folder(root).image_shape is None
    with pytest.raises(ValueError, match="image_size"):
        load_folder(root, image_size=0)


def test_decode_transparency_exif_and_16_bit(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (255, 0, 0, 255)  # opaque red on the left, fully transparent black on the right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    image = decode_image(tmp_path / "alpha.png")
    assert image[:, 0, 0].tolist() == [255, 0, 0] and image[:, 0, 5].tolist() == [255, 255, 255]

    # EXIF orientation 6: the camera was rotated, the stored 8x4 pixels show a 4x8 picture.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (8, 4), (0, 128, 0)).save(tmp_path / "rotated.jpg", exif=exif)
    assert decode_image(tmp_path / "rotated.jpg").shape == (3, 8, 4)

    grey16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    assert decode_image(tmp_path / "deep.png", mode="L")[0, 0].tolist() == [0, 100, 255]

    with pytest.raises(ValueError, match="missing.png"):
        decode_image(tmp_path / "missing.png")


def test_folder_feeds_a_dataloader_through_the_transform(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    for name, size in (("a", (30, 20)), ("b", (17, 25))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                root / name / f"{i}.png"
            )
    ds = load_folder(root)
    preprocessing = {"input_size": (3, 24, 24), "mean": [0.5] * 3, "std": [0.5] * 3}
    loader = DataLoader(
        TransformedDataset(ds, make_transform(preprocessing, train=False)), batch_size=6
    )
    images, labels = next(iter(loader))
    assert images.shape == (6, 3, 24, 24) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_subset_keeps_paths_and_settings(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    ds = load_folder(root, mode="L", image_size=14)
    part = ds.subset([3, 20])
    assert isinstance(part, ImageFolderDataset)
    assert part.paths == [ds.paths[3], ds.paths[20]] and part.labels.tolist() == [0, 2]
    assert part[1][0].shape == (1, 14, 14) and part.class_names == CLASSES


def test_validate_shows_no_warning_for_clean_folder(
    folder: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_folder(root, on_error="skip", progress=False)) == 24
