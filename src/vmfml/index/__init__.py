"""Embed a gallery, index it, keep it live, search it: embedding files, `SearchIndex` (the
built faiss index), `Gallery` / `GalleryStore` (live: add, remove, filter), `Searcher`."""

from vmfml.index.embeddings import (
    EmbeddingFile,
    embed_into,
    load_embedding_file,
    save_embedding_file,
)
from vmfml.index.gallery import Gallery
from vmfml.index.grid import save_result_grid
from vmfml.index.model_info import check_same_model, model_info
from vmfml.index.open_gallery import open_gallery
from vmfml.index.search_index import KINDS, Items, SearchIndex
from vmfml.index.searcher import Searcher
from vmfml.index.store import GalleryStore, Hit, Item
from vmfml.index.where import parse_where

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
