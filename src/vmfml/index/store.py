"""`GalleryStore`: what a live gallery offers, whichever engine holds it; `open_gallery` picks it.

Two stores satisfy the protocol: `Gallery` (an index folder: faiss plus a SQLite write log) and
`MilvusGallery` (a Milvus collection: Milvus Lite in a local file, or a server or cluster). The
search command, the `Searcher` and the web server talk to a store only through this protocol;
the index folder's meta.json says which store it is (`"backend"`), so they never need to know.

Every store is safe to share between threads, gives stable ids (never renumbered, never reused),
and makes a write visible to its searches as soon as the write returns. Both check what `add`
takes with `checked_additions`, so both refuse the same input with the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypedDict

import numpy as np
import torch

from vmfml.index.search_index import _as_float32, _check_unit
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


def checked_additions(
    vectors: np.ndarray | torch.Tensor, items: Sequence[dict[str, Any]] | None, dim: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """What every store's `add` stores: float32 unit rows `[M, D]` (M >= 1) and one item a row
    (`path`, `label`, `meta`; empty ones when `items` is None); a ValueError says what is wrong."""
    x = _as_float32(vectors, "embeddings")
    if x.ndim != 2 or x.shape[1] != dim or len(x) == 0:
        raise ValueError(
            f"cannot add embeddings of shape {tuple(x.shape)} to a gallery of "
            f"{dim}-dimensional embeddings"
        )
    _check_unit(x, first_row=0)
    checked = [{}] * len(x) if items is None else [_checked_item(it) for it in items]
    if len(checked) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(checked)} items")
    return x, checked


def _checked_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item to store: path and label strings (or None), meta a dict of JSON scalars."""
    if not isinstance(item, dict):
        raise ValueError(f"an item must be a dict with path, label and meta, got {item!r}")
    unknown = set(item) - {"path", "label", "meta"}
    if unknown:
        raise ValueError(
            f"unknown item fields {sorted(unknown)}; valid: path, label, meta (ids are given "
            "by the gallery)"
        )
    meta = item.get("meta") or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in meta.items()
    ):
        raise ValueError(
            f"an item's meta must map names to strings, numbers or true/false, got {meta!r}"
        )
    return {
        "path": None if item.get("path") is None else str(item["path"]),
        "label": None if item.get("label") is None else str(item["label"]),
        "meta": dict(meta),
    }
