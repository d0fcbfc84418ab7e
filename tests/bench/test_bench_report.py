"""The report: statistics checked against numpy, tables and plots from hand-made records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vmfml.bench.report import (
    by_cell,
    global_vs_accumulate,
    latest_records,
    render,
    write_report,
)
from vmfml.bench.runner import append_record
from vmfml.bench.stats import summarize
from vmfml.cli import main


def record(
    run_id: str,
    method: str,
    seed: int,
    groups: list[list[str]],
    status: str = "ok",
    epochs: int = 2,
    **metrics: float,
) -> dict[str, Any]:
    epoch_s = 3.0 if method == "vmf-global" else 2.0
    return {
        "run_id": run_id,
        "status": status,
        "method": method,
        "seed": seed,
        "groups": groups,
        "profile": "test",
        "settings": {
            "data": "fashion-mnist",
            "model": "small_cnn",
            "epochs": epochs,
            "batch_size": 128,
            "lr": 0.003,
            "loss": method,
        },
        "metrics": metrics,
        "timing": {
            "train_seconds": 2.0 * epochs,
            "refresh_seconds": (1.0 if method == "vmf-global" else 0.0) * epochs,
            "epoch_seconds_mean": epoch_s,
            "images_per_second": 1500.0,
        },
        "wall_seconds": 10.0,
        "concurrent_runs": 4,
        "git_commit": "0123456789abcdef",
        "git_dirty": False,
        "machine": {"host": "box", "cpu_count": 16, "accelerator": "NVIDIA H100", "torch": "2.11"},
        "error": "the loss became nan" if status != "ok" else None,
    }


@pytest.fixture()
def records() -> list[dict[str, Any]]:
    acc = {"vmf-global": [0.89, 0.91, 0.90], "softmax": [0.80, 0.84, 0.82]}
    out = []
    for method, values in acc.items():
        for seed, a in enumerate(values):
            out.append(
                record(
                    f"{method}-{seed}",
                    method,
                    seed,
                    [["classification", "depth=1"]],
                    classifier_accuracy=a,
                    accuracy=a - 0.01,
                    ece=0.05,
                )
            )
    for seed, (classifier, accuracy) in enumerate([(0.88, 0.87), (0.86, 0.85)]):
        out.append(
            record(
                f"acc-{seed}",
                "vmf-accumulate",
                seed,
                [["classification", "depth=1"]],
                classifier_accuracy=classifier,
                accuracy=accuracy,
                ece=0.04,
            )
        )
    out.append(
        record(
            "r-0",
            "vmf-global",
            0,
            [["retrieval", "small_cnn"], ["kappa", "16"]],
            **{"recall@1": 0.7, "recall@2": 0.8, "map@r": 0.3, "nmi": 0.6},
        )
    )
    out.append(
        record(
            "r-1",
            "vmf-global",
            0,
            [["kappa", "8"]],
            **{"recall@1": 0.6, "recall@2": 0.7, "map@r": 0.2, "nmi": 0.5},
        )
    )
    out.append(record("r-2", "triplet", 0, [["retrieval", "small_cnn"]], status="diverged"))
    return out


def test_summarize_matches_numpy_sample_std() -> None:
    values = [0.81, 0.87, 0.84, 0.9]
    stat = summarize(values)
    assert stat is not None and stat.n == 4
    assert stat.mean == pytest.approx(np.mean(values))
    assert stat.std == pytest.approx(np.std(values, ddof=1))
    assert summarize([0.5]) == summarize([0.5, float("nan")])  # NaN (a diverged metric) left out
    assert summarize([0.5]).std == 0.0  # type: ignore[union-attr]
    assert summarize([]) is None


def test_latest_record_of_a_run_wins() -> None:
    failed = record("x", "softmax", 0, [["classification", "depth=1"]], status="error")
    retried = record("x", "softmax", 0, [["classification", "depth=1"]], classifier_accuracy=0.8)
    assert latest_records([failed, retried]) == [retried]
    assert by_cell([failed])[("classification", "depth=1", "softmax")] == []


def test_tables_hold_mean_std_n_and_best_in_bold(records: list[dict[str, Any]]) -> None:
    text = render(records)
    # vmf-global: mean 90.0, std of (89, 91, 90) = 1.0; softmax: 82.0 ± 2.0; accumulate 2 seeds.
    assert "| vmf-global | **90.0 ± 1.0** |" in text
    assert "| softmax | 82.0 ± 2.0 |" in text
    assert "| vmf-accumulate | 87.0 ± 1.4 (n=2) |" in text
    # ECE: lower is better, so the accumulate row is bold there.
    assert "| vmf-accumulate | **4.0 ± 0.0 (n=2)** |" in text
    # Retrieval: one ok run, the diverged triplet run counted but kept out of the table.
    assert "### Backbone: small_cnn" in text
    assert (
        "| vmf-global | 70.0 | 80.0 | – | – | 30.0 | – | 60.0 |" not in text
    )  # absent columns dropped
    assert "| vmf-global | 70.0 | 80.0 | 30.0 | 60.0 |" in text
    assert "| triplet |" not in text
    assert (
        "1 diverged, 10 ok" in text and "- diverged: triplet seed 0 (retrieval small_cnn)" in text
    )
    # Ablation: the kappa sweep in numeric order, the shared retrieval run among them.
    kappa = text[text.index("## Ablation: concentration kappa") :]
    assert kappa.index("| 8 |") < kappa.index("| 16 |")
    assert (
        "Shared settings: data fashion-mnist, model small_cnn, epochs 2, batch_size 128, lr 0.003, seeds 0, 1, 2."
        in text
    )
    assert "Code: 0123456789ab." in text and "NVIDIA H100" in text


def test_cost_of_global_against_accumulate(records: list[dict[str, Any]]) -> None:
    table = global_vs_accumulate(by_cell(records))
    # global 3.0 s/epoch (1.0 of them the refresh pass) against accumulate 2.0: +50 %.
    assert "| classification depth=1 | 2.00 | 3.00 | 1.00 | +50% |" in table
    text = render(records)
    assert "### Cost: classification, depth=1" in text
    assert "| vmf-global | 1500 | 2.00 | 1.00 | 3.00 | 10.0 |" in text
    assert "runs in flight at once: 4" in text


def test_write_report_and_cli_report(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    for r in records:
        append_record(tmp_path, r)
    written = write_report(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["ablations.png", "accuracy_vs_depth.png", "recall_at_1.png", "results.md"]
    for path in written:
        assert path.stat().st_size > 0
    (tmp_path / "results.md").unlink()
    assert main(["bench", "report", "--results", str(tmp_path)]) == 0
    assert "## Classification" in (tmp_path / "results.md").read_text()
    assert (
        json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])["run_id"]
        == "vmf-global-0"
    )


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report", "--results", str(tmp_path / "none")]) == 2
    assert "no results.jsonl" in capsys.readouterr().err
    assert main(["bench", "--profile", "huge", "--dry-run"]) == 2
    assert "valid profiles: quick, cpu, converged, full" in capsys.readouterr().err
    assert (
        main(
            [
                "bench",
                "--profile",
                "quick",
                "--experiments",
                "retrieval",
                "--dry-run",
                "--results",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 runs, 0 done" in out and "triplet" in out


def test_claims_are_paired_differences_by_seed(records: list[dict[str, Any]]) -> None:
    text = render(records)
    claims = text[text.index("## The claims at a glance") : text.index("## Classification")]
    # vmf-global - softmax per seed: 9, 7, 8 points -> 8.0 ± 1.0, ahead on 3 of 3 seeds.
    assert (
        "| claim 1: vMF (global) vs softmax CE | classification depth=1 | classifier_accuracy | +8.0 ± 1.0 | 3/3 | beats |"
        in claims
    )
    # accumulate has seeds 0 and 1 only: -1 and -5 points against global.
    diffs = np.array([0.88 - 0.89, 0.86 - 0.91]) * 100
    expected = f"{diffs.mean():+.1f} ± {diffs.std(ddof=1):.1f} | 0/2 | level |"  # 2 se = 4
    assert (
        f"| accumulate vs global (no extra pass) | classification depth=1 | classifier_accuracy | {expected}"
        in claims
    )
    assert "claim 3" not in claims  # the only tuple-loss run diverged

    # Claim 1 on a retrieval table: the paper's global against softmax, paired by seed.
    scores = {"recall@2": 0.9, "map@r": 0.3, "nmi": 0.6}
    softmax = record(
        "rs-0", "softmax", 0, [["retrieval", "small_cnn"]], **{"recall@1": 0.65}, **scores
    )
    claims = render([*records, softmax])
    assert (
        "| claim 1: vMF (global) vs softmax CE | retrieval small_cnn | recall@1 | +5.0 | 1/1 | level |"
        in claims
    )
    assert (
        "| claim 1: vMF (global) vs softmax CE | retrieval small_cnn | map@r | +0.0 | 0/1 | level |"
        in claims
    )


@pytest.mark.parametrize(
    ("diffs", "word"),
    [
        ([0.02, 0.03, 0.025], "beats"),  # mean 2.5, se 0.29: ahead everywhere, well clear
        ([-0.02, -0.03, -0.025], "trails"),
        ([0.008, 0.002, 0.014], "beats"),  # the +0.8 ± 0.6 of 3/3 seeds: se 0.35, 2 se 0.69
        ([0.001, 0.019, 0.004], "level"),  # mean 0.8, sd 0.96: 3/3 ahead but 2 se = 1.1
        ([0.02, 0.03, -0.001], "level"),  # behind on one seed
        ([0.02, 0.03, 0.0], "level"),  # a tie is not ahead
        ([0.01, 0.01], "beats"),  # no spread: any mean exceeds 2 x 0
        ([0.05], "level"),  # one seed cannot be judged
        ([], "level"),
    ],
)
def test_verdict_rule(diffs: list[float], word: str) -> None:
    from vmfml.bench.stats import verdict

    assert verdict(diffs) == word


def test_verdict_sits_at_twice_the_standard_error() -> None:
    from vmfml.bench.stats import verdict

    # Ahead on every seed, sd 1: 2 se = 2 / sqrt(3) = 1.1547.
    assert verdict([1.16 - 1, 1.16, 1.16 + 1]) == "beats"
    assert verdict([1.15 - 1, 1.15, 1.15 + 1]) == "level"
    assert verdict([-1.16 + 1, -1.16, -1.16 - 1]) == "trails"


def validated(
    run_id: str, method: str, seed: int, groups: list[list[str]], curve: list[float], test_r1: float
) -> dict[str, Any]:
    """A run validated after every epoch: `curve` is its validation Recall@1 per epoch, and the
    kept epoch is its best one, as the training loop keeps it."""
    best = max(range(len(curve)), key=lambda i: curve[i])
    out = record(
        run_id, method, seed, groups, epochs=len(curve), **{"recall@1": test_r1, "map@r": 0.3}
    )
    out["metrics"]["kept"] = {"epoch": best + 1, "val_score": curve[best]}
    out["history"] = [
        {"epoch": e + 1, "val_recall@1": v, "val_map@r": v / 2} for e, v in enumerate(curve)
    ]
    return out


def test_ablations_are_read_on_validation_and_rising_curves_are_named(tmp_path: Path) -> None:
    runs = [
        # kappa 8 is best on validation though 32 is best on test: 8 is chosen, 32's test hidden.
        validated("k8", "vmf-global", 0, [["kappa", "8"]], [0.80, 0.90, 0.85], test_r1=0.70),
        validated("k32", "vmf-global", 0, [["kappa", "32"]], [0.70, 0.80, 0.75], test_r1=0.99),
        # Retrieval: triplet's best validation epoch is its last on one seed of two.
        validated("t0", "triplet", 0, [["retrieval", "small_cnn"]], [0.5, 0.6, 0.7], 0.6),
        validated("t1", "triplet", 1, [["retrieval", "small_cnn"]], [0.5, 0.7, 0.6], 0.6),
        validated("s0", "softmax", 0, [["retrieval", "small_cnn"]], [0.9, 0.8, 0.8], 0.6),
    ]
    text = render(runs)
    ablation = text[text.index("## Ablation: concentration kappa") :]
    assert "Read on validation" in ablation
    assert "| **8** (chosen) | **90.0** | **45.0** | 70.0 | 30.0 | – | 3.00 | 1.00 |" in ablation
    assert "| 32 | 80.0 | 40.0 | – | – | – | 3.00 | 1.00 |" in ablation  # 99.0 on test: hidden
    assert "99.0" not in ablation
    retrieval = text[text.index("### Backbone: small_cnn") :]
    assert "| triplet |" in retrieval and "| 70.0 ± 0.0 | 2.5 ± 0.7 |" in retrieval
    assert "may still have been rising when the budget ended: triplet (1/2 seeds)." in retrieval
    assert "softmax" not in retrieval.split("still have been rising")[1].split("\n")[0]
    paths = write_report_of(tmp_path, runs)
    assert tmp_path / "validation_curves.png" in paths


def write_report_of(folder: Path, runs: list[dict[str, Any]]) -> list[Path]:
    for run in runs:
        append_record(folder, run)
    return write_report(folder)


def test_tuning_table_shows_the_panel_mean_that_chooses() -> None:
    runs = [
        validated(f"{m}-{lr}", m, 0, [["tuning", f"efficientnet_lite0 lr={lr}"]], [v], 0.5)
        for m, lr, v in (
            ("softmax", "0.0001", 0.9),
            ("triplet", "0.0001", 0.7),
            ("softmax", "0.001", 0.85),
            ("triplet", "0.001", 0.85),
        )
    ]
    text = render(runs)
    assert "## Settings chosen on validation" in text
    assert "| mean of the panel (chooses) | 80.0 | 85.0 |" in text
    assert "Chosen: efficientnet_lite0 lr=0.001 (panel mean 85.0)." in text


def test_a_choice_waits_for_every_candidate_the_profile_plans() -> None:
    """The converged profile tunes the frozen-BN backbone's lr over 1e-4 and 1e-3: with only the
    1e-4 runs done, nothing is chosen, whatever they scored."""
    backbone = "efficientnet_lite0_frozen_bn"
    panel = ("softmax", "vmf-accumulate", "multi_similarity", "proxy_anchor")

    def tuning(lrs: list[str]) -> list[dict[str, Any]]:
        out = []
        for lr in lrs:
            for m in panel:
                run = validated(f"{m}-{lr}", m, 0, [["tuning", f"{backbone} lr={lr}"]], [0.9], 0.5)
                out.append({**run, "profile": "converged"})
        return out

    text = render(tuning(["0.0001"]))
    assert f"{backbone} lr: not chosen yet" in text and "Chosen:" not in text
    assert f"Chosen: {backbone} lr=0.0001 (panel mean 90.0)." in render(tuning(["0.0001", "0.001"]))


def test_tail_change_compares_the_last_three_validated_epochs_with_the_three_before() -> None:
    from vmfml.bench.stats import metric

    rising = validated(
        "r", "triplet", 0, [["retrieval", "small_cnn"]], [0.1, 0.2, 0.3, 0.5, 0.6, 0.7], 0.5
    )
    assert metric(rising, "val_tail_change") == pytest.approx((1.8 - 0.6) / 3)
    assert metric(rising, "best_is_last") == 1.0 and metric(rising, "kept_epoch") == 6.0
    short = validated("s", "triplet", 0, [["retrieval", "small_cnn"]], [0.1, 0.2], 0.5)
    assert metric(short, "val_tail_change") is None  # too few epochs to tell
    assert metric(record("n", "triplet", 0, [["retrieval", "small_cnn"]]), "val_recall@1") is None


def test_a_backbone_table_lists_only_the_methods_it_ran(records: list[dict[str, Any]]) -> None:
    scores = {"recall@1": 0.9, "recall@2": 0.95, "map@r": 0.4, "nmi": 0.7}
    efficientnet = record("e-0", "softmax", 0, [["retrieval", "efficientnet_lite0"]], **scores)
    triplet = record("s-0", "triplet", 1, [["retrieval", "small_cnn"]], **scores)
    text = render([*records, efficientnet, triplet])
    first = text.index("### Backbone: efficientnet_lite0")
    second = text.index("### Backbone: small_cnn")
    rows = {
        "efficientnet_lite0": text[first:second],
        "small_cnn": text[second : text.index("\n## ", second)],
    }
    assert "| softmax | 90.0 |" in rows["efficientnet_lite0"]
    assert "| vmf-global |" not in rows["efficientnet_lite0"]
    assert "| triplet |" not in rows["efficientnet_lite0"]
    assert (
        "| vmf-global | 70.0 |" in rows["small_cnn"]
        and "| triplet | **90.0** |" in rows["small_cnn"]
    )
    assert "| softmax |" not in rows["small_cnn"]
    cost = text[text.index("### Cost: retrieval, efficientnet_lite0") :]
    cost = cost[: cost.index("### Cost: retrieval, small_cnn")]
    assert "| softmax |" in cost and "| triplet |" not in cost and "| vmf-global |" not in cost


def test_validation_curves_give_a_method_one_colour_in_every_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backbone that ran fewer methods must not reuse the legend's colours for others."""
    from vmfml.bench import plots
    from vmfml.bench.report import by_cell

    runs = [
        validated("a", "softmax", 0, [["retrieval", "small_cnn"]], [0.5, 0.6], 0.6),
        validated("b", "triplet", 0, [["retrieval", "small_cnn"]], [0.5, 0.6], 0.6),
        validated("c", "triplet", 0, [["retrieval", "efficientnet_lite0"]], [0.5, 0.6], 0.6),
    ]
    figures = []
    monkeypatch.setattr(plots, "save_figure_atomic", lambda fig, *a, **k: figures.append(fig))
    plots.plot_validation_curves(by_cell(runs), tmp_path)
    colours = {}
    for ax in figures[0].axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"softmax", "triplet"}
    assert all(len(c) == 1 for c in colours.values()) and colours["softmax"] != colours["triplet"]


def test_rows_from_a_tree_with_uncommitted_changes_are_marked_and_counted(
    records: list[dict[str, Any]],
) -> None:
    clean = render(records)
    assert "†" not in clean
    dirty = [
        {**r, "git_dirty": True} if r["method"] == "softmax" and r["seed"] == 1 else r
        for r in records
    ]
    text = render(dirty)
    # The softmax row of every classification table, its cost row and the claim rows it enters.
    assert text.count("| softmax † |") == 4  # three accuracy tables and the cost table
    assert "| vmf-global |" in text and "| vmf-global † |" not in text
    assert "| claim 1: vMF (global) vs softmax CE † | classification depth=1 |" in text
    assert "| accumulate vs global (no extra pass) | classification depth=1 |" in text
    note = "† Made on a tree with uncommitted changes (`git_dirty`); to be rerun at a clean commit"
    # The claims table (softmax, global, accumulate runs) and the three classification tables;
    # the cost table counts the classification runs too.
    assert text.count(f"{note}: 1 of the 8 runs of this table.") == 5
    assert "| 16 |" in text  # the ablation rows of clean runs stay unmarked
    # git_dirty None (a copy outside git, $VMFML_GIT_COMMIT) is not called dirty.
    unknown = [{**r, "git_dirty": None} for r in records]
    assert "†" not in render(unknown)


def test_the_recall_plot_zooms_to_the_values_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differences of 1-7 points must be visible: the axis holds the values, not 0-100."""
    from vmfml.bench import plots
    from vmfml.bench.report import by_cell

    scores = {"softmax": [0.81, 0.82], "vmf-global": [0.86, 0.88], "triplet": [0.85, 0.85]}
    runs = [
        record(f"{m}-{seed}", m, seed, [["retrieval", "small_cnn"]], **{"recall@1": v})
        for m, values in scores.items()
        for seed, v in enumerate(values)
    ]
    figures = []
    monkeypatch.setattr(plots, "save_figure_atomic", lambda fig, *a, **k: figures.append(fig))
    plots.plot_recall_at_1(by_cell(runs), tmp_path)
    low, high = figures[0].axes[0].get_xlim()
    # softmax 81.5 ± 0.7 is the lowest, vmf-global 87.0 ± 1.4 the highest.
    assert (low, high) == (80.0, 89.0)
    assert plots.zoomed_range([]) == (0.0, 100.0)
    assert plots.zoomed_range([(99.8, 0.5)]) == (98.0, 100.0)  # 98.8 floored; never past 100
