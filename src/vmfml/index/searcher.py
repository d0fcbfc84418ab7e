"""`Searcher`: an embedding model and a gallery together, from images to ranked hits.

The gallery is any `GalleryStore` (an index folder, or Milvus), live: a write by another process
shows in the next search. The model is rebuilt from the checkpoint the index recorded, and
refused if its weights are not the ones that embedded the gallery: queries and gallery must share
one embedding space. This is the API the web server (`vmfml serve`) is built on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vmfml.index.images import prepare
from vmfml.index.model_record import check_same_model, describe, model_info
from vmfml.index.opener import open_gallery
from vmfml.index.rerank import expand_on_store, reranked_hits
from vmfml.index.store import GalleryStore, Hit, Where
from vmfml.metrics.rerank import Rerank
from vmfml.models.inference import embed_batches

ImageLike = Image.Image | str | Path

__all__ = ["Hit", "ImageLike", "Searcher"]


class Searcher:
    """Search a gallery index with images, gallery ids or embedding vectors.

    Args:
        model: the embedding model (unit `[B, D]` output, `.preprocessing`).
        index: the gallery (`GalleryStore`, e.g. `open_gallery(folder)`); it must have been
            built with this model's embeddings.
        device: where the model runs.
        batch_size: images per forward pass in `search_images`.
        checkpoint: the model's checkpoint path (only used to name the model in messages).

    Raises:
        ValueError: the model differs from the one recorded by the index (dimension or weights).
    """

    def __init__(
        self,
        model: nn.Module,
        index: GalleryStore,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        checkpoint: str | Path | None = None,
    ) -> None:
        from vmfml.data.transforms import make_transform

        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        info = model_info(model, checkpoint)
        # Names both models when the index recorded its own; the bare dimension check below
        # covers an index built from vectors of unknown origin.
        check_same_model(index.meta.get("model"), info, index_name="the index")
        if info["embed_dim"] is not None and int(info["embed_dim"]) != index.dim:
            raise ValueError(
                f"the model {describe(info)} embeds in {info['embed_dim']} dimensions but the "
                f"index holds {index.dim}-dimensional vectors"
            )
        self.model = model.to(device).eval()
        self.index = index
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.preprocessing: dict[str, Any] = dict(model.preprocessing)  # type: ignore[arg-type]
        self.transform = make_transform(self.preprocessing, train=False)

    @classmethod
    def from_index(
        cls,
        index_dir: str | Path,
        *,
        checkpoint: str | Path | None = None,
        milvus_uri: str | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> Searcher:
        """Open an index folder's gallery and rebuild its model from the checkpoint it recorded.

        Args:
            index_dir: a folder written by `SearchIndex.save` / `vmfml index`.
            milvus_uri: a Milvus gallery's Milvus, if not the one recorded.
            checkpoint: use this checkpoint instead of the recorded one (e.g. the file moved);
                it must hold the same weights.

        Raises:
            FileNotFoundError: missing index folder or checkpoint (named).
            ValueError: the index records no model and no checkpoint was given, or the
                checkpoint's model differs from the index's.
        """
        from vmfml.train.checkpoint import load_embedding_model

        index = open_gallery(index_dir, milvus_uri=milvus_uri)
        if checkpoint is None:
            checkpoint = (index.meta.get("model") or {}).get("checkpoint")
            if checkpoint is None:
                raise ValueError(
                    f"the index {index_dir} records no model checkpoint; pass checkpoint=... "
                    "(--checkpoint) to embed query images"
                )
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(
                    f"the checkpoint recorded by the index {index_dir} is missing: {checkpoint} "
                    "(pass checkpoint=... / --checkpoint with its new location)"
                )
        model, _ = load_embedding_model(checkpoint, map_location=device)
        return cls(model, index, device=device, batch_size=batch_size, checkpoint=checkpoint)

    # ---- embedding ---------------------------------------------------------------------------

    def embed_images(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Embed images (PIL images or paths) in batches: float32 `[Q, D]` unit rows, on the CPU.

        Grey images are turned to RGB (and RGB to grey) as the model needs; the size is fixed by
        the model's preprocessing. A file that cannot be decoded is refused by name.
        """

        def batches() -> Iterator[tuple[torch.Tensor, None]]:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                yield (
                    torch.stack([prepare(s, self.preprocessing, self.transform) for s in chunk]),
                    None,
                )

        out = [z.cpu() for z, _ in embed_batches(self.model, batches(), self.device)]
        if not out:
            return torch.empty(0, self.index.dim)
        return torch.cat(out)

    # ---- searching ---------------------------------------------------------------------------

    # Every search takes `rerank`: None (or method "none") is the plain search; aqe or alpha-qe
    # (`vmfml.index.rerank.search_rerank`) expand each query by its top-n items that pass `where`
    # and search again, the scores then being cosines to the expanded query.

    def search_image(
        self, image: ImageLike, k: int = 5, where: Where = None, rerank: Rerank | None = None
    ) -> list[Hit]:
        """The k gallery items most similar to one image (PIL image or path)."""
        return self.search_images([image], k, where, rerank)[0]

    def search_images(
        self,
        images: Sequence[ImageLike],
        k: int = 5,
        where: Where = None,
        rerank: Rerank | None = None,
    ) -> list[list[Hit]]:
        """The k gallery items most similar to each image, one list of hits per image."""
        if isinstance(images, (str, Path, Image.Image)):
            raise ValueError("search_images takes a list of images; use search_image for one")
        return self.search_vectors(self.embed_images(images), k, where, rerank)

    def search_id(
        self, i: int, k: int = 5, where: Where = None, rerank: Rerank | None = None
    ) -> list[Hit]:
        """The k gallery items most similar to gallery item i, the item itself excluded (also
        from the neighbours a re-ranking expands it by)."""
        vector = self.index.reconstruct(i)[None]
        if rerank is not None:
            vector = expand_on_store(self.index, vector, rerank, where, exclude=[i])
        hits = self.search_vectors(vector, k + 1, where)[0]
        return [h for h in hits if h["id"] != i][:k]

    def search_vector(
        self,
        vector: np.ndarray | torch.Tensor | Sequence[float],
        k: int = 5,
        where: Where = None,
        rerank: Rerank | None = None,
    ) -> list[Hit]:
        """The k gallery items most similar to one embedding `[D]` (normalized here)."""
        v = _as_numpy(vector)
        if v.ndim != 1:
            raise ValueError(f"search_vector takes one vector [D], got shape {v.shape}")
        return self.search_vectors(v[None], k, where, rerank)[0]

    def search_vectors(
        self,
        vectors: np.ndarray | torch.Tensor,
        k: int = 5,
        where: Where = None,
        rerank: Rerank | None = None,
    ) -> list[list[Hit]]:
        """The k gallery items most similar to each row of `vectors` `[Q, D]` (normalized here),
        among those that pass `where` (e.g. `["label=shoe", "path^=shop7/"]`, see
        `vmfml.index.where`), after the re-ranking `rerank` (None: none).

        Ids of -1 (fewer than k reachable items) are dropped, so a list may hold fewer than k hits.
        """
        v = _as_numpy(vectors)
        if v.ndim != 2:
            raise ValueError(f"vectors must be [Q, D], got shape {v.shape}")
        if v.shape[1] != self.index.dim:
            raise ValueError(
                f"query vectors have dimension {v.shape[1]} but the index holds "
                f"{self.index.dim}-dimensional embeddings"
            )
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
            raise ValueError("query vectors must be finite and non-zero")
        return reranked_hits(self.index, v / norms, k, where, rerank)


def _as_numpy(x: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
