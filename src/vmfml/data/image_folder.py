"""A folder of images with one subfolder per class: `root/<class name>/<image>` (any depth below).

Images are decoded lazily with PIL in `__getitem__`. A corrupt file fails there with its path in
the message; `validate()` (or `image_folder(..., validate=True)`) decodes every file once, up
front, so that a bad file is named before training starts instead of an hour into it. With
`on_error="skip"` the scan always runs and bad files are dropped with a warning naming each one.

Images keep their own size unless `image_size` is given; resizing to the model's input size
is otherwise the transform's job (`vmfml.data.transforms`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from vmfml.data import decode
from vmfml.data.dataset import ImageDataset
from vmfml.data.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
)
MODES = ("RGB", "L")
ON_ERROR = ("raise", "skip")


def decode_image(
    path: str | Path, mode: str = "RGB", size: tuple[int, int] | None = None
) -> Tensor:
    """Decode one image file to uint8 [C, H, W] (C = 3 for "RGB", 1 for "L").

    The file goes through `vmfml.data.decode`, the decoder every command shares: its format is
    checked from its first bytes (JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM), its pixel count
    before decoding (`decode.MAX_IMAGE_PIXELS`; a larger JPEG is decoded reduced), EXIF
    orientation is applied (phone photos are stored sideways), transparent pixels are composited
    onto white (dropping alpha would expose arbitrary colours), and 16-bit, 32-bit integer and
    float images are brought to 8 bits by the range of their values (`decode.to_mode`).
    `size` = (H, W) resizes with PIL's bilinear filter, which widens when shrinking, i.e.
    antialiases.

    Raises:
        DataError (a ValueError): the file cannot be read or decoded; the message names it.
    """
    if mode not in MODES:
        raise ValueError(f"image mode must be one of {', '.join(MODES)}; got {mode!r}")
    try:
        im = decode.to_mode(decode.open_image(path), mode, f"image {path}")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    # Opening the file or converting its mode may fail with OSError or ValueError; whichever it
    # is, the user needs the path.
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


class ImageFolderDataset(ImageDataset):
    """Images on disk, one file per item; see `image_folder` to build one from a folder tree."""

    paths: list[str]

    def __init__(
        self,
        paths: Sequence[str],
        labels: Tensor | Sequence[int],
        class_names: Sequence[str],
        mode: str = "RGB",
        image_size: int | tuple[int, int] | None = None,
        root: str | Path | None = None,
        class_sources: Sequence[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"image mode must be one of {', '.join(MODES)}; got {mode!r}")
        super().__init__(labels, class_names, list(paths), class_sources)
        self.mode = mode
        self.image_size = _check_size(image_size)
        self.root = None if root is None else str(root)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) when `image_size` fixes it, else None (each image keeps its own size)."""
        if self.image_size is None:
            return None
        return (3 if self.mode == "RGB" else 1, *self.image_size)

    def read(self, index: int) -> Tensor:
        """The image at `index` exactly as decoded (its own size), uint8 [C, H, W]."""
        return decode_image(self.paths[index], self.mode)

    def image(self, index: int) -> Tensor:
        return decode_image(self.paths[index], self.mode, self.image_size)

    def validate(self, on_error: str = "raise", progress: bool = True) -> ImageFolderDataset:
        """Decode every image once; returns the dataset without bad files.

        Args:
            on_error: "raise" stops at the first unreadable file (ValueError naming it);
                "skip" drops each one with a warning naming it.
            progress: show a tqdm bar.

        Raises:
            ValueError: a bad file with on_error="raise", or a class left without images.
        """
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
        keep: list[int] = []
        bad: list[str] = []
        desc = f"checking images in {self.root}" if self.root else "checking images"
        for i in tqdm(range(len(self)), desc=desc, unit="img", disable=not progress, leave=False):
            try:
                self.read(i)
            except ValueError as err:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipping unreadable image: {err}", stacklevel=2)
                bad.append(self.paths[i])
                continue
            keep.append(i)
        if not bad:
            return self
        return self.keep_only(keep)

    def keep_only(self, keep: Sequence[int], what: str = "readable") -> ImageFolderDataset:
        """The images at `keep` (dropping bad ones), refusing to leave a class without images.

        A class that had no images to begin with is not counted (a benchmark split may list
        classes it has no images of, such as In-Shop's gallery-only items among the queries).

        Raises:
            DataError: a class that had images lost them all (the first ten are named).
        """
        out = self.subset(list(keep))
        empty = [
            name
            for name, before, after in zip(
                self.class_names,
                self.class_counts().tolist(),
                out.class_counts().tolist(),
                strict=True,
            )
            if before > 0 and after == 0
        ]
        if empty:
            more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
            raise DataError(f"no {what} images left in class(es): {', '.join(empty[:10])}{more}")
        return out

    def _take(self, indices: Tensor) -> ImageFolderDataset:
        idx = indices.tolist()
        return ImageFolderDataset(
            [self.paths[i] for i in idx],
            self.labels[indices],
            self.class_names,
            self.mode,
            self.image_size,
            self.root,
            self.class_sources,
        )

    def __repr__(self) -> str:
        size = (
            "native size"
            if self.image_size is None
            else f"{self.image_size[0]}x{self.image_size[1]}"
        )
        return f"ImageFolderDataset({len(self)} images, {self.num_classes} classes, {self.mode}, {size}, root={self.root})"


def image_folder(
    root: str | Path,
    on_error: str = "raise",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    image_size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    validate: bool = False,
    progress: bool = True,
) -> ImageFolderDataset:
    """Index `root/<class>/**/<image>`: classes are the sorted names of the subfolders of `root`.

    Hidden files and folders (".name") are ignored; other files whose extension is not in
    `extensions` are ignored with one warning. An empty class folder, a folder without class
    subfolders, or a single class is refused: none of them can train a classifier.

    Args:
        root: the folder of class subfolders.
        on_error: "raise" (a corrupt image fails, naming the file) or "skip" (corrupt images
            are dropped with a warning; implies `validate`).
        extensions: file name endings counted as images (case-insensitive).
        image_size: resize every image to this (int: square, or (H, W)) on load; None keeps
            each image's size (the transform then resizes).
        mode: "RGB" (3 channels) or "L" (grey, 1 channel).
        validate: decode every image now (with a progress bar) so that a bad file is found
            before training.
        progress: show the progress bar of the scan.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    if mode not in MODES:
        raise ValueError(f"image mode must be one of {', '.join(MODES)}; got {mode!r}")
    if isinstance(extensions, str):
        extensions = [extensions]
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if not exts:
        raise ValueError("extensions must name at least one file ending, e.g. ('.jpg', '.png')")
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder; expected a folder with one subfolder per class")

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    ignored = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not class_dirs:
        raise ValueError(
            f"no class subfolders in {root}; expected {root}/<class name>/<image files>"
        )
    if len(class_dirs) == 1:
        raise ValueError(
            f"only one class folder ({class_dirs[0].name!r}) in {root}; at least 2 classes are needed "
            f"({root}/<class name>/<image files>)"
        )

    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, folder in enumerate(class_dirs):
        found, skipped = _list_images(folder, exts)
        ignored.extend(skipped)
        if not found:
            empty.append(folder.name)
        paths.extend(str(p) for p in found)
        labels.extend([label] * len(found))
    if empty:
        raise ValueError(
            f"class folder(s) without images in {root}: {', '.join(empty)} "
            f"(image extensions: {' '.join(exts)}); remove them or add images"
        )
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        warnings.warn(
            f"ignored {len(ignored)} file(s) in {root} that are not images in a class folder "
            f"(extensions {' '.join(exts)}): {shown}{more}",
            stacklevel=2,
        )

    dataset = ImageFolderDataset(
        paths, labels, [d.name for d in class_dirs], mode, image_size, root
    )
    if validate or on_error == "skip":
        dataset = dataset.validate(on_error=on_error, progress=progress)
    return dataset


def _list_images(folder: Path, exts: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """(image files, other files) below `folder`, sorted, hidden entries left out."""
    images: list[Path] = []
    others: list[Path] = []
    # Nested links are not followed: a link cycle would make the walk endless.
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (images if name.lower().endswith(exts) else others).append(path)
    return images, others


def _check_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise ValueError(f"image_size must be a positive int or (height, width); got {size!r}")
    return int(hw[0]), int(hw[1])
