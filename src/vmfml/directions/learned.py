"""LearnedDirections: mu as gradient-trained parameters (normalized softmax / NormFace)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ClassSums, MeanDirections

__all__ = ["LearnedDirections"]


class LearnedDirections(MeanDirections):
    """Class directions trained by the optimizer with the network: the baseline the paper argues
    against ("gradient-learned centres fail to track the global information").

    `mu` is an nn.Parameter [C, D] (unconstrained rows); `directions()` normalizes it, so the
    loss is normalized softmax with temperature 1 / kappa. `observe` and `refresh()` do nothing;
    `init_from(sums, counts)` / `refresh(sums, counts)` overwrite the parameter (a warm start).

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        init_seed: seed of the random initial directions.
    """

    mu: nn.Parameter  # type: ignore[assignment]

    def _register_mu(self, initial: Tensor) -> None:
        self.mu = nn.Parameter(initial)

    def _write_mu(self, new: Tensor) -> None:
        # In place: the optimizer holds a reference to this very Parameter.
        with torch.no_grad():
            self.mu.copy_(new)

    def directions(self) -> Tensor:
        """The unit directions [C, D] (differentiable with respect to the parameter)."""
        return F.normalize(self.mu, dim=1)

    has_period = False

    def end_period(self, full_pass: ClassSums) -> None:
        """Nothing to do: the optimizer moves mu."""

    def observe(self, x: Tensor, labels: Tensor) -> None:
        """Nothing to do: the directions learn from the loss's gradient."""
        self._check_batch(x, labels)

    def refresh(self, sums: Tensor | None = None, counts: Tensor | None = None) -> None:
        """Overwrite mu from the given sums; without sums there is nothing to do."""
        if sums is not None or counts is not None:
            super().refresh(sums, counts)
