"""Reading the benchmarks' official folder layouts and annotation files, with errors that say what
is missing and what was expected instead of a traceback from deep inside a parser."""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from vmfml.data.image_folder import ON_ERROR, ImageFolderDataset

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
    base: Path,
    paths: Sequence[Path],
    class_ids: Sequence[K],
    index: dict[K, int],
    layout: str,
    *,
    listed_in: Path | str,
    on_error: str = "raise",
    progress: bool = True,
) -> ImageFolderDataset:
    """An `ImageFolderDataset` (the project's file-backed `ImageDataset`, decoding lazily to
    uint8 RGB) whose labels are `index[class_id]` and class names the original ids as strings.

    Every listed image must exist (one stat each, no decoding): a missing one is found here,
    before training, not when an epoch reaches it. With `on_error="raise"` the missing images are
    refused (their count and the first names); with "skip" they are dropped with one warning, and
    then every image is decoded once and unreadable ones dropped too (`validate`). A root holding
    the annotation files but none of the images (a half-extracted download) is refused either
    way, with the layout.

    Args:
        listed_in: the annotation file(s) listing the images, named in messages.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    if not paths:
        raise ValueError(f"no images in this split; expected layout:\n{layout}")
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        names = ", ".join(_shown(base, paths[i]) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        what = f"{len(missing)} of the {len(paths)} images listed in {listed_in} are missing"
        if len(missing) == len(paths):
            raise FileNotFoundError(
                f"none of the {len(paths)} images listed in {listed_in} was found (e.g. "
                f"{paths[0]}); expected layout:\n{layout}"
            )
        if on_error == "raise":
            raise FileNotFoundError(
                f"{what} (under {base}): {names}{more}; restore them, or skip them with "
                "on_error='skip' (--on-bad-image skip)"
            )
        warnings.warn(f"skipping {what} (under {base}): {names}{more}", stacklevel=3)
    dataset = ImageFolderDataset(
        [str(p) for p in paths],
        [index[c] for c in class_ids],
        [str(c) for c in index],
        mode="RGB",
        root=base,
    )
    if missing:
        gone = set(missing)
        dataset = dataset.keep_only([i for i in range(len(paths)) if i not in gone], "existing")
    if on_error == "skip":
        dataset = dataset.validate(on_error="skip", progress=progress)
    return dataset


def _shown(base: Path, path: Path) -> str:
    """`path` relative to `base` where it lies below it (as the lists write it)."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def check_class_range(
    class_id: int, first: int, last: int, path: Path, line_no: int, benchmark: str
) -> None:
    """Refuse a class id outside the benchmark's official range, naming file and line."""
    if not first <= class_id <= last:
        raise ValueError(
            f"{path}, line {line_no}: class_id {class_id} is outside {first}..{last} "
            f"({benchmark} has {last - first + 1} classes)"
        )
