"""AccumulateDirections: mu re-estimated from the batch embeddings seen during the last period."""

from __future__ import annotations

from .base import MeanDirections

__all__ = ["AccumulateDirections"]


class AccumulateDirections(MeanDirections):
    """The global estimator without the extra pass over the training set.

    Every training step adds the detached batch embeddings to per-class sums (`observe`); at the
    end of a period the trainer calls `refresh()` and mu_c becomes the normalized sum of class c.
    The embeddings were produced by a network that changed during the period, so this is a
    slightly stale version of `global`, at no extra cost. Between refreshes mu is fixed.

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        init_seed: seed of the random initial directions.
    """
