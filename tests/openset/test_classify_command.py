"""`vmfml classify` on a real trained run: nearest-class accuracy as `evaluate` reports it,
rejection at the stored keep rate, the classifier fitted once for an older run, every format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

KNOWN = ["tshirt", "trouser", "pullover", "dress"]


@pytest.fixture()
def trained_run(
    tmp_path: Path, fashion_folder: Callable[..., Path], run_cli: Callable[..., Any]
) -> tuple[Path, Path]:
    """A run on 4 classes x 60 real images (standard split), and the test images' list file."""
    from vmfml.train.config import load_config
    from vmfml.train.datasets import build_datasets

    data = fashion_folder(KNOWN, 60)
    out = tmp_path / "run"
    quick = "--depth 1 --width 0.5 --batch-size 100 --plots false --progress false --threads 1"
    train = [*quick.split(), "--epochs", 2, "--val-fraction", 0.25, "--augment", "none"]
    assert run_cli("train", "--data", data, *train, "--out-dir", out).code == 0
    config = load_config(out / "config.yaml")
    test = build_datasets(config).test
    listing = tmp_path / "test.txt"
    listing.write_text("\n".join(test.paths) + "\n")
    return out, listing


@pytest.fixture()
def unseen(fashion_folder: Callable[..., Path]) -> Path:
    """30 real images of each of the six Fashion-MNIST classes the run never saw."""
    others = ["coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    folder = fashion_folder([*KNOWN, *others], 30, name="unseen")
    for name in KNOWN:
        for f in (folder / name).glob("*"):
            f.unlink()
        (folder / name).rmdir()
    return folder


def _rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_classify_without_rejection_reproduces_evaluates_accuracy(
    trained_run: tuple[Path, Path], run_cli: Callable[..., Any]
) -> None:
    run, listing = trained_run
    metrics = json.loads((run / "metrics.json").read_text())
    result = run_cli(
        "classify",
        "--checkpoint",
        run,
        "--list",
        listing,
        "--format",
        "jsonl",
        "--no-reject",
        "--no-progress",
    )
    assert result.code == 0, result.err
    rows = _rows(result.out)
    truth = [Path(r["path"]).parent.name for r in rows]
    accuracy = sum(r["class"] == t for r, t in zip(rows, truth, strict=True)) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1.5 / len(rows))  # ties aside
    assert all(r["label"] != "unknown" for r in rows)


def test_rejection_flags_what_scores_past_the_threshold_that_keeps_95_percent(
    trained_run: tuple[Path, Path], unseen: Path, run_cli: Callable[..., Any]
) -> None:
    from vmfml.openset import OpenSetClassifier

    run, listing = trained_run
    result = run_cli("classify", unseen, "--checkpoint", run, "--format", "jsonl", "--no-progress")
    assert result.code == 0, result.err
    assert "keeps 95% of the held-out images" in result.err
    stored = OpenSetClassifier.load(run / "classifier.pt")
    held_out = stored.held_out_scores[stored.score]
    assert stored.info["fitted_on"] == "held-out images" and len(held_out) == 48
    assert (held_out <= stored.threshold).double().mean() >= 0.95
    assert (held_out < stored.threshold).double().mean() < 0.95  # the smallest such threshold
    rows = _rows(result.out)
    assert len(rows) == 180
    assert all((r["label"] == "unknown") == (r["score"] > stored.threshold) for r in rows)
    looser = _rows(
        run_cli(
            "classify",
            unseen,
            "--checkpoint",
            run,
            "--format",
            "jsonl",
            "--no-progress",
            "--keep-rate",
            "0.5",
        ).out
    )
    assert sum(r["label"] == "unknown" for r in looser) >= sum(
        r["label"] == "unknown" for r in rows
    )


def test_an_older_run_gets_its_classifier_fitted_once_and_formats_agree(
    trained_run: tuple[Path, Path], run_cli: Callable[..., Any]
) -> None:
    run, listing = trained_run
    (run / "classifier.pt").unlink()
    first = run_cli(
        "classify",
        "--checkpoint",
        run,
        "--list",
        listing,
        "--format",
        "csv",
        "-k",
        "2",
        "--no-progress",
    )
    assert first.code == 0, first.err
    assert "fitting it once" in first.err and (run / "classifier.pt").is_file()
    table = run_cli("classify", "--checkpoint", run, "--list", listing, "-k", "2", "--no-progress")
    assert "fitting it once" not in table.err
    rows = list(csv.DictReader(io.StringIO(first.out)))
    assert len(rows) == len(listing.read_text().split())
    assert all(len(r["top"].split(";")) == 2 for r in rows)
    lines = table.out.splitlines()
    assert lines[0].split()[:3] == ["label", "prob", "score"]
    assert [line.split()[0] for line in lines[1:]] == [r["label"] for r in rows]


def test_bad_input_gets_one_line(
    trained_run: tuple[Path, Path], tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    run, listing = trained_run
    missing = run_cli("classify", "--checkpoint", run, "--list", tmp_path / "nope.txt")
    assert missing.code == 2 and "nope.txt: no such file" in missing.err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    stop = run_cli("classify", broken, "--checkpoint", run, "--no-progress")
    assert stop.code == 2 and "broken.png" in stop.err
    skip = run_cli(
        "classify",
        broken,
        "--checkpoint",
        run,
        "--list",
        listing,
        "--on-error",
        "skip",
        "--no-progress",
        "--format",
        "jsonl",
    )
    assert skip.code == 0 and "skipping image" in skip.err and "broken.png" not in skip.out


def test_evaluate_unknown_reports_every_score_as_classify_decides(
    trained_run: tuple[Path, Path], unseen: Path, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    run, listing = trained_run
    out = tmp_path / "metrics.json"
    result = run_cli(
        "evaluate", "--checkpoint", run, "--unknown", unseen, "--out", out, "--no-progress"
    )
    assert result.code == 0, result.err
    metrics = json.loads(out.read_text())
    report = metrics["open_set"]
    assert report["known_images"] == 48 and report["unknown_images"] == 180
    assert set(report["scores"]) == {
        "vmf_likelihood",
        "max_posterior",
        "max_cosine",
        "energy",
        "knn",
    }
    assert report["closed_set_accuracy"] == pytest.approx(metrics["accuracy"], abs=1.5 / 48)
    for name in ("knn", "energy"):
        rows = _rows(
            run_cli(
                "classify",
                unseen,
                "--checkpoint",
                run,
                "--score",
                name,
                "--format",
                "jsonl",
                "--no-progress",
            ).out
        )
        flagged = sum(r["label"] == "unknown" for r in rows) / len(rows)
        assert report["scores"][name]["flagged"] == pytest.approx(flagged, abs=1e-12)
    # With rejection on, classify keeps of the known test images the share evaluate reports as
    # `kept`, about the 95% the threshold keeps of the held-out images (48 test images here).
    known_rows = _rows(
        run_cli(
            "classify", "--checkpoint", run, "--list", listing, "--format", "jsonl", "--no-progress"
        ).out
    )
    kept = sum(r["label"] != "unknown" for r in known_rows) / len(known_rows)
    assert len(known_rows) == 48 and report["keep_rate"] == 0.95
    assert report["scores"][report["score"]]["kept"] == pytest.approx(kept, abs=1e-12)
    assert kept >= 0.8
    assert "open set: 48 test images of the known classes against 180 unknown images" in result.out
    refused = run_cli("evaluate", "--checkpoint", run, "--unknown", tmp_path / "nowhere")
    assert refused.code == 2 and "nowhere: no such file or folder" in refused.err


def test_evaluate_reports_calibration_and_draws_the_reliability_diagram(
    trained_run: tuple[Path, Path], tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    run, _ = trained_run
    trained = json.loads((run / "metrics.json").read_text())["calibration"]
    assert trained["before"]["kappa"] == 16.0 and trained["fitted_on"] == "held-out images"
    png, out = tmp_path / "reliability.png", tmp_path / "m.json"
    result = run_cli(
        "evaluate", "--checkpoint", run, "--reliability", png, "--out", out, "--no-progress"
    )
    assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = json.loads(out.read_text())["calibration"]
    assert again["after"]["ece"] == pytest.approx(trained["after"]["ece"], abs=1e-6)
    assert "calibration of the vMF posterior on the test images: ECE" in result.out
