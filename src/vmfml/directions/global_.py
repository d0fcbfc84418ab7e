"""GlobalDirections: mu from a full pass over the training set (the paper's global structure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .base import MeanDirections

__all__ = ["GlobalDirections", "compute_class_sums"]


class GlobalDirections(MeanDirections):
    """mu_c = normalized sum of the current network's embeddings of every training image of c.

    The trainer embeds the whole training set with `compute_class_sums` at every period boundary
    and hands the result to `refresh(sums, counts)`; between refreshes mu is fixed. Batches are
    not accumulated (`observe` does nothing): the full pass replaces them.

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        init_seed: seed of the random initial directions.
    """

    needs_full_pass = True

    def observe(self, x: Tensor, labels: Tensor) -> None:
        """Nothing to do: the sums come from the full pass (`compute_class_sums`)."""
        self._check_batch(x, labels)

    def refresh(self, sums: Tensor | None = None, counts: Tensor | None = None) -> None:
        """Set mu from the sums of a full pass; sums and counts are required."""
        if sums is None or counts is None:
            raise ValueError(
                "GlobalDirections.refresh needs the sums and counts of a full pass over the "
                "training set: directions.refresh(*compute_class_sums(model, loader, "
                "num_classes, device))"
            )
        super().refresh(sums, counts)


@torch.no_grad()
def compute_class_sums(
    model: Callable[[Tensor], Tensor],
    loader: Iterable[Any],
    num_classes: int,
    device: torch.device | str,
    *,
    all_reduce: bool = True,
) -> tuple[Tensor, Tensor]:
    """Per-class sums of unit embeddings over a whole data set (one forward pass, no gradients).

    The model runs in eval mode (batch-norm running statistics, no dropout), as it will at test
    time, and its previous mode is restored afterwards.

    Args:
        model: maps images [B, ...] to embeddings [B, D] (unit rows; re-normalized here anyway,
            since the mean direction is defined on the sphere).
        loader: yields (images, labels, ...) batches; labels are class indices in [0, C).
        num_classes: number of classes C.
        device: where the model runs and where the sums are returned.
        all_reduce: when torch.distributed is initialized, sum the results over all processes
            (each process iterating over its own shard, e.g. with a DistributedSampler).

    Returns:
        sums [C, D] float64 and counts [C] int64, on `device`.
    """
    device = torch.device(device)
    was_training = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    sums: Tensor | None = None
    counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
    try:
        for batch in loader:
            images, labels = batch[0], batch[1]
            labels = torch.as_tensor(labels, device=device).long()
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(
                    f"labels must lie in [0, {num_classes}), got values in "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            x = F.normalize(model(images.to(device)).to(torch.float64), dim=1)
            if sums is None:
                sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=device)
            sums.index_add_(0, labels, x)
            counts += torch.bincount(labels, minlength=num_classes)
    finally:
        if isinstance(model, torch.nn.Module) and was_training:
            model.train()
    if sums is None:
        raise ValueError("compute_class_sums got an empty loader")
    if all_reduce and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts
