"""Choices the benchmark makes on validation, never on the test classes.

A run of the `converged` profile holds out classes of its training set (`val_fraction`), is
validated after every epoch, and records the validation Recall@1 of the epoch it kept
(`metrics["kept"]["val_score"]`). From those scores, and only from them:

- `tuned_settings`: a backbone's tuned key (e.g. the learning rate) takes the candidate value
  whose runs of the tuning panel (one method of each family, seed 0) have the best mean
  validation Recall@1;
- `top_methods`: the methods added to a backbone's table are the best of another backbone's
  table by mean validation Recall@1 over seeds; an exact tie goes to the method the profile
  lists first (`choices_report` says when a tie decided the cut).

Both return None until every run they read has finished, so that a benchmark resumed later
makes the same choice as one run in one go.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# `backbone` and `profile` arguments are vmfml.bench.profiles' Backbone and Profile, which plan
# with this module (so it does not import them: no cycle).

# A run that diverged has no kept epoch; for a choice it scores as retrieving nothing.
_DIVERGED_SCORE = 0.0


def value_label(value: Any) -> str:
    """How a setting's value names a table cell: 0.001 -> "0.001", 16.0 -> "16", "epoch"."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def val_score(record: Mapping[str, Any]) -> float | None:
    """The validation Recall@1 of the epoch a finished run kept (None: not validated)."""
    if record.get("status") == "diverged":
        return _DIVERGED_SCORE
    kept = record.get("metrics", {}).get("kept", {})
    score = kept.get("val_score") if isinstance(kept, Mapping) else None
    return None if score is None else float(score)


def _scores(
    records: Sequence[Mapping[str, Any]], experiment: str, setting: str
) -> dict[tuple[str, int], float]:
    """(method, seed) -> validation score of the finished runs of one table cell (the last
    record of a run wins)."""
    found: dict[tuple[str, int], float] = {}
    for record in records:
        if [experiment, setting] not in [list(g) for g in record.get("groups", [])]:
            continue
        score = val_score(record)
        if record.get("status") in ("ok", "diverged") and score is not None:
            found[(record["method"], int(record["seed"]))] = score
    return found


def tuned_settings(backbone: Any, records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """{key: chosen value} for each tuned key of `backbone`; None while a tuning run is missing."""
    chosen: dict[str, Any] = {}
    for key, values in backbone.tune.items():
        means = {}
        for value in values:
            scores = _scores(records, "tuning", f"{backbone.name} {key}={value_label(value)}")
            panel = [scores.get((m, 0)) for m in backbone.tune_methods]
            if any(s is None for s in panel):
                return None
            means[value] = statistics.fmean(s for s in panel if s is not None)
        # Ties go to the first candidate listed (the profile lists the conventional one first).
        chosen[key] = max(values, key=lambda v: means[v])
    return chosen


def top_methods(
    backbone: Any,
    profile: Any,
    records: Sequence[Mapping[str, Any]],
    exclude: Sequence[str] = (),
    seeds: int | None = None,
) -> list[str] | None:
    """The `backbone.top` best methods of the table of `backbone.top_from` by mean validation
    Recall@1 over seeds, leaving out `exclude`; None while a run of that table is missing."""
    source = next((b for b in profile.backbones if b.name == backbone.top_from), None)
    if source is None:
        raise ValueError(
            f"{backbone.name} takes its methods from an unknown backbone {backbone.top_from!r}"
        )
    seeds = profile.seeds if seeds is None else seeds
    scores = _scores(records, "retrieval", source.name)
    methods = [m for m in (source.methods or profile.retrieval_methods) if m not in exclude]
    if any((m, seed) not in scores for m in methods for seed in range(seeds)):
        return None
    mean = {m: statistics.fmean(scores[(m, s)] for s in range(seeds)) for m in methods}
    return sorted(methods, key=lambda m: _rank(m, mean, methods))[: backbone.top]


def _rank(method: str, mean: Mapping[str, float], methods: Sequence[str]) -> tuple[float, int]:
    """The tie rule of `top_methods`: the better mean first; on an exact tie, the method listed
    first in the profile's methods (`RETRIEVAL_METHODS` order). Stated in BENCHMARKS.md 5.8: the
    converged profile's fifth place was such a tie (multi-similarity and CosFace, 95.8958)."""
    return (-mean[method], list(methods).index(method))


def ties_at_cut(
    backbone: Any,
    profile: Any,
    records: Sequence[Mapping[str, Any]],
    exclude: Sequence[str] = (),
    seeds: int | None = None,
) -> list[str]:
    """The methods whose mean equals that of the last one `top_methods` keeps, when one of them
    is left out: a choice the tie rule made (empty when there is none)."""
    top = top_methods(backbone, profile, records, exclude, seeds)
    if not top:
        return []
    source = next(b for b in profile.backbones if b.name == backbone.top_from)
    seeds = profile.seeds if seeds is None else seeds
    scores = _scores(records, "retrieval", source.name)
    methods = [m for m in (source.methods or profile.retrieval_methods) if m not in exclude]
    mean = {m: statistics.fmean(scores[(m, s)] for s in range(seeds)) for m in methods}
    tied = [m for m in methods if mean[m] == mean[top[-1]]]
    return tied if any(m not in top for m in tied) else []


def choices_report(profile: Any, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per choice of the profile: what was chosen from which scores, or what it waits on."""
    lines = []
    for backbone in profile.backbones:
        for key, values in backbone.tune.items():
            tuned = tuned_settings(backbone, records)
            if tuned is None:
                lines.append(
                    f"{backbone.name}: {key} not chosen yet (waits on the tuning runs of "
                    f"{', '.join(backbone.tune_methods)} at {key} = {', '.join(map(str, values))})"
                )
            else:
                lines.append(
                    f"{backbone.name}: {key} = {tuned[key]} (best mean validation Recall@1 of the panel)"
                )
        if backbone.top:
            exclude = backbone.methods or ()
            top = top_methods(backbone, profile, records, exclude=exclude)
            tied = ties_at_cut(backbone, profile, records, exclude=exclude)
            tie = (
                f" (an exact tie at the cut between {' and '.join(tied)}, broken by the order "
                "the profile lists them in)"
                if tied
                else ""
            )
            lines.append(
                f"{backbone.name}: the {backbone.top} best other methods of {backbone.top_from} "
                + ("not chosen yet (waits on that table)" if top is None else f"= {', '.join(top)}")
                + tie
            )
    return lines
