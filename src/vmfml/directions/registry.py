"""create_directions: the mean-direction strategies by name."""

from __future__ import annotations

import inspect
from typing import Any

from .accumulate import AccumulateDirections
from .base import MeanDirections
from .ema import EMADirections
from .global_ import GlobalDirections
from .learned import LearnedDirections

__all__ = ["DIRECTIONS", "create_directions", "direction_options"]

DIRECTIONS: dict[str, type[MeanDirections]] = {
    "global": GlobalDirections,
    "accumulate": AccumulateDirections,
    "ema": EMADirections,
    "learned": LearnedDirections,
}


def direction_options(name: str) -> list[str]:
    """The keyword options strategy `name` accepts (read from its constructor)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def create_directions(name: str, num_classes: int, embed_dim: int, **opts: Any) -> MeanDirections:
    """Build the mean-direction strategy `name` ("global", "accumulate", "ema", "learned").

    Unknown names and options raise a ValueError listing the valid ones.
    """
    cls = _lookup(name)
    valid = direction_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for directions {name!r}; valid options: {valid}"
        )
    return cls(num_classes, embed_dim, **opts)


def _lookup(name: str) -> type[MeanDirections]:
    if name not in DIRECTIONS:
        raise ValueError(f"unknown directions {name!r}; valid: {sorted(DIRECTIONS)}")
    return DIRECTIONS[name]
