"""Statistics of the benchmark's table cells, and the order their rows and columns are shown in.

Shared by the report (`vmfml.bench.report`, the markdown tables) and the figures
(`vmfml.bench.plots`). A cell is the list of ok records of one (experiment, setting, method), as
`vmfml.bench.report.by_cell` groups them; its statistic for a key is mean ± sample std over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vmfml.bench.profiles import METHODS

Cells = dict[tuple[str, str, str], list[dict[str, Any]]]  # (experiment, setting, method) -> records


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (0 for a single value) of n values."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Stat | None:
    """Mean ± sample std (ddof = 1) of the finite values; None when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return Stat(statistics.fmean(finite), std, len(finite))


def metric(record: dict[str, Any], key: str) -> float | None:
    """A metric or a per-epoch cost of a record (None if the run did not report it).

    Cost keys: `epoch_s` (training + refresh seconds per epoch), `train_epoch_s`,
    `refresh_epoch_s`, `images_per_s`, `wall_s` (the whole run with evaluation).
    """
    timing = record.get("timing", {})
    epochs = max(1, int(record.get("settings", {}).get("epochs", 1)))
    derived = {
        "epoch_s": timing.get("epoch_seconds_mean"),
        "train_epoch_s": None
        if timing.get("train_seconds") is None
        else timing["train_seconds"] / epochs,
        "refresh_epoch_s": None
        if timing.get("refresh_seconds") is None
        else timing["refresh_seconds"] / epochs,
        "images_per_s": timing.get("images_per_second"),
        "wall_s": record.get("wall_seconds"),
    }
    if key in derived:
        return derived[key]
    if key in _VALIDATION_KEYS:
        return validation_metric(record, key)
    value = record.get("metrics", {}).get(key)
    return float(value) if isinstance(value, int | float) else None


# Validation figures of the epoch a run kept (runs with a validation split only).
_VALIDATION_KEYS = ("val_recall@1", "val_map@r", "kept_epoch", "best_is_last", "val_tail_change")
# The last epochs whose validation Recall@1 is compared with the same number before them.
TAIL_EPOCHS = 3


def validation_metric(record: dict[str, Any], key: str) -> float | None:
    """`val_recall@1` / `val_map@r` of the kept epoch, `kept_epoch`, `best_is_last` (1.0
    when the kept epoch is the last one run: the validation curve may still have been rising
    when the budget ended), and `val_tail_change` (mean validation Recall@1 of the last
    TAIL_EPOCHS epochs minus that of the TAIL_EPOCHS before: about 0 on a plateau); None for a
    run without validation."""
    kept = record.get("metrics", {}).get("kept")
    if not isinstance(kept, dict) or kept.get("val_score") is None:
        return None
    epoch = int(kept["epoch"])
    if key == "val_tail_change":
        curve = [v for _, v in validation_curve(record)]
        if len(curve) < 2 * TAIL_EPOCHS:
            return None
        last, before = curve[-TAIL_EPOCHS:], curve[-2 * TAIL_EPOCHS : -TAIL_EPOCHS]
        return sum(last) / TAIL_EPOCHS - sum(before) / TAIL_EPOCHS
    if key == "kept_epoch":
        return float(epoch)
    history = record.get("history") or []
    if key == "best_is_last":
        return float(epoch == max((int(h["epoch"]) for h in history), default=epoch))
    row: dict[str, Any] = next((h for h in history if int(h["epoch"]) == epoch), {})
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def validation_curve(record: dict[str, Any]) -> list[tuple[int, float]]:
    """(epoch, validation Recall@1) of every validated epoch of a run."""
    return [
        (int(h["epoch"]), float(h["val_recall@1"]))
        for h in record.get("history") or []
        if isinstance(h.get("val_recall@1"), int | float)
    ]


def cell_stat(records: Sequence[dict[str, Any]], key: str) -> Stat | None:
    """Mean ± sample std over the records of a metric or cost (`metric`); None when none has it."""
    return summarize([v for r in records if (v := metric(r, key)) is not None])


def setting_order(setting: str) -> tuple[int, float, str]:
    """Numeric settings ("depth=2", "16", "300") in numeric order; words ("epoch") after."""
    text = setting.split("=", 1)[-1]
    try:
        return (0, float(text), setting)
    except ValueError:
        return (1, 0.0, setting)


def method_order(method: str) -> tuple[int, str]:
    names = list(METHODS)
    return (names.index(method), method) if method in names else (len(names), method)


# The verdict rule, fixed before the tables are read (BENCHMARKS.md, section 5): the only words
# a comparison of two methods is stated in.
BEATS, TRAILS, LEVEL = "beats", "trails", "level"
VERDICT_RULE = (
    "A beats B when A is ahead on every paired seed and the mean paired difference exceeds twice "
    "its standard error (sd / sqrt(n)); A trails B when A is behind on every paired seed and the "
    "mean difference is below minus twice its standard error; level otherwise (one seed alone, "
    "or a tie on a seed, is level)"
)


def verdict(differences: Sequence[float]) -> str:
    """The word for A against B from the paired differences A − B (one per seed): `VERDICT_RULE`."""
    diffs = [float(d) for d in differences if d is not None and math.isfinite(float(d))]
    if len(diffs) < 2:
        return LEVEL
    mean = statistics.fmean(diffs)
    standard_error = statistics.stdev(diffs) / math.sqrt(len(diffs))
    if all(d > 0 for d in diffs) and mean > 2 * standard_error:
        return BEATS
    if all(d < 0 for d in diffs) and mean < -2 * standard_error:
        return TRAILS
    return LEVEL


def paired_differences(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], key: str
) -> list[float]:
    """metric(a) − metric(b) for each seed both have (the same data split, order and initial
    weights), in A's record order."""
    by_seed = {r["seed"]: v for r in b if (v := metric(r, key)) is not None}
    return [
        v - by_seed[r["seed"]]
        for r in a
        if (v := metric(r, key)) is not None and r["seed"] in by_seed
    ]
