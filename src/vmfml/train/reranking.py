"""`vmfml evaluate --rerank METHOD`: retrieval metrics with query-time re-ranking beside those
without, and the time per query of each, on the test embeddings of a trained model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from vmfml.metrics.rerank import Rerank, choose_rerank, reranked_retrieval_metrics
from vmfml.models.embedding import EmbeddingModel
from vmfml.train.batches import embed_dataset


def rerank_report(
    method: str,
    n: int | None,
    alpha: float | None,
    model: EmbeddingModel,
    data: Any,
    ks: tuple[int, ...],
    device: torch.device,
    test: tuple[torch.Tensor, torch.Tensor],
    progress: bool = False,
) -> dict[str, Any]:
    """Re-ranked and plain retrieval metrics of the test embeddings `[N, D]` (and labels `[N]`).

    The parameters: `n` and `alpha` when given; otherwise chosen by MAP@R on the validation split
    (`data.val`) when the run has one (`vmfml.metrics.rerank.choose_rerank`), else the defaults of
    `Rerank`. An In-Shop gallery (`data.gallery`) is embedded again here.

    Returns:
        `{"settings": {...}, "chosen_on": ..., "without": {...}, "with": {...}}`, each metrics
        dict holding Recall@K, MAP@R, R-Precision and ms_per_query.
    """
    settings = Rerank(method)
    chosen_on = "defaults"
    if n is not None or alpha is not None:
        settings = replace(
            settings,
            n=settings.n if n is None else n,
            alpha=settings.alpha if alpha is None else alpha,
        )
        chosen_on = "from the command line"
    elif data.val is not None and method not in ("none", "k-reciprocal"):
        feats, labels = embed_dataset(
            model, data.val, model.preprocessing, device, progress=progress, desc="embed validation"
        )
        settings, val_map = choose_rerank(method, F.normalize(feats, dim=1), labels)
        chosen_on = f"chosen on validation, MAP@R {val_map:.4f}"
    test_emb, test_labels = test
    gallery, gallery_labels = test_emb, test_labels
    queries: dict[str, Any] = {}
    if data.gallery is not None:
        feats, gallery_labels = embed_dataset(
            model,
            data.gallery,
            model.preprocessing,
            device,
            progress=progress,
            desc="embed gallery",
        )
        gallery = F.normalize(feats, dim=1)
        queries = {"query_embeddings": test_emb, "query_labels": test_labels}
    without = reranked_retrieval_metrics(gallery.cpu(), gallery_labels, ks, Rerank(), **queries)
    with_ = reranked_retrieval_metrics(gallery.cpu(), gallery_labels, ks, settings, **queries)
    return {
        "settings": settings.describe(),
        "chosen_on": chosen_on,
        "without": without,
        "with": with_,
    }


def print_rerank(report: dict[str, Any]) -> None:
    settings = ", ".join(f"{k} {v}" for k, v in report["settings"].items() if k != "method")
    print(
        f"\nre-ranking: {report['settings']['method']} ({settings or 'no parameters'}; "
        f"{report['chosen_on']})"
    )
    keys = [k for k in report["without"] if k != "ms_per_query"]
    print("  " + f"{'':<12}" + "".join(f"{k:>12}" for k in [*keys, "ms/query"]))
    for name in ("without", "with"):
        row = report[name]
        values = "".join(f"{row[k]:>12.4f}" for k in keys)
        print(f"  {name:<12}{values}{row['ms_per_query']:>12.3f}")
