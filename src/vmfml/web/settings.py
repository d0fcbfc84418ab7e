"""What the search app is built from: its limits (`ServeSettings`) and the searcher it asks
(`SearcherLike`, which `vmfml.index.Searcher` satisfies)."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

Hit = Mapping[str, Any]  # {"id", "path", "label", "score"}


class IndexLike(Protocol):
    """What the app reads from the live gallery (`vmfml.index.GalleryStore`), by stable id."""

    @property
    def items(self) -> Sequence[Mapping[str, Any]]:
        """The items held now, `{"id", "path", "label"}`, in id order (position is not the id)."""

    @property
    def meta(self) -> dict[str, Any]:
        """Records "gallery_root" (and "dimension" where the index has no `.dim`)."""

    def __len__(self) -> int:
        """The number of items held now."""

    def get(self, item_id: int, /) -> Mapping[str, Any] | None:
        """The item with this id, None if there is none (never given, or removed)."""


class WritableIndexLike(IndexLike, Protocol):
    """What `vmfml serve --writable` also needs: `GalleryStore.add` and `.remove`."""

    def add(self, vectors: Any, items: Sequence[dict[str, Any]] | None = None, /) -> list[int]: ...

    def remove(self, ids: Sequence[int], /) -> list[int]: ...


class SearcherLike(Protocol):
    """What the app needs from `vmfml.index.Searcher`: each search returns its hits best first."""

    @property
    def index(self) -> IndexLike: ...

    @property
    def model(self) -> Any: ...

    # `rerank` (a `vmfml.metrics.rerank.Rerank`) is only passed when a search asks for one.

    def search_image(
        self, image: Image.Image, k: int, where: Any = None, /, *, rerank: Any = None
    ) -> Sequence[Hit]:
        """`where`: `vmfml.index.where.Clause` values, ANDed (None: no filter)."""

    def embed_images(self, images: Sequence[Image.Image], /) -> Any: ...

    def search_id(self, i: int, k: int, /, *, rerank: Any = None) -> Sequence[Hit]: ...

    def search_vector(
        self, vector: np.ndarray, k: int, where: Any = None, /, *, rerank: Any = None
    ) -> Sequence[Hit]: ...


# Host names a browser may use to reach a loopback server; any other Host header is refused, so a
# page on another site cannot reach this server by DNS rebinding (its name resolving to 127.0.0.1).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ServeSettings:
    """Limits and defaults of the server; `vmfml serve` fills them from its command line."""

    max_upload_mb: float = 10.0  # largest accepted upload (the whole request body), MiB
    max_k: int = 100  # largest number of neighbours one request may ask for
    default_k: int = 12  # neighbours returned when a request gives no k
    # width * height above which an image is refused undecoded (a JPEG is decoded reduced)
    max_image_pixels: int = 16_000_000
    thumbnail_size: int = 160  # default longest side of a thumbnail, pixels
    thumbnail_cache_mb: float = 64.0  # memory held by encoded thumbnails (least recently used go)
    gallery_root: str | Path | None = None  # overrides the index's meta["gallery_root"]
    # Images decoded at once (uploads and thumbnails): bounds the memory decoding can take.
    decode_slots: int = 2
    decode_wait_s: float = 5.0  # a request waits this long for a free slot, then gets 503
    body_timeout_s: float = 60.0  # a request body must arrive whole within this, else 408
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header values accepted (port aside)
    # `Authorization: Bearer KEY` required on /api/ (all but /api/health) when set; never shown.
    api_key: str | None = field(default=None, repr=False)
    # POST /api/items and DELETE /api/items/{id} change the gallery only when set (--writable).
    writable: bool = False
    # Query expansion of every search that does not choose its own (`vmfml.index.rerank`):
    # none, aqe or alpha-qe, with its neighbours and weight exponent (evaluate's defaults).
    rerank: str = "none"
    rerank_n: int = 2
    rerank_alpha: float = 3.0

    def __post_init__(self) -> None:
        from vmfml.index.rerank import search_rerank

        search_rerank(self.rerank, self.rerank_n, self.rerank_alpha)  # one line if bad
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"max_upload_mb must be a finite number > 0, got {self.max_upload_mb}")
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in [1, max_k={self.max_k}], got {self.default_k}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if not 16 <= self.thumbnail_size <= 1024:
            raise ValueError(f"thumbnail_size must be in [16, 1024], got {self.thumbnail_size}")
        if not (math.isfinite(self.thumbnail_cache_mb) and self.thumbnail_cache_mb >= 0):
            raise ValueError(f"thumbnail_cache_mb must be >= 0, got {self.thumbnail_cache_mb}")
        if self.decode_slots < 1:
            raise ValueError(f"decode_slots must be >= 1, got {self.decode_slots}")
        for name in ("decode_wait_s", "body_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if not self.allowed_hosts:
            raise ValueError("allowed_hosts must name at least one host")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (leave it None for no key)")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))
