"""The quick profile end to end on real data: the harness trains, records, resumes and reports.

It asserts that everything ran and was written, not what the numbers are (1 epoch on 1,000
images says nothing about the losses).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmfml.bench.profiles import get_profile, plan

pytestmark = pytest.mark.slow


def test_quick_profile_runs_records_resumes_and_reports(
    tmp_path: Path, fashion_sample: object, run_cli
) -> None:
    results = tmp_path / "bench"
    quick = ["--profile", "quick", "--results", results, "--device", "cpu", "--no-progress"]
    assert run_cli("bench", *quick).code == 0

    specs = plan(get_profile("quick"))
    records = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in records] == [s.run_id for s in specs]
    for record in records:
        assert record["status"] == "ok", record.get("error")
        assert record["timing"]["images_per_second"] > 0 and record["wall_seconds"] > 0
        assert record["machine"]["device"] == "cpu" and record["git_commit"]
        retrieval = any(g[0] != "classification" for g in record["groups"])
        keys = (
            ("recall@1", "recall@8", "map@r", "nmi")
            if retrieval
            else ("classifier_accuracy", "accuracy", "ece")
        )
        for key in keys:
            assert 0.0 <= record["metrics"][key] <= 1.0, key
        assert not (results / "runs" / record["run_id"] / "checkpoint.pt").exists()
        assert (results / "runs" / record["run_id"] / "metrics.json").is_file()

    report = (results / "results.md").read_text()
    for heading in (
        "## Classification",
        "### Backbone: small_cnn",
        "## Ablation: concentration kappa",
        "## Cost",
    ):
        assert heading in report
    for method in ("softmax", "vmf-global", "vmf-accumulate", "triplet"):
        assert f"| {method} |" in report
    for plot in ("accuracy_vs_depth.png", "recall_at_1.png", "ablations.png"):
        assert (results / plot).stat().st_size > 0

    # A second invocation finds every run done and trains nothing.
    assert run_cli("bench", *quick).code == 0
    assert len((results / "results.jsonl").read_text().splitlines()) == len(specs)
