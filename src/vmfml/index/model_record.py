"""Which model made a set of embeddings: recorded with every embedding file and index.

Embeddings from two different models live in unrelated coordinate systems even when their
dimensions agree, so comparing them gives meaningless scores without any error. Every embedding
file and index therefore records the model's config, preprocessing, checkpoint path and a
fingerprint of its weights, and a search refuses query embeddings whose model differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn


def weights_fingerprint(model: nn.Module) -> str:
    """A short SHA-256 of the model's state dict (names, dtypes, shapes and values).

    Two models give the same fingerprint only if they hold bit-identical weights: the same
    architecture trained for one more step already differs.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """`value` with tuples turned into lists and anything exotic into strings (JSON round trip)."""
    return json.loads(json.dumps(value, default=str))


def model_info(model: nn.Module, checkpoint: str | Path | None) -> dict[str, Any]:
    """What an embedding file or index records about the model that produced its vectors.

    Returns:
        `{"config", "preprocessing", "embed_dim", "checkpoint" (absolute path or None),
        "fingerprint"}`; `config` rebuilds the architecture with `create_model(**config)`.
    """
    config = dict(getattr(model, "config", {}) or {})
    embed_dim = getattr(model, "embed_dim", None)
    if embed_dim is None:
        embed_dim = config.get("embed_dim")
    return jsonable(
        {
            "config": config,
            "preprocessing": dict(getattr(model, "preprocessing", {}) or {}),
            "embed_dim": embed_dim,
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
            "fingerprint": weights_fingerprint(model),
        }
    )


def describe(info: dict[str, Any] | None) -> str:
    """One line naming a model for error messages: `small_cnn (D=128, weights 1a2b..., ckpt.pt)`."""
    if not info:
        return "an unrecorded model"
    name = (info.get("config") or {}).get("name", "unknown model")
    parts = [f"D={info.get('embed_dim')}"]
    if info.get("fingerprint"):
        parts.append(f"weights {info['fingerprint']}")
    if info.get("checkpoint"):
        parts.append(str(info["checkpoint"]))
    return f"{name} ({', '.join(parts)})"


def check_same_model(
    index_model: dict[str, Any] | None,
    query_model: dict[str, Any] | None,
    *,
    index_name: str = "the index",
) -> None:
    """Refuse to compare embeddings of two different models.

    Args:
        index_model: `model_info` recorded by the index (None when it recorded nothing).
        query_model: `model_info` of the model that embeds (or embedded) the queries.
        index_name: how to name the index in the message (its folder).

    Raises:
        ValueError: the dimensions or weight fingerprints differ; the message names both models.
    """
    if not index_model or not query_model:
        return
    dim_i, dim_q = index_model.get("embed_dim"), query_model.get("embed_dim")
    if dim_i is not None and dim_q is not None and int(dim_i) != int(dim_q):
        raise ValueError(
            f"{index_name} holds {dim_i}-dimensional embeddings of {describe(index_model)}, but the "
            f"queries are {dim_q}-dimensional embeddings of {describe(query_model)}; "
            "embed the queries with the index's model or rebuild the index"
        )
    fp_i, fp_q = index_model.get("fingerprint"), query_model.get("fingerprint")
    if fp_i and fp_q and fp_i != fp_q:
        raise ValueError(
            f"{index_name} was built with {describe(index_model)}, but the queries are embedded "
            f"with {describe(query_model)}; their embeddings are not comparable: embed the queries "
            "with the index's model or rebuild the index"
        )
