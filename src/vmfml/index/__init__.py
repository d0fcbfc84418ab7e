"""Embed a gallery, index it, keep it live, search it: embedding files, `SearchIndex` (the
built faiss index), `Gallery` / `GalleryStore` (live: add, remove, filter), `Searcher`."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmfml.index.embeddings import (
        EmbeddingFile,
        embed_into,
        load_embedding_file,
        save_embedding_file,
    )
    from vmfml.index.gallery import Gallery
    from vmfml.index.grid import save_result_grid
    from vmfml.index.model_record import check_same_model, model_info
    from vmfml.index.opener import open_gallery
    from vmfml.index.search_index import KINDS, Items, SearchIndex
    from vmfml.index.searcher import Searcher
    from vmfml.index.store import GalleryStore, Hit, Item
    from vmfml.index.where import parse_where

# name -> its module, imported on first use: a command that only defines its arguments (vmfml serve
# sets OMP_NUM_THREADS before faiss and torch load) does not pay for torch and faiss here.
_EXPORTS = {
    "EmbeddingFile": "vmfml.index.embeddings",
    "embed_into": "vmfml.index.embeddings",
    "load_embedding_file": "vmfml.index.embeddings",
    "save_embedding_file": "vmfml.index.embeddings",
    "Gallery": "vmfml.index.gallery",
    "save_result_grid": "vmfml.index.grid",
    "check_same_model": "vmfml.index.model_record",
    "model_info": "vmfml.index.model_record",
    "open_gallery": "vmfml.index.opener",
    "KINDS": "vmfml.index.search_index",
    "Items": "vmfml.index.search_index",
    "SearchIndex": "vmfml.index.search_index",
    "Searcher": "vmfml.index.searcher",
    "GalleryStore": "vmfml.index.store",
    "Hit": "vmfml.index.store",
    "Item": "vmfml.index.store",
    "parse_where": "vmfml.index.where",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vmfml.index' has no attribute {name!r}")


__all__ = [
    "KINDS",
    "EmbeddingFile",
    "Gallery",
    "GalleryStore",
    "Hit",
    "Item",
    "Items",
    "SearchIndex",
    "Searcher",
    "check_same_model",
    "embed_into",
    "load_embedding_file",
    "model_info",
    "open_gallery",
    "parse_where",
    "save_embedding_file",
    "save_result_grid",
]
