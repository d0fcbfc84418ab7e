"""The comparison harness (`vmfml bench`): the paper's claims tested side by side against the
best-known losses, with resumable runs, one JSON line per run, markdown tables and plots."""

from vmfml.bench.profiles import (
    EXPERIMENTS,
    METHODS,
    PROFILES,
    Group,
    Profile,
    RunSpec,
    get_profile,
    plan,
    run_id,
)
from vmfml.bench.report import render, write_report
from vmfml.bench.runner import BenchSummary, read_records, run_benchmark

__all__ = [
    "EXPERIMENTS",
    "METHODS",
    "PROFILES",
    "BenchSummary",
    "Group",
    "Profile",
    "RunSpec",
    "get_profile",
    "plan",
    "read_records",
    "render",
    "run_benchmark",
    "run_id",
    "write_report",
]
