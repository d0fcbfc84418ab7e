"""What classifying new images needs, fitted from a run's data: `fit_run_classifier`.

`vmfml train` writes it beside best.pt at the end of a run (`CLASSIFIER`); `vmfml classify`
and `vmfml evaluate --unknown` fit it once for a run made before that, and say so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vmfml.openset.classifier import OpenSetClassifier
from vmfml.train.batches import embed_dataset
from vmfml.train.datasets import DataSplit
from vmfml.train.run_folder import CLASSIFIER


def classifier_file(model_path: str | Path) -> Path:
    """The classifier file that goes with a model file (best.pt or any checkpoint): beside it."""
    return Path(model_path).parent / CLASSIFIER


def fit_run_classifier(
    model: torch.nn.Module,
    data: DataSplit,
    device: torch.device,
    batch_size: int = 512,
    progress: bool = True,
    precision: str = "32",
) -> OpenSetClassifier:
    """Embed the run's training images (and its validation images when they are of the training
    classes) and fit the classifier: mean directions, concentrations, every rejection score's
    held-out values. A class-disjoint run has no held-out images of its training classes, so the
    thresholds then come from the training images themselves (knn skipping each own match)."""

    def embed(dataset: Any, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        return unit_embeddings(model, dataset, device, batch_size, progress, desc, precision)

    train = embed(data.train, "embed training images")
    held_out = None
    if data.val is not None and not data.disjoint:
        held_out = embed(data.val, "embed validation images")
    return OpenSetClassifier.fit(list(data.train.class_names), train, held_out)


def unit_embeddings(
    model: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    batch_size: int = 512,
    progress: bool = True,
    desc: str = "embed",
    precision: str = "32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings [N, D] of a whole data set and its labels [N] (int64)."""
    preprocessing: dict[str, Any] = dict(model.preprocessing)  # type: ignore[arg-type]
    feats, labels = embed_dataset(
        model, dataset, preprocessing, device, batch_size, 0, progress, desc, precision
    )
    return F.normalize(feats, dim=1), labels.to(torch.int64)


def embed_unknown(
    model: torch.nn.Module,
    dataset: Any,
    device: torch.device,
    batch_size: int = 512,
    progress: bool = True,
    precision: str = "32",
) -> torch.Tensor:
    """Unit embeddings [M, D] of the images of classes the model never saw (--split open-set)."""
    emb, _ = unit_embeddings(
        model, dataset, device, batch_size, progress, "embed unknown", precision
    )
    return emb


def load_or_fit_classifier(
    model: torch.nn.Module,
    model_path: str | Path,
    config: Any,
    device: torch.device,
    progress: bool = True,
) -> OpenSetClassifier:
    """The run's classifier file when it exists; otherwise fitted from the run's data (said on
    stderr) and written beside the model when that folder is writable."""
    from vmfml.train.datasets import build_datasets

    path = classifier_file(model_path)
    if path.is_file():
        return OpenSetClassifier.load(path)
    print(
        f"vmfml: {path} not found (a run made before classification was stored): fitting it "
        "once from the run's training data",
        file=sys.stderr,
    )
    classifier = fit_run_classifier(model, build_datasets(config), device, progress=progress)
    try:
        classifier.save(path)
        print(f"vmfml: wrote {path}", file=sys.stderr)
    except OSError as err:
        print(f"vmfml: could not write {path} ({err}); it will be fitted again", file=sys.stderr)
    return classifier


def open_set_report(
    classifier: OpenSetClassifier,
    known: tuple[torch.Tensor, torch.Tensor],
    unknown: torch.Tensor,
) -> dict[str, Any]:
    """Open-set figures of test images of the known classes against images of no known class.

    For every score: AUROC, AUPR-IN, AUPR-OUT, FPR@95 and FPR95TPR (`open_set_metrics`), and at
    its threshold from the held-out images the share of known test images kept (`kept`, to set
    beside the stated keep rate) and of unknown images flagged (`flagged`). Then, for the
    classifier's own score: `closed_set_accuracy` (best class, no rejection), and with rejection
    `known_accuracy` (known images both kept and right, over the known images) and
    `open_set_accuracy` (known images kept and right plus unknown images flagged, over all).

    Args:
        known: unit embeddings [N, D] of known-class test images and their class indices [N].
        unknown: unit embeddings [M, D] of images of classes the model never saw.
    """
    from vmfml.openset.functional import SCORES, open_set_metrics

    emb, labels = known
    scores: dict[str, Any] = {}
    for name in SCORES:
        chosen = classifier.configured(score=name)
        known_scores, unknown_scores = chosen.scores(emb), chosen.scores(unknown)
        scores[name] = {
            **open_set_metrics(known_scores, unknown_scores),
            "threshold": chosen.threshold,
            "kept": float((known_scores <= chosen.threshold).double().mean()),
            "flagged": float((unknown_scores > chosen.threshold).double().mean()),
        }
    right = classifier.predict(emb).label == labels
    kept = classifier.predict(emb).unknown.logical_not()
    flagged = classifier.predict(unknown).unknown
    total = len(labels) + len(unknown)
    return {
        "score": classifier.score,
        "keep_rate": classifier.keep_rate,
        "threshold_from": classifier.info.get("fitted_on"),
        "known_images": len(labels),
        "unknown_images": len(unknown),
        "closed_set_accuracy": float(right.double().mean()),
        "known_accuracy": float((right & kept).double().mean()),
        "open_set_accuracy": float(((right & kept).sum() + flagged.sum()) / total),
        "scores": scores,
    }


def calibration_report(
    classifier: OpenSetClassifier,
    known: tuple[torch.Tensor, torch.Tensor],
    trained_kappa: float | None,
) -> dict[str, Any]:
    """How well the vMF posterior's probabilities match how often it is right, on test images of
    the known classes: ECE (15 bins) and NLL at the concentration the loss trained with
    (`before`; None for a loss without one) and at the one fitted on held-out images (`after`),
    with each image's confidence for a reliability diagram."""
    from vmfml.metrics.classification import expected_calibration_error
    from vmfml.openset.functional import posteriors

    emb, labels = known

    def at(kappa: float) -> dict[str, Any]:
        probs = posteriors(emb, classifier.mean_directions, kappa)
        confidence, best = probs.max(dim=1)
        correct = best == labels
        return {
            "kappa": kappa,
            "ece": expected_calibration_error(confidence, correct),
            "nll": float(-probs.gather(1, labels[:, None]).clamp_min(1e-300).log().mean()),
            "confidence": confidence,
            "correct": correct,
        }

    return {
        "fitted_on": classifier.info.get("fitted_on"),
        "before": None if trained_kappa is None else at(trained_kappa),
        "after": at(classifier.kappa),
    }


def calibration_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the per-image arrays: what metrics.json keeps."""
    return {
        key: (
            {k: v for k, v in value.items() if k not in ("confidence", "correct")}
            if isinstance(value, dict)
            else value
        )
        for key, value in report.items()
    }


def trained_kappa(loss: Any) -> float | None:
    """The shared concentration a vMF loss trained with; None for other losses."""
    kappa = getattr(loss, "kappa", None)
    return None if kappa is None else float(kappa)


def describe_calibration(summary: dict[str, Any]) -> str:
    """One line for the console from `calibration_summary`."""
    after = summary["after"]
    fitted = (
        f"ECE {after['ece']:.4f} at kappa {after['kappa']:.3g} (fitted on {summary['fitted_on']})"
    )
    before = summary.get("before")
    if before is None:
        return f"calibration of the vMF posterior on the test images: {fitted}"
    return (
        f"calibration of the vMF posterior on the test images: ECE {before['ece']:.4f} at the "
        f"trained kappa {before['kappa']:.3g} -> {fitted}"
    )


def print_open_set_figures(metrics: dict[str, Any]) -> None:
    """The calibration line and the open-set table of a metrics dict, where it has them."""
    if "calibration" in metrics:
        print(describe_calibration(metrics["calibration"]))
    report = metrics.get("open_set")
    if report is None:
        return
    print(
        f"\nopen set: {report['known_images']} test images of the known classes against "
        f"{report['unknown_images']} unknown images"
    )
    print(
        f"  {'score':<15} {'AUROC':>6} {'AUPR-IN':>8} {'AUPR-OUT':>8} {'FPR@95':>7} "
        f"{'kept':>6} {'flagged':>8}"
    )
    for name, s in report["scores"].items():
        mark = "*" if name == report["score"] else " "
        print(
            f" {mark}{name:<15} {s['auroc']:>6.4f} {s['aupr_in']:>8.4f} {s['aupr_out']:>8.4f} "
            f"{s['fpr_at_95']:>7.4f} {s['kept']:>6.3f} {s['flagged']:>8.3f}"
        )
    print(
        f"  * decides (threshold keeps {report['keep_rate']:.0%} of the "
        f"{report['threshold_from']}): closed-set accuracy {report['closed_set_accuracy']:.4f}, "
        f"with rejection {report['known_accuracy']:.4f} of the known images kept and right, "
        f"open-set accuracy {report['open_set_accuracy']:.4f}"
    )
