"""What the search app is built from: its limits (`ServeSettings`) and the searcher it asks
(`SearcherLike`, which `vmfml.index.Searcher` satisfies)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

Hit = Mapping[str, Any]  # {"id", "path", "label", "score"}


class IndexLike(Protocol):
    """What the app reads from `vmfml.index.SearchIndex`."""

    @property
    def items(self) -> Sequence[Mapping[str, Any]]:
        """Item i is `{"id": i, "path", "label"}`; a slice gives a list of them."""

    @property
    def meta(self) -> dict[str, Any]:
        """Records "gallery_root" (and "dimension" where the index has no `.dim`)."""


class SearcherLike(Protocol):
    """What the app needs from `vmfml.index.Searcher`: each search returns its hits best first."""

    @property
    def index(self) -> IndexLike: ...

    @property
    def model(self) -> Any: ...

    def search_image(self, image: Image.Image, k: int, /) -> Sequence[Hit]: ...

    def search_id(self, i: int, k: int, /) -> Sequence[Hit]: ...

    def search_vector(self, vector: np.ndarray, k: int, /) -> Sequence[Hit]: ...


@dataclass(frozen=True)
class ServeSettings:
    """Limits and defaults of the server; `vmfml serve` fills them from its command line."""

    max_upload_mb: float = 10.0  # largest accepted upload (the whole request body), MiB
    max_k: int = 100  # largest number of neighbours one request may ask for
    default_k: int = 12  # neighbours returned when a request gives no k
    max_image_pixels: int = 40_000_000  # width * height above which an image is refused undecoded
    thumbnail_size: int = 160  # default longest side of a thumbnail, pixels
    thumbnail_cache_mb: float = 64.0  # memory held by encoded thumbnails (least recently used go)
    gallery_root: str | Path | None = None  # overrides the index's meta["gallery_root"]

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in [1, max_k={self.max_k}], got {self.default_k}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if not 16 <= self.thumbnail_size <= 1024:
            raise ValueError(f"thumbnail_size must be in [16, 1024], got {self.thumbnail_size}")
        if self.thumbnail_cache_mb < 0:
            raise ValueError(f"thumbnail_cache_mb must be >= 0, got {self.thumbnail_cache_mb}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))
