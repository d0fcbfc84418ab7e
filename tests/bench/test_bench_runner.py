"""The harness: one JSON line per run, resume, failures, time budget, worker processes.

Training is replaced by `bench_fake_trainer.train` (instant, metrics known from the settings), so
these tests check the harness itself; tests/bench/test_quick.py runs the real thing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from bench_fake_trainer import expected_accuracy

from vmfml.bench.profiles import Group, RunSpec, get_profile, plan
from vmfml.bench.runner import (
    append_script_record,
    git_commit,
    read_records,
    results_path,
    run_benchmark,
    script_provenance,
)

FAKE = "bench_fake_trainer:train"
HERE = Path(__file__).resolve().parent


def spec(method_loss: str, seed: int = 0, phase: str = "p", depth: int = 1) -> RunSpec:
    settings = {"loss": method_loss, "depth": depth, "epochs": 1, "seed": seed}
    return RunSpec(
        method_loss, seed, settings, [Group("classification", f"depth={depth}")], phase, phase
    )


def run(specs: list[RunSpec], results: Path, **kwargs: object) -> object:
    return run_benchmark(specs, results, profile="test", progress=False, train_fn=FAKE, **kwargs)  # type: ignore[arg-type]


def test_one_record_per_run_with_metrics_settings_and_provenance(tmp_path: Path) -> None:
    specs = [spec("vmf", 0), spec("softmax", 0), spec("vmf", 1, depth=2)]
    summary = run(specs, tmp_path)
    assert summary.finished == 3 and summary.errors == 0  # type: ignore[attr-defined]
    records = read_records(tmp_path)
    assert [r["run_id"] for r in records] == [s.run_id for s in specs]
    for record, s in zip(records, specs, strict=True):
        assert record["status"] == "ok"
        assert record["metrics"]["accuracy"] == pytest.approx(
            expected_accuracy(s.settings | {"depth": s.settings["depth"]})
        )
        assert "run" not in record["metrics"]
        assert record["timing"]["images_per_second"] == 1000.0
        assert record["settings"]["lr"] == 3e-3  # the full config, defaults filled in
        assert record["groups"] == [list(g) for g in s.groups]
        assert record["git_commit"] and record["machine"]["cpu_count"] >= 1
        assert record["concurrent_runs"] == 1 and record["wall_seconds"] >= 0
        assert len(record["history"]) == 1
        # checkpoints are removed, the run's folder stays
        assert not (tmp_path / "runs" / s.run_id / "checkpoint.pt").exists()


def test_rerun_skips_finished_and_diverged_runs_and_retries_errors(tmp_path: Path) -> None:
    specs = [spec("vmf"), spec("contrastive"), spec("npair"), spec("softmax")]
    first = run(specs, tmp_path)
    assert (first.finished, first.diverged, first.errors) == (2, 1, 1)  # type: ignore[attr-defined]
    statuses = {r["method"]: r["status"] for r in read_records(tmp_path)}
    assert statuses == {"vmf": "ok", "contrastive": "diverged", "npair": "error", "softmax": "ok"}
    error = next(r for r in read_records(tmp_path) if r["status"] == "error")
    assert "CUDA out of memory (simulated)" in error["error"] and "Traceback" in error["traceback"]

    second = run(specs, tmp_path)
    assert second.skipped_done == 3 and second.errors == 1  # type: ignore[attr-defined]
    assert len(read_records(tmp_path)) == 5  # only the failed run was tried again


def test_max_runs_then_resume_finishes_the_rest(tmp_path: Path) -> None:
    specs = [spec("vmf", seed) for seed in range(5)]
    assert run(specs, tmp_path, max_runs=2).finished == 2  # type: ignore[attr-defined]
    summary = run(specs, tmp_path)
    assert (summary.skipped_done, summary.finished) == (2, 3)  # type: ignore[attr-defined]
    assert sorted(r["seed"] for r in read_records(tmp_path)) == [0, 1, 2, 3, 4]


def test_truncated_last_line_is_ignored(tmp_path: Path) -> None:
    specs = [spec("vmf", 0), spec("vmf", 1)]
    run(specs[:1], tmp_path)
    with results_path(tmp_path).open("a") as f:
        f.write('{"run_id": "' + specs[1].run_id + '", "status": "o')  # killed mid-write
    summary = run(specs, tmp_path)
    assert summary.skipped_done == 1 and summary.finished == 1  # type: ignore[attr-defined]


def test_a_run_recorded_before_a_config_key_existed_is_not_rerun(tmp_path: Path) -> None:
    """Records of older code lack keys added since; their defaults reproduce the old behaviour."""
    old = spec("vmf", 0)
    run([old], tmp_path)
    [record] = read_records(tmp_path)
    del record["settings"]["global_init"]  # as written before the key existed
    record["run_id"] = "0123456789abcdef"  # the id its settings had then
    results_path(tmp_path).write_text(json.dumps(record) + "\n")

    again = spec("vmf", 0)
    again.groups.append(Group("kappa", "16"))  # a table planned after the run finished
    summary = run([again], tmp_path)
    assert (summary.skipped_done, summary.finished) == (1, 0)  # type: ignore[attr-defined]
    records = read_records(tmp_path)
    assert len(records) == 2  # the record again, now also in the new table cell, not retrained
    assert records[1]["run_id"] == "0123456789abcdef"
    assert records[1]["groups"] == [["classification", "depth=1"], ["kappa", "16"]]
    assert records[1]["metrics"] == records[0]["metrics"]
    assert run([again], tmp_path).skipped_done == 1  # type: ignore[attr-defined]
    assert len(read_records(tmp_path)) == 2  # nothing new to record


def test_time_budget_starts_no_run_that_cannot_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0.3")
    specs = [spec("vmf", seed) for seed in range(10)]
    start = time.monotonic()
    summary = run(specs, tmp_path, time_budget=1.0)
    elapsed = time.monotonic() - start
    # The first run has no estimate and starts; later ones start only while 0.3 s still fit.
    assert 2 <= summary.finished <= 4  # type: ignore[attr-defined]
    assert summary.finished + summary.skipped_for_time == 10  # type: ignore[attr-defined]
    assert elapsed < 2.0


@pytest.fixture()
def worker_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes are fresh interpreters: let them import the fake trainer too."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    )


def _interval(record: dict[str, object]) -> tuple[float, float]:
    start = dt.datetime.fromisoformat(str(record["started_at"])).timestamp()
    return start, start + float(record["wall_seconds"])  # type: ignore[arg-type]


@pytest.mark.slow  # worker processes start fresh interpreters that import torch
def test_parallel_workers_run_side_by_side_and_keep_phases_apart(
    tmp_path: Path, worker_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that the second worker has started before the first run ends, under load.
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "1.5")
    specs = [spec("vmf", s, phase="a") for s in range(4)] + [
        spec("softmax", s, phase="b") for s in range(2)
    ]
    summary = run(specs, tmp_path, jobs=2)
    assert summary.finished == 6  # type: ignore[attr-defined]
    records = {r["run_id"]: r for r in read_records(tmp_path)}
    assert {r["concurrent_runs"] for r in records.values()} == {2}
    a_end = max(_interval(records[s.run_id])[1] for s in specs[:4])
    b_start = min(_interval(records[s.run_id])[0] for s in specs[4:])
    assert b_start >= a_end - 0.05  # phase b waited for phase a
    overlap = _interval(records[specs[0].run_id])[1] > _interval(records[specs[1].run_id])[0]
    assert overlap  # the first two ran at once


@pytest.mark.slow
def test_parallel_deadline_stops_runs_in_flight(
    tmp_path: Path, worker_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "30")
    specs = [spec("vmf", s) for s in range(3)]
    start = time.monotonic()
    summary = run(specs, tmp_path, jobs=2, time_budget=2.0)
    assert time.monotonic() - start < 15
    assert (summary.finished, summary.cancelled, summary.not_started) == (0, 2, 1)  # type: ignore[attr-defined]
    assert read_records(tmp_path) == []


def test_quick_plan_records_fill_every_table_cell(tmp_path: Path) -> None:
    specs = plan(get_profile("quick"))
    run(specs, tmp_path)
    groups = {tuple(g) for r in read_records(tmp_path) for g in r["groups"]}
    assert groups == {tuple(g) for s in specs for g in s.groups}
    line = results_path(tmp_path).read_text().splitlines()[0]
    assert json.loads(line)["profile"] == "test"


@pytest.mark.slow
def test_a_run_cut_short_goes_on_from_its_checkpoint(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real training: a run interrupted after its first epoch (Ctrl-C, a session's end) resumes
    from that epoch's checkpoint and ends exactly where an uninterrupted run does."""
    from vmfml.train import loop

    settings = {"depth": 1, "width": 0.5, "batch_size": 100, "train_subset": 1500}
    one = RunSpec(
        "vmf", 0, {**settings, "loss": "vmf", "epochs": 2, "seed": 0}, [Group("c", "x")], "p", "p"
    )

    def bench(results: Path) -> object:
        return run_benchmark([one], results, profile="test", progress=False)

    bench(tmp_path / "whole")
    real_save = loop.atomic_save

    def save_then_interrupt(obj: object, path: Path) -> None:
        real_save(obj, path)
        if Path(path).name == loop.CHECKPOINT:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "atomic_save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        bench(tmp_path / "cut")
    monkeypatch.undo()
    assert read_records(tmp_path / "cut") == []
    [epoch_one] = loop.load_checkpoint(tmp_path / "cut" / "runs" / one.run_id / loop.CHECKPOINT)[
        "history"
    ]

    bench(tmp_path / "cut")
    [whole] = read_records(tmp_path / "whole")
    [resumed] = read_records(tmp_path / "cut")
    assert resumed["status"] == "ok" and resumed["resumed"] and "resumed" not in whole
    # Epoch 1 is the interrupted attempt's, timings included: it was not trained again.
    assert resumed["history"][0] == epoch_one and resumed["history"][1]["epoch"] == 2
    for key in ("accuracy", "classifier_accuracy"):
        assert resumed["metrics"][key] == pytest.approx(whole["metrics"][key], abs=1e-6), key
    last = resumed["history"][-1]["train_loss"]
    assert last == pytest.approx(whole["history"][-1]["train_loss"], rel=1e-5)


def test_the_tracked_results_folder_does_not_make_the_code_dirty(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    results = tmp_path / "my-results"  # a user's tracked results folder
    tables = [tmp_path / "benchmarks" / "results" / name for name in ("cpu-a", "cpu-b")]
    for folder in [results, *tables]:
        folder.mkdir(parents=True)
        (folder / "results.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")

    (results / "results.jsonl").write_text("{}\n{}\n")  # the benchmark appended a record
    commit, dirty = git_commit(ignore=results, repo=tmp_path)
    assert len(commit) == 40 and dirty is False
    assert git_commit(repo=tmp_path)[1] is True  # without `ignore` it counts
    # The project's own results folders never count: a rerun of cpu-b while cpu-a holds new
    # records of another rerun is made on clean code.
    (results / "results.jsonl").write_text("{}\n")
    (tables[0] / "results.jsonl").write_text("{}\n{}\n")
    assert git_commit(ignore=tables[1], repo=tmp_path)[1] is False
    assert git_commit(repo=tmp_path)[1] is False
    (tmp_path / "code.py").write_text("x = 2\n")  # the code changed
    assert git_commit(ignore=results, repo=tmp_path)[1] is True


def test_pretrained_runs_recorded_before_keep_start_existed_are_the_profiles_runs() -> None:
    """They kept their best trained epoch, as the profiles' keep_start false does: same id."""
    from vmfml.bench.profiles import get_profile, plan
    from vmfml.bench.runner import current_id

    specs = plan(get_profile("cpu"), ["retrieval"])
    pretrained = [s for s in specs if s.settings.get("pretrained")]
    scratch = [s for s in specs if not s.settings.get("pretrained")]
    assert pretrained and scratch
    for s in (pretrained[0], scratch[0]):
        old = {k: v for k, v in s.settings.items() if k != "keep_start"}
        assert current_id({"settings": old, "run_id": "0123456789abcdef"}) == s.run_id
    assert pretrained[0].settings["keep_start"] is False


def test_the_default_results_folder_is_ignored_by_git() -> None:
    import argparse
    import subprocess

    from vmfml.bench.commands import DEFAULT_RESULTS, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).results == DEFAULT_RESULTS == "runs/bench"
    root = HERE.parents[1]
    for path in (f"{DEFAULT_RESULTS}/results.jsonl", "bench-results/results.jsonl"):
        found = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", path], check=False)
        assert found.returncode == 0, path  # the old default too, for checkouts that have it


def test_no_progress_bar_outside_a_terminal_one_line_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    specs = [spec("vmf", 0), spec("vmf", 1)]
    run_benchmark(specs, tmp_path / "a", profile="test", progress=True, train_fn=FAKE)
    out, err = capsys.readouterr()
    assert "bench test" not in err and "\r" not in err  # captured stderr is no terminal
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "[ok] vmf seed 0 (classification depth=1)",
        "[ok] vmf seed 1 (classification depth=1)",
    ]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_benchmark(specs, tmp_path / "b", profile="test", progress=True, train_fn=FAKE)
    assert "bench test" in terminal.getvalue()  # in a terminal the bar is drawn


@pytest.mark.parametrize("action", [[], ["report"], ["--dry-run"]])
def test_a_file_given_as_the_results_folder_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    from vmfml.cli import main

    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["bench", *action, "--results", str(a_file), "--max-runs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"vmfml bench: error: --results {a_file} is a file, not a folder: give the folder that "
        "holds (or is to hold) results.jsonl, results.md and the plots"
    ]


@pytest.mark.parametrize("action", [["report"], ["--dry-run"]])
def test_a_json_array_line_in_a_results_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    from vmfml.cli import main

    results_path(tmp_path).write_text("[1, 2, 3]\n")
    assert main(["bench", *action, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"vmfml bench: error: {results_path(tmp_path)}:1 is a JSON list, not a run's record"
    )


def test_a_script_record_carries_the_provenance_of_its_start(tmp_path: Path) -> None:
    path = tmp_path / "results" / "references.jsonl"
    provenance = script_provenance(path)
    assert (provenance["git_commit"], provenance["git_dirty"]) == git_commit(ignore=path.parent)
    assert provenance["machine"]["cpu_count"] >= 1
    for seed in (0, 1):
        append_script_record(path, {"kind": "untrained", "seed": seed}, provenance)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["kind"], r["seed"]) for r in lines] == [("untrained", 0), ("untrained", 1)]
    assert all(r["git_commit"] == provenance["git_commit"] and "finished_at" in r for r in lines)


def test_rerun_dirty_makes_again_only_the_runs_of_dirty_trees_and_they_replace_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmfml.bench import runner
    from vmfml.bench.report import latest_records

    specs = [spec("vmf", 0), spec("vmf", 1), spec("softmax", 0)]
    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("a" * 40, True))
    run(specs[:2], tmp_path)  # made on a tree with uncommitted changes
    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("b" * 40, False))
    run(specs[2:], tmp_path)
    [old] = [r for r in read_records(tmp_path) if r["seed"] == 1]
    # Its stored id was hashed before a key existed: the rerun must still replace it.
    lines = [json.loads(line) for line in results_path(tmp_path).read_text().splitlines()]
    for line in lines:
        if line["seed"] == 1:
            del line["settings"]["global_init"]
            line["run_id"] = "0123456789abcdef"
    results_path(tmp_path).write_text("".join(json.dumps(line) + "\n" for line in lines))

    assert run(specs, tmp_path).skipped_done == 3  # type: ignore[attr-defined]
    summary = run(specs, tmp_path, rerun_dirty=True)
    assert (summary.skipped_done, summary.finished) == (1, 2)  # type: ignore[attr-defined]
    rerun = [r for r in read_records(tmp_path) if r.get("replaces")]
    assert [r["replaces"] for r in rerun] == [specs[0].run_id, "0123456789abcdef"]
    latest = latest_records(read_records(tmp_path))
    assert len(latest) == 3 and not any(r["git_dirty"] for r in latest)
    assert {r["git_commit"] for r in latest} == {"b" * 40}
    assert [r for r in latest if r["seed"] == 1][0]["metrics"] == old["metrics"]
    assert run(specs, tmp_path, rerun_dirty=True).skipped_done == 3  # type: ignore[attr-defined]

    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("c" * 40, True))
    with pytest.raises(ValueError, match="uncommitted changes"):
        run(specs, tmp_path, rerun_dirty=True)


def test_rerun_ids_makes_named_runs_again_once_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmfml.bench import runner
    from vmfml.bench.report import latest_records

    specs = [spec("vmf", 0), spec("vmf", 1)]
    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("a" * 40, False))
    run(specs, tmp_path)
    with pytest.raises(ValueError, match="no finished run has the id"):
        run(specs, tmp_path, rerun_ids=["feedfacefeedface"])
    # Made by this very code already: nothing to do.
    assert run(specs, tmp_path, rerun_ids=[specs[1].run_id]).finished == 0  # type: ignore[attr-defined]
    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("b" * 40, False))
    extra = spec("vmf", 1)
    extra.groups.append(Group("kappa", "16"))  # the run is also an ablation's default point
    run([extra], tmp_path)  # recorded again in that cell too, not retrained
    summary = run(specs, tmp_path, rerun_ids=[specs[1].run_id])  # a plan without the ablation
    assert (summary.skipped_done, summary.finished) == (1, 1)  # type: ignore[attr-defined]
    assert read_records(tmp_path)[-1]["groups"] == [["classification", "depth=1"], ["kappa", "16"]]
    assert run(specs, tmp_path, rerun_ids=[specs[1].run_id]).finished == 0  # type: ignore[attr-defined]
    latest = latest_records(read_records(tmp_path))
    assert sorted((r["seed"], r["git_commit"][0]) for r in latest) == [(0, "a"), (1, "b")]
    monkeypatch.setattr(runner, "git_commit", lambda ignore=None: ("c" * 40, None))
    with pytest.raises(ValueError, match="outside a git checkout"):
        run(specs, tmp_path, rerun_ids=[specs[1].run_id])
