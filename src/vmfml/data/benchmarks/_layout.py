"""Reading the benchmarks' official folder layouts and annotation files, with errors that say what
is missing and what was expected instead of a traceback from deep inside a parser."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from vmfml.data.image_folder import ImageFolderDataset

PathLike = str | os.PathLike[str]
K = TypeVar("K", bound=Hashable)


def check_split(benchmark: str, split: str, valid: Sequence[str]) -> None:
    if split not in valid:
        raise ValueError(f"{benchmark} split must be one of {', '.join(valid)}; got {split!r}")


def find_root(root: PathLike, marker: str, layout: str, subfolders: Sequence[str] = ()) -> Path:
    """The first of `root/<subfolder>` (in order) and `root` itself that holds the file `marker`.

    Accepting both lets a user point at the folder the archive was extracted into or at the
    extracted folder itself.
    """
    base = Path(root).expanduser()
    candidates = [base / sub for sub in subfolders] + [base]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    tried = ", ".join(str(c / marker) for c in candidates)
    raise FileNotFoundError(f"{marker} not found (looked for {tried}); expected layout:\n{layout}")


def require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected layout:\n{layout}")
    return path


def read_rows(path: Path, num_fields: int, skip_lines: int = 0) -> list[tuple[int, list[str]]]:
    """Whitespace-separated rows of a text annotation file as `(line number, fields)`.

    The last field takes the rest of the line, so an image path with a space survives. Blank
    lines are ignored; a row with fewer fields raises a ValueError naming file and line.
    """
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line_no <= skip_lines or not line.strip():
                continue
            fields = line.strip().split(None, num_fields - 1)
            if len(fields) != num_fields:
                raise ValueError(
                    f"{path}, line {line_no}: expected {num_fields} whitespace-separated fields, "
                    f"got {len(fields)}: {line.rstrip()!r}"
                )
            rows.append((line_no, fields))
    return rows


def parse_int(value: str, path: Path, line_no: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{path}, line {line_no}: {what} must be an integer; got {value!r}"
        ) from None


def class_index(class_ids: Iterable[K]) -> dict[K, int]:
    """Sorted distinct class ids -> labels `0..C-1` (sorted, so labels follow the official ids)."""
    return {cid: label for label, cid in enumerate(sorted(set(class_ids)))}  # type: ignore[type-var]


def build_dataset(
    base: Path, paths: Sequence[Path], class_ids: Sequence[K], index: dict[K, int], layout: str
) -> ImageFolderDataset:
    """An `ImageFolderDataset` (the project's file-backed `ImageDataset`, decoding lazily to
    uint8 RGB) whose labels are `index[class_id]` and class names the original ids as strings.

    Checks that the first image exists: a root that holds the annotation files but not the
    images (a half-extracted download) fails here with the layout, not mid-epoch.
    """
    if not paths:
        raise ValueError(f"no images in this split; expected layout:\n{layout}")
    if not paths[0].is_file():
        raise FileNotFoundError(
            f"image {paths[0]} listed in the annotations was not found; expected layout:\n{layout}"
        )
    return ImageFolderDataset(
        [str(p) for p in paths],
        [index[c] for c in class_ids],
        [str(c) for c in index],
        mode="RGB",
        root=base,
    )
