"""Embed a gallery, index it with faiss, search it: embedding files, `SearchIndex`, `Searcher`."""

from vmfml.index.embeddings import (
    EmbeddingFile,
    embed_into,
    load_embedding_file,
    save_embedding_file,
)
from vmfml.index.grid import save_result_grid
from vmfml.index.model_info import check_same_model, model_info
from vmfml.index.search_index import KINDS, Items, SearchIndex
from vmfml.index.searcher import Hit, Searcher

__all__ = [
    "KINDS",
    "EmbeddingFile",
    "Hit",
    "Items",
    "SearchIndex",
    "Searcher",
    "check_same_model",
    "embed_into",
    "load_embedding_file",
    "model_info",
    "save_embedding_file",
    "save_result_grid",
]
