"""create_loss: every loss the benchmark compares, by name, behind one interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from vmfml.directions import DIRECTIONS, MeanDirections, direction_options

from . import baselines
from .base import BaseLoss, MetricLoss
from .cider import cider_loss
from .vmf import VMFLoss

__all__ = [
    "LOSSES",
    "MetricLoss",
    "canonical_loss",
    "create_loss",
    "has_period",
    "list_losses",
    "loss_options",
]


def _vmf(
    num_classes: int,
    embed_dim: int,
    *,
    kappa: float = 16.0,
    directions: str = "accumulate",
    learn_kappa: bool = False,
    class_kappa: float = 0.0,
    angular_margin: float = 0.0,
    subcentres: int = 1,
    weighting: str = "softmax",
    **direction_opts: Any,
) -> VMFLoss:
    """The vMF loss; direction_opts are the strategy's (init_seed, and momentum for ema)."""
    return VMFLoss(
        num_classes,
        embed_dim,
        kappa,
        directions,
        learn_kappa,
        class_kappa,
        angular_margin=angular_margin,
        subcentres=subcentres,
        weighting=weighting,
        **direction_opts,
    )


LOSSES: dict[str, Callable[..., BaseLoss]] = {
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
    "cider": cider_loss,
}


def list_losses() -> list[str]:
    """All loss names `create_loss` accepts."""
    return list(LOSSES)


def canonical_loss(name: str, directions: str) -> tuple[str, str]:
    """(loss, directions) with a `vmf_<strategy>` alias spelled out: ("vmf_global", d) ->
    ("vmf", "global"). An alias with another explicit strategy is refused."""
    _lookup(name)
    if name.startswith("vmf"):
        _strategy(directions)
    if not name.startswith("vmf_"):
        return name, directions
    strategy = name.removeprefix("vmf_")
    if directions not in (strategy, "accumulate"):
        raise ValueError(
            f"loss {name!r} fixes the directions to {strategy!r}, but directions {directions!r} "
            f"was asked for; use loss 'vmf' with directions {directions!r}"
        )
    return "vmf", strategy


def has_period(name: str, directions: str | None = None) -> bool:
    """Whether loss `name` does work at the end of a refresh period (vMF with accumulated or
    full-pass directions)."""
    _lookup(name)
    if not name.startswith("vmf"):
        return False
    strategy = name.removeprefix("vmf_") if name != "vmf" else directions or "accumulate"
    return _strategy(strategy).has_period


def loss_options(name: str, directions: str | None = None) -> list[str]:
    """The keyword options loss `name` accepts (for vmf, with those of its direction strategy)."""
    builder = _lookup(name)
    if name.startswith("vmf"):
        if name != "vmf":
            directions = name.removeprefix("vmf_")
        valid = ["kappa", "learn_kappa", "angular_margin", "weighting"] + (
            ["directions"] if name == "vmf" else []
        )
        strategy = directions or "accumulate"
        # Per-class concentrations are estimated from the sums a refresh sets mu from.
        per_class = ["class_kappa"] if _strategy(strategy).has_period else []
        # Sub-centres cluster the embeddings of a full pass.
        per_class += ["subcentres"] if _strategy(strategy).needs_full_pass else []
        return valid + per_class + direction_options(strategy)
    params = inspect.signature(builder).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def create_loss(
    name: str, num_classes: int, embed_dim: int, *, seed: int | None = None, **opts: Any
) -> MetricLoss:
    """Build loss `name` for num_classes classes of embed_dim-dimensional embeddings.

    Names: vmf (options kappa, directions, learn_kappa, class_kappa, angular_margin, subcentres (with
    global), weighting and the strategy's options, e.g. momentum, init), vmf_global / vmf_accumulate / vmf_ema / vmf_learned (the same with the
    strategy fixed), softmax, triplet, contrastive, lifted_structure, npair, multi_similarity,
    proxy_nca, proxy_anchor, normalized_softmax, arcface, cosface, cider. Unknown names or options raise
    a ValueError that lists the valid ones. The result follows `MetricLoss`.

    `seed` fixes every random start of the loss, whatever the global random state: the vMF
    strategies' first directions (their init_seed) and the proxies and class weights of the
    baselines.
    """
    builder = _lookup(name)
    directions = opts.get("directions")
    valid = loss_options(name, directions if isinstance(directions, str) else None)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {valid}")
    if seed is None:
        return builder(num_classes, embed_dim, **opts)
    if "init_seed" in valid:
        opts.setdefault("init_seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(num_classes, embed_dim, **opts)


def _strategy(directions: str) -> type[MeanDirections]:
    """The mean-direction strategy named `directions`; an unknown name gets the directions
    registry's ValueError, which lists the valid ones."""
    direction_options(directions)
    return DIRECTIONS[directions]


def _lookup(name: str) -> Callable[..., BaseLoss]:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {sorted(LOSSES)}")
    return LOSSES[name]
