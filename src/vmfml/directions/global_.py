"""GlobalDirections: mu from a full pass over the training set (the paper's global structure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vmfml.distributed import is_distributed
from vmfml.models.inference import embed_batches

from .base import ClassSums, MeanDirections

__all__ = ["GlobalDirections", "compute_class_sums"]


class GlobalDirections(MeanDirections):
    """mu_c = normalized sum of the current network's embeddings of every training image of c.

    At every period boundary `end_period(full_pass)` embeds the whole training set (the
    trainer's closure over `compute_class_sums`, sharded over the processes and summed) and sets
    mu from it; between refreshes mu is fixed. Batches are not accumulated (`observe` does
    nothing): the full pass replaces them.

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        init: the first mu of a run: "data" (the paper's: the class means of a full pass with
            the untrained network) or "random" (uniform on the sphere, drawn from init_seed).
        init_seed: seed of the random initial directions.
    """

    needs_full_pass = True

    def __init__(
        self, num_classes: int, embed_dim: int, *, init: str = "data", init_seed: int = 0
    ) -> None:
        if init not in ("data", "random"):
            raise ValueError(f"init must be 'data' or 'random', got {init!r}")
        super().__init__(num_classes, embed_dim, init_seed=init_seed)
        self.init = init

    def start(self, full_pass: ClassSums) -> None:
        """The paper starts from the data's own mean directions (init "data")."""
        if self.init == "data":
            self.init_from(*full_pass())

    def end_period(self, full_pass: ClassSums) -> None:
        """mu from a full pass over the training set with the current network."""
        self.refresh(*full_pass())

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


def compute_class_sums(
    model: Callable[[Tensor], Tensor],
    loader: Iterable[Any],
    num_classes: int,
    device: torch.device | str,
    *,
    all_reduce: bool = True,
    precision: str = "32",
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
            (each process iterating over its own shard, e.g. `vmfml.distributed.shard_rows`).
        precision: "32", "bf16" or "fp16" (autocast of the forward pass; sums stay float64).

    Returns:
        sums [C, D] float64 and counts [C] int64, on `device`.
    """
    device = torch.device(device)
    sums: Tensor | None = None
    counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
    batches = ((batch[0], batch[1]) for batch in loader)
    for z, labels in embed_batches(model, batches, device, precision=precision):
        labels = torch.as_tensor(labels, device=device).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
        x = F.normalize(z.to(torch.float64), dim=1)
        if sums is None:
            sums = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=device)
        sums.index_add_(0, labels, x)
        counts += torch.bincount(labels, minlength=num_classes)
    if sums is None:
        raise ValueError("compute_class_sums got an empty loader")
    if all_reduce and is_distributed():
        dist.all_reduce(sums)
        dist.all_reduce(counts)
    return sums, counts
