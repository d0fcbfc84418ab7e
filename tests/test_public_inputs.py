"""Every public function of vmfml.losses and vmfml.metrics refuses bad input with a ValueError
that names the argument, and accepts tensors that require grad (issue 21).

`ON_EMBEDDINGS` says how to call each public callable that takes embeddings `[N, D]` and class
labels `[N]`; each bad input of `BAD` goes into those two arguments. The other public names are
listed in `ELSEWHERE` with the test that holds them, and a test checks that no public name is
left out, so a new public function needs a line here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import vmfml.losses
import vmfml.metrics
from vmfml.losses import (
    PMLClassifierLoss,
    PMLLoss,
    SoftmaxCrossEntropyLoss,
    VMFLoss,
    canonical_loss,
    create_loss,
    has_period,
    list_losses,
    log_bessel_iv,
    log_vmf_normalizer,
    loss_options,
    vmf_logits,
    vmf_loss,
    vmf_mixture_logits,
)
from vmfml.metrics import (
    ExactSearch,
    classification_metrics,
    expected_calibration_error,
    knn,
    nearest_direction_accuracy,
    nmi,
    retrieval_metrics,
    spherical_kmeans,
)

N, D, C = 12, 4, 3
MU = torch.nn.functional.normalize(torch.eye(C, D) + 0.1, dim=1)


def _loss(name: str) -> Callable[[Tensor, Tensor], object]:
    return lambda x, y: create_loss(name, C, D)(x, y)


# name -> (call on embeddings x and labels y, the argument x goes to, whether y must be class
# indices in [0, C) or None when the call takes no labels).
ON_EMBEDDINGS: dict[str, tuple[Callable[[Tensor, Tensor], object], str, bool | None]] = {
    "VMFLoss": (lambda x, y: VMFLoss(C, D)(x, y), "embeddings", True),
    "VMFLoss.logits": (lambda x, y: VMFLoss(C, D).logits(x), "embeddings", None),
    "SoftmaxCrossEntropyLoss": (
        lambda x, y: SoftmaxCrossEntropyLoss(C, D)(x, y),
        "embeddings",
        True,
    ),
    "PMLLoss": (_loss("triplet"), "embeddings", True),  # proxy_anchor: a PMLClassifierLoss
    "PMLClassifierLoss": (_loss("proxy_anchor"), "embeddings", True),
    **{f"create_loss:{name}": (_loss(name), "embeddings", True) for name in list_losses()},
    "vmf_loss": (lambda x, y: vmf_loss(x, y, MU, 8.0), "x", True),
    "vmf_logits": (lambda x, y: vmf_logits(x, MU, 8.0), "x", None),
    "vmf_mixture_logits": (
        lambda x, y: vmf_mixture_logits(x, MU, torch.full((C,), 8.0)),
        "x",
        None,
    ),
    "classification_metrics": (
        lambda x, y: classification_metrics(x[..., :C], y),
        "logits",
        True,
    ),
    "nearest_direction_accuracy": (
        lambda x, y: nearest_direction_accuracy(x, MU, y),
        "embeddings",
        True,
    ),
    "retrieval_metrics": (
        lambda x, y: retrieval_metrics(x, y, ks=(1,), backend="torch"),
        "embeddings",
        False,
    ),
    "nmi": (lambda x, y: nmi(x, y, backend="torch"), "embeddings", False),
    "knn": (lambda x, y: knn(x, MU, 2, backend="torch"), "queries", None),
    "ExactSearch": (lambda x, y: ExactSearch(x, backend="torch").search(MU, 2), "gallery", None),
    "spherical_kmeans": (lambda x, y: spherical_kmeans(x, C, backend="torch"), "embeddings", None),
}
# Features before normalization, and logits: an all-zero row is a valid input there.
NOT_DIRECTIONS = {
    "SoftmaxCrossEntropyLoss",
    "create_loss:softmax",
    "create_loss:npair",
    "classification_metrics",
}
# Public names not called on embeddings here, and the tests that hold their inputs.
ELSEWHERE = {
    "LOSSES": "a table, not a function",
    "BaseLoss": "an abstract base: its subclasses above",
    "MetricLoss": "a Protocol",
    "canonical_loss": "test_the_registry_names_an_unknown_loss_or_strategy",
    "create_loss": "the create_loss:NAME cases above",
    "has_period": "test_the_registry_names_an_unknown_loss_or_strategy",
    "list_losses": "takes no input",
    "loss_options": "test_the_registry_names_an_unknown_loss_or_strategy",
    "log_bessel_iv": "test_bessel_and_normalizer_refuse_what_they_are_undefined_for",
    "log_vmf_normalizer": "test_bessel_and_normalizer_refuse_what_they_are_undefined_for",
    "expected_calibration_error": "test_calibration_needs_0_or_1_for_correct",
}


def good() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=g, dtype=torch.float64).float(), torch.arange(N) % C


def nan_row(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x[3, 1] = float("nan")
    return x, y


def inf_row(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x[5, 0] = float("inf")
    return x, y


def zero_row(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x[2] = 0.0
    return x, y


# bad input -> (make it from a good one, what the message must say besides the argument's name)
BAD: dict[str, tuple[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], str]] = {
    "NaN": (nan_row, r"NaN|not finite"),
    "infinite": (inf_row, r"infinite|not finite"),
    "zero-length vector": (zero_row, r"zero"),
    "one-dimensional": (lambda x, y: (x[:, 0], y), r"shape"),
    "no rows": (lambda x, y: (x[:0], y[:0]), r"empty|shape"),
    "label past the classes": (lambda x, y: (x, torch.where(y == 0, C, y)), r"\[0, "),
    "negative label": (lambda x, y: (x, y - 1), r"\[0, "),
    "labels of another length": (lambda x, y: (x, y[:-1]), r"entries|shape"),
}
LABEL_FAULTS = {"label past the classes", "negative label", "labels of another length"}
CLASS_INDEX_FAULTS = {"label past the classes", "negative label"}


def applies(name: str, fault: str) -> bool:
    _, _, class_labels = ON_EMBEDDINGS[name]
    if fault in LABEL_FAULTS and class_labels is None:
        return False
    if fault in CLASS_INDEX_FAULTS and not class_labels:
        return False
    if fault == "zero-length vector" and name in NOT_DIRECTIONS:
        return False
    return not (fault == "no rows" and class_labels is None and "logits" in name)


@pytest.mark.parametrize(
    ("name", "fault"),
    [(name, fault) for name in ON_EMBEDDINGS for fault in BAD if applies(name, fault)],
)
def test_bad_input_is_refused_with_a_value_error_naming_it(name: str, fault: str) -> None:
    call, argument, _ = ON_EMBEDDINGS[name]
    make, kind = BAD[fault]
    torch.manual_seed(0)
    with pytest.raises(ValueError) as refused:
        call(*make(*good()))
    message = str(refused.value)
    assert ("labels" if fault in LABEL_FAULTS else argument) in message, message
    assert re.search(kind, message), message


@pytest.mark.parametrize("name", list(ON_EMBEDDINGS))
def test_embeddings_that_require_grad_are_accepted(name: str) -> None:
    """Issue 21: retrieval_metrics raised torch's "mm(): functions with out=... arguments don't
    support automatic differentiation"."""
    call, _, _ = ON_EMBEDDINGS[name]
    x, y = good()
    torch.manual_seed(0)
    call(x.requires_grad_(), y)


def test_every_public_name_is_covered() -> None:
    public = set(vmfml.losses.__all__) | set(vmfml.metrics.__all__)
    called = {name.split(":")[0].split(".")[0] for name in ON_EMBEDDINGS}
    assert public - called - set(ELSEWHERE) == set()
    assert set(ELSEWHERE) <= public
    assert type(create_loss("triplet", C, D)) is PMLLoss
    assert type(create_loss("proxy_anchor", C, D)) is PMLClassifierLoss


@pytest.mark.parametrize(
    ("correct", "message"),
    [
        ([1, 0, 2], r"correct must hold 0 or 1 \(or bools\); got 2"),
        ([1.0, 0.5, 1.0], r"correct must hold 0 or 1 \(or bools\); got 0.5"),
        ([1, 0, float("nan")], r"correct must hold 0 or 1 \(or bools\); got nan"),
        ([[1, 0, 1]], r"correct must be a 1-D array \[N\], got shape \(1, 3\)"),
    ],
)
def test_calibration_needs_0_or_1_for_correct(correct: list[Any], message: str) -> None:
    """Issue 21: `correct=2` gave an ECE of 1.339."""
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(torch.tensor([0.9, 0.6, 0.8]), torch.tensor(correct))
    with pytest.raises(ValueError, match=r"confidences must be a 1-D array \[N\]"):
        expected_calibration_error(torch.tensor([[0.9, 0.6, 0.8]]), torch.tensor([1, 0, 1]))
    confidences = torch.tensor([0.9, 0.6, 0.8], requires_grad=True)
    assert expected_calibration_error(confidences, [True, False, True]) == pytest.approx(0.3)


def test_bessel_and_normalizer_refuse_what_they_are_undefined_for() -> None:
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match=r"x must be finite numbers >= 0"):
            log_bessel_iv(1.5, torch.tensor([1.0, bad]))
        with pytest.raises(ValueError, match=r"kappa must be finite numbers >= 0"):
            log_vmf_normalizer(torch.tensor([1.0, bad]), 8)
    kappa = torch.tensor([2.0], requires_grad=True)
    log_vmf_normalizer(kappa, 8).sum().backward()
    assert kappa.grad is not None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: canonical_loss("tripplet", "accumulate"), r"unknown loss 'tripplet'; valid: "),
        (lambda: loss_options("tripplet"), r"unknown loss 'tripplet'; valid: "),
        (lambda: has_period("tripplet"), r"unknown loss 'tripplet'; valid: "),
        # has_period raised KeyError: 'globl'; the others let the name through.
        (lambda: has_period("vmf", "globl"), r"unknown directions 'globl'; valid: "),
        (lambda: loss_options("vmf", "globl"), r"unknown directions 'globl'; valid: "),
        (lambda: canonical_loss("vmf", "globl"), r"unknown directions 'globl'; valid: "),
        (lambda: canonical_loss("vmf_ema", "globl"), r"unknown directions 'globl'; valid: "),
    ],
)
def test_the_registry_names_an_unknown_loss_or_strategy(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call()
    assert canonical_loss("triplet", "globl") == ("triplet", "globl")  # not a vMF loss: unused
