"""create_loss: every loss the benchmark compares, by name, behind one interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from vmfml.directions import DIRECTIONS, direction_options

from . import baselines
from .vmf import VMFLoss

__all__ = ["LOSSES", "MetricLoss", "create_loss", "list_losses", "loss_options"]


@runtime_checkable
class MetricLoss(Protocol):
    """What the trainer and the benchmark rely on, for every loss `create_loss` returns.

    `logits` exists on every loss but raises ValueError unless `has_classifier` is True.
    """

    expects_normalized: bool
    has_classifier: bool

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor: ...

    def logits(self, embeddings: Tensor) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Any: ...


def _vmf(
    num_classes: int,
    embed_dim: int,
    *,
    kappa: float = 16.0,
    directions: str = "accumulate",
    learn_kappa: bool = False,
    **direction_opts: Any,
) -> VMFLoss:
    """The vMF loss; direction_opts are the strategy's (init_seed, and momentum for ema)."""
    return VMFLoss(num_classes, embed_dim, kappa, directions, learn_kappa, **direction_opts)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "vmf": _vmf,
    **{f"vmf_{name}": partial(_vmf, directions=name) for name in DIRECTIONS},
    "softmax": baselines.softmax_loss,
    "triplet": baselines.triplet_loss,
    "contrastive": baselines.contrastive_loss,
    "lifted_structure": baselines.lifted_structure_loss,
    "npair": baselines.npair_loss,
    "multi_similarity": baselines.multi_similarity_loss,
    "proxy_nca": baselines.proxy_nca_loss,
    "proxy_anchor": baselines.proxy_anchor_loss,
    "normalized_softmax": baselines.normalized_softmax_loss,
    "arcface": baselines.arcface_loss,
    "cosface": baselines.cosface_loss,
}


def list_losses() -> list[str]:
    """All loss names `create_loss` accepts."""
    return list(LOSSES)


def loss_options(name: str, directions: str | None = None) -> list[str]:
    """The keyword options loss `name` accepts (for vmf, with those of its direction strategy)."""
    builder = _lookup(name)
    if name.startswith("vmf"):
        if name != "vmf":
            directions = name.removeprefix("vmf_")
        valid = ["kappa", "learn_kappa"] + (["directions"] if name == "vmf" else [])
        strategy = directions or "accumulate"
        return valid + (direction_options(strategy) if strategy in DIRECTIONS else [])
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def create_loss(name: str, num_classes: int, embed_dim: int, **opts: Any) -> nn.Module:
    """Build loss `name` for num_classes classes of embed_dim-dimensional embeddings.

    Names: vmf (options kappa, directions, learn_kappa and the strategy's options, e.g.
    momentum), vmf_global / vmf_accumulate / vmf_ema / vmf_learned (the same with the strategy
    fixed), softmax, triplet, contrastive, lifted_structure, npair, multi_similarity, proxy_nca,
    proxy_anchor, normalized_softmax, arcface, cosface. Unknown names or options raise a
    ValueError that lists the valid ones. The result follows `MetricLoss`.
    """
    builder = _lookup(name)
    directions = opts.get("directions")
    valid = loss_options(name, directions if isinstance(directions, str) else None)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {valid}")
    return builder(num_classes, embed_dim, **opts)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
    return LOSSES[name]
