"""Choices made on validation (vmfml.bench.selection) and the plan that waits on them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from vmfml.bench.profiles import PROFILES, Backbone, plan
from vmfml.bench.selection import choices_report, top_methods, tuned_settings, val_score

CONVERGED = PROFILES["converged"]
SMALL, EFFNET, EFFNET_FROZEN_BN = CONVERGED.backbones


def done(
    method: str, seed: int, group: list[str], score: float, status: str = "ok"
) -> dict[str, Any]:
    """A finished run's record as the runner writes it, with the kept epoch's validation score."""
    return {
        "run_id": f"{method}-{seed}-{'-'.join(group)}",
        "status": status,
        "method": method,
        "seed": seed,
        "groups": [group],
        "metrics": {"recall@1": 0.5, "kept": {"epoch": 3, "val_score": score}},
    }


def tuning_records(scores: dict[float, list[float]]) -> list[dict[str, Any]]:
    """The panel's tuning runs: lr -> validation scores in the panel's order."""
    return [
        done(method, 0, ["tuning", f"efficientnet_lite0 lr={lr:g}"], score)
        for lr, panel in scores.items()
        for method, score in zip(EFFNET.tune_methods, panel, strict=True)
    ]


def test_tuned_value_is_the_best_panel_mean_and_waits_for_every_run() -> None:
    # lr 1e-4: mean 0.80; lr 1e-3: mean 0.85 although one method prefers 1e-4.
    records = tuning_records({1e-4: [0.9, 0.7, 0.8, 0.8], 1e-3: [0.85, 0.85, 0.85, 0.85]})
    assert tuned_settings(EFFNET, records) == {"lr": 1e-3}
    assert tuned_settings(EFFNET, records[:-1]) is None  # one tuning run missing: no choice yet
    # A diverged run scores as retrieving nothing.
    records[-1] = done(
        "proxy_anchor", 0, ["tuning", "efficientnet_lite0 lr=0.001"], 0.0, "diverged"
    )
    assert val_score(records[-1]) == 0.0
    assert tuned_settings(EFFNET, records) == {"lr": 1e-4}  # 1e-3's mean falls to 0.6375
    # A tie goes to the candidate listed first.
    tie = tuning_records({1e-4: [0.8] * 4, 1e-3: [0.8] * 4})
    assert tuned_settings(EFFNET, tie) == {"lr": 1e-4}
    assert tuned_settings(SMALL, []) == {}  # nothing tuned: nothing to wait on


def small_cnn_table(seeds: int = 3) -> list[dict[str, Any]]:
    """Every small-CNN run, each method scored by its place in RETRIEVAL_METHODS (later is better)."""
    methods = CONVERGED.retrieval_methods
    return [
        done(m, seed, ["retrieval", "small_cnn"], 0.5 + 0.01 * i + 0.001 * seed)
        for i, m in enumerate(methods)
        for seed in range(seeds)
    ]


def test_top_methods_rank_the_other_table_by_validation_and_wait_for_it() -> None:
    table = small_cnn_table()
    exclude = EFFNET.methods or ()
    top = top_methods(EFFNET, CONVERGED, table, exclude=exclude)
    others = [m for m in CONVERGED.retrieval_methods if m not in exclude]
    assert top == list(reversed(others))[:5]
    assert top_methods(EFFNET, CONVERGED, table[:-1], exclude=exclude) is None
    with pytest.raises(ValueError, match="unknown backbone"):
        top_methods(Backbone("x", {}, top_from="resnet", top=2), CONVERGED, table)


def test_the_plan_adds_efficientnet_runs_once_their_choices_are_made() -> None:
    def efficientnet_table(records: list[dict[str, Any]]) -> list[Any]:
        return [
            s
            for s in plan(CONVERGED, ["retrieval"], records=records)
            if ("retrieval", "efficientnet_lite0") in s.groups
        ]

    first = plan(CONVERGED, ["retrieval"])
    assert sum(("retrieval", "small_cnn") in s.groups for s in first) == 17 * 3
    assert sum(s.groups[0].experiment == "tuning" for s in first) == 4 * 2 * 2  # BN: both ways
    assert efficientnet_table([]) == []  # the learning rate is not chosen yet
    tuned = tuning_records({1e-4: [0.7] * 4, 1e-3: [0.8] * 4})
    vmf_only = efficientnet_table(tuned)
    assert {s.method for s in vmf_only} == set(EFFNET.methods or ())
    assert all(s.settings["lr"] == 1e-3 and s.settings["split_seed"] == 0 for s in vmf_only)
    full = efficientnet_table(tuned + small_cnn_table())
    assert len(full) == (len(EFFNET.methods or ()) + 5) * 3
    # A tuning run whose settings equal a table run is trained once and fills both cells.
    both = {(s.method, s.seed) for s in full if len(s.groups) == 2}
    assert both == {("softmax", 0), ("vmf-accumulate", 0), ("proxy_anchor", 0)}
    lines = choices_report(CONVERGED, tuned + small_cnn_table())
    assert lines[0] == "efficientnet_lite0: lr = 0.001 (best mean validation Recall@1 of the panel)"
    assert "= cosface, arcface, normalized_softmax, proxy_anchor, proxy_nca" in lines[1]


def test_an_exact_tie_at_the_cut_goes_to_the_method_listed_first_and_is_reported() -> None:
    exclude = EFFNET.methods or ()
    others = [m for m in CONVERGED.retrieval_methods if m not in exclude]
    # The committed case: multi-similarity and CosFace tie for fifth; CosFace is listed later.
    assert others.index("multi_similarity") < others.index("cosface")
    leaders = ["normalized_softmax", "proxy_nca", "npair", "proxy_anchor"]
    score = {m: 0.96 + 0.001 * (4 - i) for i, m in enumerate(leaders)}
    score |= {"cosface": 0.9589575799322656, "multi_similarity": 0.9589575799322656}
    table = [
        done(m, seed, ["retrieval", "small_cnn"], score.get(m, 0.9))
        for m in CONVERGED.retrieval_methods
        for seed in range(3)
    ]
    assert top_methods(EFFNET, CONVERGED, table, exclude=exclude) == [*leaders, "multi_similarity"]
    # Listed the other way round, the tie would go to CosFace: the order decides, not the name.
    swapped = [r for r in table if r["method"] == "cosface"] + table
    order = [m for m in CONVERGED.retrieval_methods if m != "cosface"]
    profile = dataclasses.replace(CONVERGED, retrieval_methods=("cosface", *order))
    assert top_methods(EFFNET, profile, swapped, exclude=exclude)[-1] == "cosface"
    lines = choices_report(CONVERGED, table)
    assert any(
        "an exact tie at the cut between multi_similarity and cosface" in line for line in lines
    )
    assert not any("tie" in line for line in choices_report(CONVERGED, small_cnn_table()))
