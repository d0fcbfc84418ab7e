"""The posterior's calibration report, against a brute-force ECE and NLL in numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vmfml.openset import OpenSetClassifier
from vmfml.train.open_set import calibration_report, calibration_summary, describe_calibration


def _data(seed: int, per_class: int = 60, dim: int = 10, classes: int = 5):
    centres = torch.nn.functional.normalize(
        torch.randn(classes, dim, generator=torch.Generator().manual_seed(100)), dim=1
    )
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    emb = centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=g)
    return torch.nn.functional.normalize(emb, dim=1), labels


def _brute_force(emb: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor, kappa: float):
    logits = kappa * emb.double().numpy() @ mu.double().numpy().T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    conf, best = probs.max(1), probs.argmax(1)
    hit = (best == labels.numpy()).astype(float)
    ece = 0.0
    for b in range(15):  # right-closed bins (b/15, (b+1)/15]
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            ece += inside.sum() / len(conf) * abs(conf[inside].mean() - hit[inside].mean())
    nll = -np.log(probs[np.arange(len(labels)), labels.numpy()]).mean()
    return ece, nll


def test_ece_and_nll_before_and_after_equal_brute_force() -> None:
    train, val, test = _data(0), _data(1), _data(2)
    model = OpenSetClassifier.fit([str(c) for c in range(5)], train, val)
    report = calibration_report(model, test, trained_kappa=40.0)
    for key, kappa in (("before", 40.0), ("after", model.kappa)):
        ece, nll = _brute_force(*test, model.mean_directions, kappa)
        assert report[key]["kappa"] == kappa
        assert report[key]["ece"] == pytest.approx(ece, abs=1e-9)
        assert report[key]["nll"] == pytest.approx(nll, rel=1e-9)
    # the fitted kappa is the likelihood's best on held-out images of the same distribution
    assert report["after"]["nll"] < report["before"]["nll"]
    summary = calibration_summary(report)
    assert "confidence" not in summary["after"] and summary["fitted_on"] == "held-out images"
    assert "at the trained kappa 40" in describe_calibration(summary)


def test_a_loss_without_kappa_has_no_before() -> None:
    train, test = _data(3), _data(4)
    model = OpenSetClassifier.fit([str(c) for c in range(5)], train)
    report = calibration_report(model, test, trained_kappa=None)
    assert report["before"] is None and report["fitted_on"] == "training images"
    assert describe_calibration(calibration_summary(report)).startswith(
        "calibration of the vMF posterior on the test images: ECE"
    )
