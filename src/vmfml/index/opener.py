"""`open_gallery`: the live gallery of an index folder, on the engine its meta.json names (the
faiss folder's `Gallery` or a Milvus collection's `MilvusGallery`), behind `GalleryStore`."""

from __future__ import annotations

from pathlib import Path

from vmfml.index.gallery import Gallery, read_meta
from vmfml.index.store import GalleryStore


def open_gallery(directory: str | Path, *, milvus_uri: str | None = None) -> GalleryStore:
    """The live gallery of an index folder written by `vmfml index`, on the engine it records.

    Args:
        directory: the index folder.
        milvus_uri: for a Milvus gallery, use this Milvus instead of the recorded one.
    """
    meta = read_meta(Path(directory))
    if meta.get("backend", "faiss") == "milvus":
        from vmfml.index.milvus_store import MilvusGallery

        return MilvusGallery.open(directory, uri=milvus_uri)
    if milvus_uri is not None:
        raise ValueError(f"--milvus-uri given but {directory} is a faiss index, not a Milvus one")
    return Gallery(directory)
