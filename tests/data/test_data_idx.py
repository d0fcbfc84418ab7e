"""The IDX reader against hand-written files, and Fashion-MNIST loading from a tiny fake root."""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest

from vmfml.data import fashion_mnist, read_idx
from vmfml.data.fashion_mnist import FILES, download_fashion_mnist

# The module itself: `vmfml.data.fashion_mnist` is the re-exported function of the same name.
fm = importlib.import_module("vmfml.data.fashion_mnist")


def idx_bytes(type_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file written by hand: 0x00 0x00 type ndim, big-endian uint32 dims, payload."""
    return (
        bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
    )


def write_fake_fashion(
    folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True
) -> dict[str, np.ndarray]:
    """Four tiny IDX files of 3x2 images with known pixels; returns what they hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 3, 2), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        out[split + "_images"], out[split + "_labels"] = images, labels
        for name, data in zip(FILES[split], (images, labels), strict=True):
            raw = idx_bytes(0x08, data.shape, data.tobytes())
            if gz:
                (folder / name).write_bytes(gzip.compress(raw))
            else:
                (folder / name.removesuffix(".gz")).write_bytes(raw)
    return out


def test_read_idx_uint8_images_and_labels(tmp_path: Path) -> None:
    images = tmp_path / "img-idx3-ubyte"
    images.write_bytes(idx_bytes(0x08, (2, 2, 3), bytes(range(12))))
    labels = tmp_path / "lab-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(0x08, (3,), bytes([7, 0, 255]))))

    x = read_idx(images)
    assert x.dtype == np.uint8 and x.shape == (2, 2, 3)
    assert x.tolist() == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    assert read_idx(labels).tolist() == [7, 0, 255]
    assert len(images.read_bytes()) == 16 + 12  # the 16-byte image header
    assert len(gzip.decompress(labels.read_bytes())) == 8 + 3  # the 8-byte label header


def test_read_idx_big_endian_wider_types(tmp_path: Path) -> None:
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(0x0C, (3,), struct.pack(">iii", -1, 256, 2**31 - 1)))
    assert read_idx(path).tolist() == [-1, 256, 2**31 - 1]
    floats = tmp_path / "floats"
    floats.write_bytes(idx_bytes(0x0D, (2,), struct.pack(">ff", 0.5, -2.25)))
    x = read_idx(floats)
    assert x.dtype == np.float32 and x.tolist() == [0.5, -2.25]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 1), "truncated IDX header"),
        (idx_bytes(0x08, (2, 2), bytes(3)), "truncated or corrupt"),
        (idx_bytes(0x08, (2, 2), bytes(5)), "holds 5 data bytes"),
        (b"\x00\x00", "too short"),
    ],
)
def test_read_idx_rejects_bad_files_naming_them(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_corrupt_gzip_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (100,), bytes(100)))[:-12])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path: Path, gz: bool) -> None:
    expected = write_fake_fashion(tmp_path / "fashion-mnist", gz=gz)
    for split in ("train", "test"):
        ds = fashion_mnist(split, root=tmp_path / "fashion-mnist")
        assert ds.images.shape == (len(expected[f"{split}_labels"]), 1, 3, 2)
        assert np.array_equal(ds.images[:, 0].numpy(), expected[f"{split}_images"])
        assert ds.labels.tolist() == expected[f"{split}_labels"].tolist()
        assert ds.class_names[9] == "Ankle boot" and ds.paths is None
    # A data folder holding fashion-mnist/ works too.
    assert len(fashion_mnist("test", root=tmp_path)) == 4


def test_fashion_mnist_needs_only_the_split_asked_for(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    for name in FILES["train"]:
        (tmp_path / name).unlink()
    assert len(fashion_mnist("test", root=tmp_path)) == 4
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_uses_vmfml_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fashion(tmp_path / "fashion-mnist", n_train=5)
    monkeypatch.setenv("VMFML_DATA", str(tmp_path))
    assert len(fashion_mnist("train")) == 5


def test_fashion_mnist_inconsistent_files(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    (tmp_path / FILES["test"][1]).write_bytes(gzip.compress(idx_bytes(0x08, (3,), bytes(3))))
    with pytest.raises(ValueError, match="holds 4 images but .* holds 3 labels"):
        fashion_mnist("test", root=tmp_path)
    (tmp_path / FILES["test"][1]).write_bytes(
        gzip.compress(idx_bytes(0x08, (4,), bytes([0, 1, 2, 10])))
    )
    with pytest.raises(ValueError, match="label 10 out of range"):
        fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        fashion_mnist("train", root=tmp_path / "empty")
    assert "--data-root" in str(err.value) and str(tmp_path / "empty") in str(err.value)
    with pytest.raises(ValueError, match="train, test"):
        fashion_mnist("validation", root=tmp_path)


def test_download_checks_md5_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real download code, with urlopen answering from memory (no internet here)."""
    write_fake_fashion(tmp_path / "server")
    files = {
        name: (tmp_path / "server" / name).read_bytes()
        for split in FILES.values()
        for name in split
    }
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fm.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(
        fm, "MD5", {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    )
    ds = fashion_mnist("train", root=tmp_path / "dl", download=True)
    assert len(ds) == 6 and len(requested) == 4 and requested[0].startswith(fm.URL)
    # Files already present with the right checksum are not fetched again.
    download_fashion_mnist(tmp_path / "dl")
    assert len(requested) == 4

    monkeypatch.setattr(fm, "MD5", {name: "0" * 32 for name in files})
    with pytest.raises(ValueError, match="MD5"):
        download_fashion_mnist(tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []  # no partial file left behind
