"""`vmfml evaluate --rerank` on a real trained class-disjoint run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vmfml.metrics.rerank import GRID_N

pytestmark = pytest.mark.slow

CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker"]


def test_evaluate_reports_reranked_metrics_beside_the_plain_ones(
    tmp_path: Path, fashion_folder: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    data = fashion_folder(CLASSES, 30)
    run = tmp_path / "run"
    quick = "--depth 1 --width 0.5 --batch-size 60 --plots false --progress false --threads 1"
    train = [*quick.split(), "--epochs", 1, "--val-fraction", 0.5, "--augment", "none"]
    split = ["--split", "class-disjoint"]
    assert run_cli("train", "--data", data, *split, *train, "--out-dir", run).code == 0

    def evaluate(*extra: str | int) -> dict[str, Any]:
        out = tmp_path / "metrics.json"
        result = run_cli("evaluate", "--checkpoint", run, "--out", out, "--no-progress", *extra)
        assert result.code == 0, result.err
        assert "re-ranking: " in result.out and "ms/query" in result.out
        return json.loads(out.read_text())

    metrics = evaluate("--rerank", "aqe")
    report = metrics["rerank"]
    # Without re-ranking, the ranked-list scorer reproduces evaluate's own retrieval metrics.
    for key in ("recall@1", "map@r", "r_precision"):
        assert report["without"][key] == pytest.approx(metrics[key], abs=1e-12)
    assert report["chosen_on"].startswith("chosen on validation, MAP@R ")
    assert report["settings"]["method"] == "aqe" and report["settings"]["n"] in GRID_N
    assert report["with"]["ms_per_query"] > 0
    # n = 0 adds no neighbour: the re-ranked lists are the plain ones.
    zero = evaluate("--rerank", "alpha-qe", "--rerank-n", 0)["rerank"]
    assert zero["chosen_on"] == "from the command line"
    for key in ("recall@1", "map@r", "r_precision"):
        assert zero["with"][key] == zero["without"][key]


def test_an_unknown_method_is_refused_with_the_valid_ones(
    run_cli: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        run_cli("evaluate", "--checkpoint", "best.pt", "--rerank", "qe")
    assert refused.value.code == 2
    assert "invalid choice: 'qe' (choose from 'none', 'aqe'" in capsys.readouterr().err
