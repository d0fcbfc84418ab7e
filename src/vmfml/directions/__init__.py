"""Class mean-direction strategies for the vMF loss, and concentration diagnostics."""

from .accumulate import AccumulateDirections
from .base import MeanDirections
from .concentration import estimate_kappa, mean_resultant_length, per_class_concentration
from .ema import EMADirections
from .global_ import GlobalDirections, compute_class_sums
from .learned import LearnedDirections
from .registry import DIRECTIONS, create_directions, direction_options

__all__ = [
    "DIRECTIONS",
    "AccumulateDirections",
    "EMADirections",
    "GlobalDirections",
    "LearnedDirections",
    "MeanDirections",
    "compute_class_sums",
    "create_directions",
    "direction_options",
    "estimate_kappa",
    "mean_resultant_length",
    "per_class_concentration",
]
