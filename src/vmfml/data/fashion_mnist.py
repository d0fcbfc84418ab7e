"""Fashion-MNIST (Xiao et al., 2017): 70,000 28x28 grey product images, 10 classes.

Looked for, in order, in `root` (or `root/fashion-mnist`), `$VMFML_DATA/fashion-mnist` and
`/usr/share/datasets/fashion-mnist` (the Debian package `dataset-fashion-mnist`). With
`download=True` (`--download` on the command line) the official files are fetched into the first
of those folders when none holds them; nothing is ever downloaded otherwise. The files come from
`URL`, or from `$VMFML_FASHION_MNIST_URL` when set (a mirror), and are checked against `MD5`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vmfml.data.dataset import TensorImageDataset
from vmfml.data.idx import read_idx
from vmfml.data.locations import data_home

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

SPLITS = ("train", "test")
# split -> (images file, labels file), as named by the authors and by Debian.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
URL_ENV = "VMFML_FASHION_MNIST_URL"  # names a mirror of the files at URL
# MD5 of the official .gz files (Debian recompressed them, so its .gz files hash differently).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist(
    split: str = "train", root: str | Path | None = None, download: bool = False
) -> TensorImageDataset:
    """Fashion-MNIST as a `TensorImageDataset` of uint8 [N, 1, 28, 28] images.

    Args:
        split: "train" (60,000 images) or "test" (10,000 images).
        root: a folder holding the four IDX files (.gz or not), or a data folder with a
            `fashion-mnist/` subfolder. None searches $VMFML_DATA and the Debian location.
        download: fetch the official files into `root` (or $VMFML_DATA/fashion-mnist) when
            they are not found. Needs internet access.
    """
    if split not in SPLITS:
        raise ValueError(f"Fashion-MNIST split must be one of {', '.join(SPLITS)}; got {split!r}")
    candidates = search_dirs(root)
    folder = find_fashion_mnist(root, split)
    if folder is None:
        if not download:
            searched = ", ".join(str(c) for c in candidates)
            raise FileNotFoundError(
                f"Fashion-MNIST files ({', '.join(FILES[split])}) not found in: {searched}. "
                "Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                "point --data-root (root=) at a folder holding them, or download them "
                f"(from {download_url()}): pass --download to vmfml train or vmfml evaluate, "
                "download=True in Python."
            )
        folder = download_fashion_mnist(candidates[0])
    images_file, labels_file = (_existing(folder / name) for name in FILES[split])
    images, labels = read_image_label_pair(images_file, labels_file, num_classes=len(CLASS_NAMES))
    return TensorImageDataset(images, labels, CLASS_NAMES)


def search_dirs(root: str | Path | None = None) -> list[Path]:
    """The folders `fashion_mnist` looks in, in order (an explicit root replaces the defaults)."""
    if root is not None:
        root = Path(root).expanduser()
        return [root, root / "fashion-mnist"]
    return [data_home() / "fashion-mnist", DEBIAN_DIR]


def find_fashion_mnist(root: str | Path | None = None, split: str | None = None) -> Path | None:
    """The first folder of `search_dirs(root)` holding the files of `split` (None: both splits)."""
    names = [name for s in (SPLITS if split is None else (split,)) for name in FILES[s]]
    for folder in search_dirs(root):
        if all(_existing(folder / name).is_file() for name in names):
            return folder
    return None


def read_image_label_pair(
    images_path: str | Path, labels_path: str | Path, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """An MNIST-style pair of IDX files as (uint8 [N, 1, H, W], int64 [N]), checked for consistency."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_path}: expected uint8 images [N, H, W]; got {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels [N]; got {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(
            f"{labels_path}: label {int(labels.max())} out of range for {num_classes} classes"
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def download_url() -> str:
    """Where the files are downloaded from: `$VMFML_FASHION_MNIST_URL`, else `URL`."""
    base = os.environ.get(URL_ENV) or URL
    return base if base.endswith("/") else base + "/"


def download_fashion_mnist(folder: str | Path, timeout: float = 60.0) -> Path:
    """Download the four official files into `folder`, checking their MD5; returns `folder`.

    Each file is written to a temporary name and renamed only once its checksum matches, so an
    interrupted download never leaves a truncated file behind under the real name.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    base = download_url()
    for split in SPLITS:
        for name in FILES[split]:
            target = folder / name
            if target.is_file() and _md5(target) == MD5[name]:
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            try:
                digest = hashlib.md5()
                with (
                    os.fdopen(fd, "wb") as out,
                    urllib.request.urlopen(base + name, timeout=timeout) as response,
                ):
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != MD5[name]:
                    raise ValueError(
                        f"downloaded {base + name} has MD5 {digest.hexdigest()}, expected {MD5[name]}"
                    )
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return folder


def _existing(path: Path) -> Path:
    """`path`, or its uncompressed twin (without .gz) when only that one exists."""
    if not path.is_file() and path.suffix == ".gz" and path.with_suffix("").is_file():
        return path.with_suffix("")
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
