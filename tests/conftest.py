"""Shared fixtures: small real images from the Debian Fashion-MNIST package."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="session")
def fashion_sample() -> tuple[np.ndarray, np.ndarray]:
    """The first 2,000 Fashion-MNIST test images `[N, 28, 28]` uint8 and their labels."""
    images = FASHION / "t10k-images-idx3-ubyte.gz"
    if not images.exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    x = _read_idx(images, 16).reshape(-1, 28, 28)[:2000]
    y = _read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)[:2000]
    return x, y


@pytest.fixture()
def fashion_folder(
    tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]
) -> Callable[..., Path]:
    """Writes a folder of real Fashion-MNIST PNGs, one subfolder per class:
    `fashion_folder(names, per_class, name="images")` takes the first `per_class` images of each
    of the first len(names) classes."""
    from PIL import Image

    x, y = fashion_sample

    def write(names: Sequence[str], per_class: int, name: str = "images") -> Path:
        root = tmp_path / name
        for c, class_name in enumerate(names):
            (root / class_name).mkdir(parents=True)
            for i, idx in enumerate(np.flatnonzero(y == c)[:per_class]):
                Image.fromarray(x[idx]).save(root / class_name / f"{i:03d}.png")
        return root

    return write


@pytest.fixture()
def image_folder(fashion_folder: Callable[..., Path]) -> Path:
    """A folder of real PNGs, one subfolder per class (4 classes x 30 images)."""
    return fashion_folder(["tshirt", "trouser", "pullover", "dress"], 30)


# --- running the `vmfml` command in-process ----------------------------------------------------


class CliRun(NamedTuple):
    """What one `vmfml` command gave: its exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture()
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliRun]:
    """`run_cli("search", "--index", path, ...)` runs `vmfml search --index PATH ...` through
    `vmfml.cli.main` (arguments may be paths or numbers) and returns its exit code, stdout and
    stderr, holding only what that one command printed."""
    from vmfml.cli import main

    def run(*args: str | Path | int | float) -> CliRun:
        capsys.readouterr()  # drop what was printed before
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run


# --- a folder the user cannot write in -------------------------------------------------------


@pytest.fixture()
def unwritable(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Path]]:
    """`unwritable(folder)` makes a folder (made if missing) refuse new files: mode 0o555, and, since
    root ignores modes (as these tests may run), a refused `os.open(..., O_CREAT)` in it, the way
    a read-only mount refuses root."""
    import errno
    import os

    locked: list[Path] = []
    real_open = os.open

    def guarded_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and Path(path).absolute().parent in locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    def lock(folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        locked.append(folder.absolute())
        monkeypatch.setattr(os, "open", guarded_open)
        return folder

    yield lock
    for folder in locked:
        folder.chmod(0o755)  # so that pytest can remove tmp_path


@pytest.fixture()
def model_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads its checkpoint: what it refuses must be refused first."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was loaded before the output was checked")

    monkeypatch.setattr("vmfml.train.checkpoint.load_embedding_model", refuse)
