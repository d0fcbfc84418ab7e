"""Losses: the vMF loss, its pure math, and the baselines it is compared with."""

from .base import BaseLoss
from .baselines import PMLClassifierLoss, PMLLoss, SoftmaxCrossEntropyLoss
from .functional import (
    log_bessel_iv,
    log_vmf_normalizer,
    vmf_logits,
    vmf_loss,
    vmf_mixture_logits,
)
from .registry import (
    LOSSES,
    MetricLoss,
    canonical_loss,
    create_loss,
    has_period,
    list_losses,
    loss_options,
)
from .vmf import VMFLoss

__all__ = [
    "LOSSES",
    "BaseLoss",
    "MetricLoss",
    "PMLClassifierLoss",
    "PMLLoss",
    "SoftmaxCrossEntropyLoss",
    "VMFLoss",
    "canonical_loss",
    "create_loss",
    "has_period",
    "list_losses",
    "log_bessel_iv",
    "log_vmf_normalizer",
    "loss_options",
    "vmf_logits",
    "vmf_loss",
    "vmf_mixture_logits",
]
