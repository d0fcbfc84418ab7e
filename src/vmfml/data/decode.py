"""Image files to pixels: the one decoder that training, `embed`, `search` and `serve` share.

Bytes from outside are checked before any pixel is decoded:

- the format is read from the file's first bytes (its magic number, never the file name) and must
  be one of `RASTER_FORMATS`; Pillow is then told to try that format only (`formats=`), so no
  other plugin (EPS, which runs Ghostscript, PDF, PSD, ICO, ...) ever sees the bytes;
- the pixel count is read from the header: a JPEG over the limit is decoded reduced (1/2, 1/4 or
  1/8 of each side, by the JPEG decoder itself: `Image.draft`), any other image over it is refused;
- what cannot be decoded is refused with the name of the file.

Each refusal is an `ImageRefused` (a `DataError`, so a `ValueError`) whose subclass says why:
the server answers 415, 413 or 400 from it, the command lines print one line or skip the file.

`to_mode` brings a decoded image to grey ("L") or "RGB" by the real range of its values:
16-bit grey is divided by 257; 32-bit integer ("I") and float ("F") images have no fixed range,
so a float image within [0, 1] is scaled by 255, values within [0, 255] are kept, within
[0, 65535] divided by 257, and anything else is stretched from its own minimum and maximum
(Pillow's own conversion saturates "I" at 255 and truncates "F" in [0, 1] to black).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

from vmfml.data.errors import DataError

# Pillow format names, by what the file's first bytes say; the names passed as `formats=`.
RASTER_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("JPEG", "MPO"),  # a phone photo with a second picture inside opens as MPO
    "PNG": ("PNG",),
    "WEBP": ("WEBP",),
    "GIF": ("GIF",),
    "BMP": ("BMP",),
    "TIFF": ("TIFF",),
    "PPM": ("PPM",),  # PBM, PGM and PPM, binary and ASCII
}
FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM"
# The default pixel limit of the command lines: Pillow's own decompression-bomb warning threshold.
# `vmfml serve` has its own, lower one (`ServeSettings.max_image_pixels`).
MAX_IMAGE_PIXELS = 89_478_485
HEADER_BYTES = 16
JPEG_REDUCTIONS = (1, 2, 4, 8)  # the scales libjpeg decodes to directly


class ImageRefused(DataError):
    """An image that is not decoded; `status` is the HTTP status the server answers with."""

    status = 400


class UnsupportedFormat(ImageRefused):
    """Not one of the raster formats read (or not an image at all)."""

    status = 415


class TooManyPixels(ImageRefused):
    """More pixels than the limit (a decompression bomb, or just too large)."""

    status = 413


class DamagedImage(ImageRefused):
    """A supported format whose data cannot be decoded (truncated, corrupt, NaN pixels)."""

    status = 400


def sniff_format(head: bytes) -> str | None:
    """The key of `RASTER_FORMATS` that the first bytes of a file announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF, BigTIFF
        return "TIFF"
    if len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456":
        return "PPM"
    return None


def open_image(
    source: str | Path | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS, what: str | None = None
) -> Image.Image:
    """Decode an image file (a path or a binary file object) with its checks; EXIF rotation applied.

    `what` names the image in messages (default: "image PATH"). The image is fully loaded and
    independent of the file when returned.

    Raises:
        FileNotFoundError: a path that does not exist.
        UnsupportedFormat, TooManyPixels, DamagedImage: see the module docstring.
    """
    if isinstance(source, (str, Path)):
        what = what or f"image {source}"
        with open(source, "rb") as file:
            return open_image(file, max_pixels, what)
    what = what or "the image"
    start = source.tell()
    head = source.read(HEADER_BYTES)
    source.seek(start)
    kind = sniff_format(head)
    if kind is None:
        raise UnsupportedFormat(
            f"cannot read {what}: it is not an image in a supported format ({FORMAT_NAMES})"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own threshold; the limit here is checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source, formats=RASTER_FORMATS[kind])
    except Image.DecompressionBombError as err:
        raise TooManyPixels(f"cannot read {what}: it has too many pixels ({err})") from err
    except Exception as err:  # Pillow's plugins raise OSError, SyntaxError, struct.error...
        raise DamagedImage(
            f"cannot read {what}: a damaged {kind} file ({type(err).__name__}: {err})"
        ) from err
    try:
        _fit_pixels(image, max_pixels, what)
        image.load()
        # Phone photos are stored sideways with an EXIF rotation; in place: no copy when none.
        ImageOps.exif_transpose(image, in_place=True)
    except ImageRefused:
        image.close()
        raise
    except Exception as err:
        image.close()
        raise DamagedImage(
            f"cannot read {what}: a damaged or truncated {kind} file ({type(err).__name__}: {err})"
        ) from err
    if image.width == 0 or image.height == 0:
        raise DamagedImage(f"cannot read {what}: it is empty ({image.width}x{image.height} pixels)")
    return image


def _fit_pixels(image: Image.Image, max_pixels: int, what: str) -> None:
    """Refuse an image over `max_pixels` from its header, or have a JPEG decoded reduced to fit."""
    width, height = image.size
    if width * height <= max_pixels:
        return
    if image.format in ("JPEG", "MPO"):
        for scale in JPEG_REDUCTIONS[1:]:
            w, h = math.ceil(width / scale), math.ceil(height / scale)
            if w * h <= max_pixels:
                image.draft(None, (w, h))  # libjpeg decodes straight to the reduced size
                if image.width * image.height <= max_pixels:
                    return
    raise TooManyPixels(
        f"cannot read {what}: it is {width}x{height} = {width * height} pixels, more than the "
        f"limit of {max_pixels} pixels"
    )


def to_mode(image: Image.Image, mode: str, what: str = "the image") -> Image.Image:
    """`image` as grey ("L") or "RGB": transparency composited onto white, wide values by range.

    Raises:
        DamagedImage: a float image holding NaN or infinite values.
        ValueError: a mode Pillow cannot convert (the message names both).
    """
    if image.mode.startswith("I;16"):
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.rint(grey).astype(np.uint8), "L")
    elif image.mode in ("I", "F"):
        image = Image.fromarray(_wide_to_uint8(np.asarray(image), image.mode, what), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot convert {what} (mode {image.mode}) to {mode}: {err}") from err


def _wide_to_uint8(values: np.ndarray, mode: str, what: str) -> np.ndarray:
    """32-bit integer or float pixels as uint8, by the range the values actually take."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DamagedImage(f"cannot read {what}: it holds NaN or infinite pixel values")
    lo, hi = float(values.min()), float(values.max())
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        values = values * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        values = values / 257.0
    else:
        values = (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
