"""Query images: find them in a folder, open them, and bring them to the model's channel count.

A query may come from anywhere (a phone photo, a grey scan, a PNG with transparency), so it is
converted rather than refused: to grey ("L") or RGB to match the model's input channels; the size
is then fixed by the model's evaluation transform. Only a file that cannot be decoded at all is
refused, by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vmfml.data import decode

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)  # the formats `vmfml.data.decode` reads


def open_image(source: Image.Image | str | Path, channels: int) -> Image.Image:
    """Open (if a path) and convert an image to `channels` channels (1: grey, 3: RGB).

    A path is decoded by `vmfml.data.decode`, the decoder training and the server use too: the
    format is checked from the file's first bytes, the pixel count before decoding (a larger
    JPEG is decoded reduced), EXIF rotation is applied. Transparency is composited onto white
    (a transparent background does not turn black), 16-bit, 32-bit and float pixels are scaled
    by their range (`decode.to_mode`).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a decodable image (a `decode.ImageRefused`: unsupported
            format, too many pixels, damaged), or `channels` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"models take 1 (grey) or 3 (RGB) channels, this one {channels}")
    if isinstance(source, Image.Image):
        image = source
        name = "the given image"
    else:
        path = Path(source)
        name = f"image {path}"
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        image = decode.open_image(path)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} is empty ({image.width}x{image.height} pixels)")
    return decode.to_mode(image, "L" if channels == 1 else "RGB", name)


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """A grey or RGB PIL image as a uint8 tensor `[C, H, W]`."""
    array = np.array(image, dtype=np.uint8)  # [H, W] or [H, W, C], a writable copy
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def list_query_images(source: str | Path) -> list[tuple[Path, str | None]]:
    """The image files of a query: one file, or a folder searched recursively (sorted).

    A file inside a subfolder of the query folder gets that subfolder's name as its label
    (the class-subfolder layout), so results can be marked right or wrong; others get None.

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: a folder with no image files (the valid extensions are listed).
    """
    source = Path(source)
    if source.is_file():
        return [(source, None)]
    if not source.is_dir():
        raise FileNotFoundError(f"query not found: {source} (give an image file or a folder)")
    found: list[tuple[Path, str | None]] = []
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            relative = path.relative_to(source)
            found.append((path, relative.parts[0] if len(relative.parts) > 1 else None))
    if not found:
        raise ValueError(f"no image files in {source} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return found


def prepare(
    source: Image.Image | str | Path, preprocessing: dict[str, Any], transform: Any
) -> torch.Tensor:
    """One query image as the float tensor `[C, H, W]` the model expects.

    Args:
        source: a PIL image or a path.
        preprocessing: the model's preprocessing (`input_size` is `(C, H, W)`).
        transform: the model's evaluation transform (uint8 `[C, h, w]` -> float `[C, H, W]`).
    """
    channels, height, width = (int(v) for v in preprocessing["input_size"])
    image = open_image(source, channels)
    x = transform(to_uint8_tensor(image))
    if tuple(x.shape) != (channels, height, width):
        name = source if not isinstance(source, Image.Image) else "the given image"
        raise ValueError(
            f"{name}: the model's transform produced shape {tuple(x.shape)}, "
            f"expected {(channels, height, width)}"
        )
    return x


def readable_images(
    images: list[tuple[Path, str | None]],
    channels: int,
    kind: str = "image",
    plural: str = "images",
) -> list[tuple[Path, str | None]]:
    """The (path, label) pairs whose file decodes, each other one left out with a
    `skipping KIND: ...` warning (--on-error skip); refuses a list where none decodes."""
    import warnings

    readable = []
    for path, label in images:
        try:
            open_image(path, channels)
        except ValueError as err:
            warnings.warn(f"skipping {kind}: {err}", stacklevel=2)
            continue
        readable.append((path, label))
    if not readable:
        raise ValueError(f"none of the {plural} could be read")
    return readable
