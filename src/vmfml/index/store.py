"""`GalleryStore`: what a live gallery offers, whichever engine holds it; `open_gallery` picks it.

Two stores satisfy the protocol: `Gallery` (an index folder: faiss plus a SQLite write log) and
`MilvusGallery` (a Milvus collection: Milvus Lite in a local file, or a server or cluster). The
search command, the `Searcher` and the web server talk to a store only through this protocol;
the index folder's meta.json says which store it is (`"backend"`), so they never need to know.

Every store is safe to share between threads, gives stable ids (never renumbered, never reused),
and makes a write visible to its searches as soon as the write returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypedDict

import numpy as np
import torch

from vmfml.index.where import Clause

Where = str | Sequence[str] | Sequence[Clause] | None
BACKENDS = ("faiss", "milvus")


class Item(TypedDict):
    """A gallery item: its id, image path, label (class name) and metadata (JSON scalars)."""

    id: int
    path: str | None
    label: str | None
    meta: dict[str, Any]


class Hit(TypedDict):
    """One search result: the gallery item and its cosine similarity to the query."""

    id: int
    path: str | None
    label: str | None
    meta: dict[str, Any]
    score: float


class GalleryStore(Protocol):
    """A live gallery of unit embeddings with items; see the module docstring."""

    @property
    def kind(self) -> str:
        """flat, ivf, hnsw or ivfpq."""

    @property
    def meta(self) -> dict[str, Any]:
        """What the build recorded: the model, the gallery root..."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int:
        """The number of items held now (removed ones excluded)."""

    @property
    def items(self) -> Sequence[Item]:
        """The items held now, in id order (a snapshot; position is not the id)."""

    def add(
        self, vectors: np.ndarray | torch.Tensor, items: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Store unit rows `[M, D]` with their items (`path`, `label`, `meta`); their new ids.
        On disk before it returns."""

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Remove items by id, all or none (an unknown or removed id is refused, named)."""

    def get(self, item_id: int) -> Item | None:
        """The item with this id, None if there is none (never given, or removed)."""

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores [Q, k], ids [Q, k])` best first among the items that pass `where`; the
        tail is id -1, score -inf where fewer are found."""

    def hits(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> list[list[Hit]]:
        """`search`, with each found item's fields: one list of hits per query."""

    def reconstruct(self, item_id: int) -> np.ndarray:
        """The stored embedding `[D]` of an item."""

    def set_search_params(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        """Search-time recall/speed settings of the approximate kinds."""

    def close(self) -> None: ...
