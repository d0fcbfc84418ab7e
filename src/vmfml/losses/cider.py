"""CIDERLoss: compactness and dispersion on hyperspherical class prototypes (Ming, Sun, Dia and
Li, "How to Exploit Hyperspherical Embeddings for Out-of-Distribution Detection?", ICLR 2023).

The published method, as its official code (deeplearning-wisc/cider, `utils/losses.py`,
`CompLoss` and the EMA `DisLoss`, with `train_cider.py`'s defaults) computes it:

- every class has a unit prototype mu_c, set to the normalized class mean of the training set
  before the first step and then moved, sample by sample in batch order, to
  normalize(m mu_c + (1 - m) z_i) (`momentum` m = 0.5, the code's default and its CIFAR-100
  setting);
- compactness: (tau / 0.07) CE(mu . z / tau, y), over the updated prototypes taken as constants;
- dispersion: the mean over classes of log((1 / (C - 1)) sum_{j != c} exp(mu_c . mu_j / tau)),
  whose gradient reaches this batch's embeddings through their update of the prototypes;
- loss = w compactness + dispersion, with tau = 0.1 and w = 1 (the code's defaults).

The compactness term is the vMF loss with kappa = 1 / tau and per-sample EMA mean directions:
`kappa` here is 1 / tau (10), so that `--kappa` means what it means for the vMF loss.
Under torchrun every process updates the prototypes with the global batch, in rank order, so
that they stay the same everywhere and W processes train what one does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vmfml import distributed
from vmfml.directions.base import ClassSums
from vmfml.losses.base import BaseLoss, check_batch, refuse_unusable

# The official code's base temperature of the compactness term (CompLoss(base_temperature=0.07)).
BASE_TEMPERATURE = 0.07


class CIDERLoss(BaseLoss):
    prototypes: Tensor  # [C, D] unit rows (a buffer: moved by the update, not by the optimizer)

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        kappa: float = 10.0,
        momentum: float = 0.5,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa (1 / tau) must be a finite number > 0, got {kappa}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if num_classes < 2:
            raise ValueError(f"CIDER's dispersion needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.kappa = float(kappa)
        self.momentum = float(momentum)
        self.weight = float(weight)
        self.register_buffer("prototypes", torch.zeros(num_classes, embed_dim))
        self._last: dict[str, float] = {}

    def start(self, full_pass: ClassSums) -> None:
        """Prototypes from the class means of the training set at the initial weights."""
        sums, _ = full_pass()
        self.prototypes.copy_(F.normalize(sums.to(self.prototypes), dim=1))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """`embeddings` [B, D] (unit rows), `labels` [B] in [0, C): the CIDER loss, a scalar."""
        labels = check_batch(embeddings, labels, self.embed_dim, self.num_classes)
        gathered = distributed.global_batch(embeddings)
        # After the gather, so that every process refuses the same step.
        refuse_unusable(gathered, directional=True)
        x = F.normalize(gathered, dim=1)
        y = distributed.global_batch(labels)
        prototypes = self.prototypes.to(x.dtype).clone()
        for i in range(len(y)):  # in batch order, each sample sees the previous ones' update
            c = y[i]
            prototypes[c] = F.normalize(
                prototypes[c] * self.momentum + x[i] * (1.0 - self.momentum), dim=0
            )
        with torch.no_grad():
            self.prototypes.copy_(prototypes.detach())
        compact = F.cross_entropy(self.kappa * (x @ prototypes.detach().t()), y) / (
            self.kappa * BASE_TEMPERATURE
        )
        similarities = self.kappa * (prototypes @ prototypes.t())
        others = ~torch.eye(self.num_classes, dtype=torch.bool, device=x.device)
        dispersion = (
            torch.logsumexp(similarities.masked_fill(~others, -math.inf), dim=1)
            - math.log(self.num_classes - 1)
        ).mean()
        self._last = {
            "compactness": float(compact.detach()),
            "dispersion": float(dispersion.detach()),
        }
        return self.weight * compact + dispersion

    def log_values(self) -> dict[str, float]:
        return dict(self._last)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"prototypes": self.prototypes.clone()}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.prototypes.copy_(state["prototypes"])


def cider_loss(
    num_classes: int, embed_dim: int, *, kappa: float = 10.0, momentum: float = 0.5
) -> CIDERLoss:
    """CIDER: compactness (the vMF loss at kappa = 1 / tau on EMA prototypes) plus dispersion
    between prototypes; tau = 0.1, prototype momentum 0.5, w = 1 as in the authors' code."""
    return CIDERLoss(num_classes, embed_dim, kappa, momentum)
