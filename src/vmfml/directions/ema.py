"""EMADirections: mu follows an exponential moving average of the batch class means."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from vmfml.distributed import is_distributed

from .base import ClassSums, MeanDirections, finite_rows

__all__ = ["EMADirections"]


class EMADirections(MeanDirections):
    """mu_c <- normalize(momentum mu_c + (1 - momentum) mean of class c in the batch), every step.

    Only classes present in the batch move. This is the online update of the first author's
    follow-up (IJCNN 2019); there is no period, so `refresh()` without sums does nothing, and
    `refresh(sums, counts)` (or `init_from`) overrides mu, e.g. from a full pass.

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        momentum: weight of the old direction, in [0, 1) (0 = the batch mean alone).
        init_seed: seed of the random initial directions.
    """

    def __init__(
        self, num_classes: int, embed_dim: int, *, momentum: float = 0.9, init_seed: int = 0
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        super().__init__(num_classes, embed_dim, init_seed=init_seed)
        self.momentum = float(momentum)

    @torch.no_grad()
    def observe(self, x: Tensor, labels: Tensor) -> None:
        """Move the directions of the classes in the batch x [B, D], labels [B] towards their means.

        Rows holding NaN or infinite values are skipped: a class whose rows are all bad keeps its
        direction.
        """
        self._check_batch(x, labels)
        x, finite = finite_rows(x)
        # index_add_ rather than bincount, which would stall each step on a GPU (see base.py).
        counts = torch.zeros_like(self.class_counts).index_add_(
            0, labels, finite.to(self.class_counts.dtype)
        )
        sums = torch.zeros_like(self.class_sums).index_add_(0, labels, x)
        if is_distributed():
            # The batch is the global one: every process moves mu by the same means.
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        means = sums / counts.clamp_min(1)[:, None]
        mu = self.mu.double()
        updated = F.normalize(self.momentum * mu + (1.0 - self.momentum) * means, dim=1)
        self._write_mu(torch.where((counts > 0)[:, None], updated, mu))

    has_period = False

    def end_period(self, full_pass: ClassSums) -> None:
        """Nothing to do: mu moves every step."""

    def refresh(self, sums: Tensor | None = None, counts: Tensor | None = None) -> None:
        """Set mu from the given sums; without sums there is nothing to do (mu moves every step)."""
        if sums is not None or counts is not None:
            super().refresh(sums, counts)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"
