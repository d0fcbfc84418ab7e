"""Loaders for the standard deep metric learning retrieval benchmarks, read from their official
layouts: CUB-200-2011, Cars196, Stanford Online Products and In-Shop Clothes."""

from vmfml.data.benchmarks.cars import load_cars196
from vmfml.data.benchmarks.cub import load_cub200
from vmfml.data.benchmarks.inshop import load_inshop
from vmfml.data.benchmarks.registry import (
    BENCHMARKS,
    STANDARD_RECALL_KS,
    Benchmark,
    get_benchmark,
    load_benchmark,
)
from vmfml.data.benchmarks.sop import load_sop

__all__ = [
    "BENCHMARKS",
    "STANDARD_RECALL_KS",
    "Benchmark",
    "get_benchmark",
    "load_benchmark",
    "load_cars196",
    "load_cub200",
    "load_inshop",
    "load_sop",
]
