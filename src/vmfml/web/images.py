"""Images in and out of the app: decoding uploads and gallery files (format and pixel count checked
before any pixel is decoded) in a fixed number of decode slots, and the thumbnails (encoding and a
byte-bounded LRU of them)."""

import io
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import HTTPException
from PIL import Image

from vmfml.data import decode


def open_image(source: Any, max_pixels: int, what: str) -> Image.Image:
    """Decode an upload or a gallery file with `vmfml.data.decode`, refusals as HTTP errors.

    The decoder checks the format from the first bytes (415 for anything but JPEG, PNG, WebP,
    GIF, BMP, TIFF, PPM/PGM, which are never handed to another Pillow plugin), the pixel count
    from the header before decoding (413 past `max_pixels`; a larger JPEG is decoded reduced to
    fit), and answers 400 for a damaged file.
    """
    try:
        return decode.open_image(source, max_pixels, what)
    except decode.ImageRefused as err:
        raise HTTPException(err.status, str(err)) from err


class DecodeSlots:
    """At most `count` images decoded (and held, with their copies) at once, whatever arrives.

    A burst of large uploads would otherwise decode them all at the same time, each taking
    width x height x 3 bytes several times over. A request that finds no free slot within
    `wait_s` seconds gets 503 with `Retry-After`, so the server's memory stays bounded by the
    slots, not by the number of clients.
    """

    def __init__(self, count: int, wait_s: float) -> None:
        self.count = count
        self.wait_s = wait_s
        self._semaphore: anyio.Semaphore | None = None  # made in the event loop, on first use

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self._semaphore is None:
            self._semaphore = anyio.Semaphore(self.count)
        acquired = False
        with anyio.move_on_after(self.wait_s):  # only the wait is cut short, never the decode
            await self._semaphore.acquire()
            acquired = True
        if not acquired:
            raise HTTPException(
                503,
                f"the server is busy decoding other images ({self.count} at a time); retry shortly",
                headers={"Retry-After": str(max(1, round(self.wait_s)))},
            )
        try:
            yield
        finally:
            self._semaphore.release()


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
