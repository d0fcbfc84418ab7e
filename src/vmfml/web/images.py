"""Images in and out of the app: decoding uploads and gallery files with their pixel count checked
before any pixel is decoded, and the thumbnails (encoding and a byte-bounded LRU of them)."""

import io
import threading
from collections import OrderedDict
from typing import Any

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError


def open_image(source: Any, max_pixels: int, what: str) -> Image.Image:
    """Open and decode an image from a path or binary file, refusing bombs before decoding.

    `Image.open` reads only the header, so the pixel count is known before any pixel is
    decoded: an image over `max_pixels` is refused with 413 at that point. PIL's own
    `DecompressionBombError` (past 2 * `Image.MAX_IMAGE_PIXELS`) is mapped to the same answer.
    Raises HTTPException 415 when the bytes are not an image PIL reads, 400 when it is damaged.
    """
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as err:
        raise HTTPException(413, f"{what} has too many pixels: {err}") from err
    except UnidentifiedImageError as err:
        raise HTTPException(
            415, f"{what} is not an image that can be read (PNG, JPEG, GIF, BMP, TIFF, WebP...)"
        ) from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise HTTPException(
            413,
            f"{what} is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} pixels",
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
        image.close()
        raise HTTPException(400, f"{what} is a damaged or truncated image: {err}") from err
    return image


def encode_thumbnail(image: Image.Image, size: int) -> tuple[bytes, str]:
    """Shrink `image` so its longest side is at most `size` (never enlarge) and encode it.

    PNG for small images, greyscale line art and images with transparency (lossless, and small
    anyway); JPEG for larger photos. Returns (bytes, media type).
    """
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    buffer = io.BytesIO()
    if has_alpha or image.mode in ("1", "L", "P") or max(image.size) <= 64:
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            image = image.convert("RGBA" if has_alpha else "RGB")
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue(), "image/png"
    image.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue(), "image/jpeg"


class ThumbnailCache:
    """A thread-safe LRU of encoded thumbnails, bounded by total bytes.

    Keys are (item id, size); entries (bytes, media type, ETag).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], tuple[bytes, str, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[bytes, str, str] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[int, int], entry: tuple[bytes, str, str]) -> None:
        size = len(entry[0])
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted[0])

    def __len__(self) -> int:
        return len(self._entries)
