"""VMFLoss: the paper's loss, a softmax over kappa-scaled cosines to class mean directions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vmfml.directions import GlobalDirections, MeanDirections, create_directions
from vmfml.directions.base import ClassSums, FullPassEmbeddings
from vmfml.directions.subcentres import class_sums, estimate_subcentres

from .base import (
    BaseLoss,
    NonFiniteEmbeddings,
    check_batch,
    check_rows,
    refuse_unusable,
    unusable_rows,
)
from .functional import (
    arc_margin,
    proxy_anchor_of_cosines,
    vmf_logits_unchecked,
    vmf_mixture_logits_of_cosines,
    vmf_mixture_logits_unchecked,
    vmf_subcentre_logits,
)

WEIGHTINGS = ("softmax", "proxy-anchor")

# NonFiniteEmbeddings lives in .base, shared by every loss; named here too, where it began.
__all__ = ["NonFiniteEmbeddings", "VMFLoss"]


class VMFLoss(BaseLoss):
    """von Mises-Fisher loss with a pluggable mean-direction strategy.

    L = -(1/B) sum_i log softmax_c(kappa mu_c . x_i)[y_i], x_i = embeddings_i / ||embeddings_i||.

    In training mode every forward pass hands the detached unit embeddings to
    `directions.observe(x, labels)`; the strategy's own `start` and `end_period` (called by the
    trainer through this loss) decide when and from what mu is re-estimated.

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        kappa: the concentration (> 0), shared by all classes.
        directions: a strategy name ("accumulate", "global", "ema", "learned") or a built
            MeanDirections.
        learn_kappa: train kappa by gradient descent, parameterised as log kappa (so it stays
            positive and its steps are relative).
        class_kappa: lambda in [0, 1]: 0 (the paper) gives every class the one kappa; above 0
            each class has its own, kappa_c = kappa * (k_c / g)^lambda with k_c the class's
            concentration estimated from its mean resultant length at each refresh and g their
            geometric mean (so lambda shrinks log k_c towards the shared log kappa, and kappa
            stays the typical concentration), in the exact mixture posterior, where the
            normalizers log C_d(kappa_c) no longer cancel (`vmf_mixture_logits`). Needs a
            strategy that refreshes from class sums (accumulate, global).
        angular_margin: m >= 0 radians, below pi/2: an additive angular margin on the true class in
            training, whose logit becomes kappa cos(theta + m) with theta its angle to the mean
            direction (ArcFace's margin, `arc_margin`); 0 (the paper): none. `logits` (the
            posterior, classification) never has it.
        subcentres: K >= 1 mean directions per class: each class a mixture of K vMF components
            with weights, its logit log sum_k w_ck exp(kappa mu_ck . x) (`vmf_subcentre_logits`),
            the centres and weights from spherical k-means within each class over the full pass
            of every refresh (`directions.subcentres.estimate_subcentres`). Needs directions
            "global"; until the first estimate every sub-centre is the class's mean direction.
            1 (the paper): one mean direction.
        weighting: how the training loss weighs the batch against the mean directions:
            "softmax" (the paper: cross-entropy of the logits) or "proxy-anchor" (Proxy-Anchor's
            loss with the mean directions as its anchors, `proxy_anchor_of_cosines`: each
            direction pulls its hardest members and pushes the hardest others, scale 32, margin
            0.1; the posterior, `logits`, stays kappa mu . x). Needs one direction per class,
            one fixed kappa and no margin.
        **direction_opts: options of the named strategy (e.g. momentum, init_seed).

    Example:
        >>> loss_fn = VMFLoss(num_classes=3, embed_dim=4, kappa=10.0)
        >>> loss = loss_fn(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape
        torch.Size([])
    """

    has_classifier: bool = True
    fixed_kappa: Tensor  # a buffer, when kappa is fixed
    log_kappa: nn.Parameter  # when learn_kappa
    subcentre_mu: Tensor  # [C, K, D] buffer, when subcentres > 1
    subcentre_log_weights: Tensor  # [C, K] buffer, when subcentres > 1

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        kappa: float = 16.0,
        directions: str | MeanDirections = "accumulate",
        learn_kappa: bool = False,
        class_kappa: float = 0.0,
        angular_margin: float = 0.0,
        subcentres: int = 1,
        weighting: str = "softmax",
        **direction_opts: Any,
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        if weighting != "softmax":
            clashes = [
                name
                for name, clash in (
                    ("learn_kappa", learn_kappa),
                    ("class_kappa", class_kappa > 0),
                    ("angular_margin", angular_margin > 0),
                    ("subcentres", subcentres > 1),
                )
                if clash
            ]
            if clashes:
                raise ValueError(
                    f"weighting {weighting!r} does not combine with {', '.join(clashes)}: its "
                    "loss has no kappa, and one direction per class"
                )
        kappa = float(kappa)
        if not 0.0 <= class_kappa <= 1.0:
            raise ValueError(f"class_kappa must lie in [0, 1], got {class_kappa}")
        margin = float(angular_margin)
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(
                "angular_margin must lie in [0, pi/2) radians (an angle added to the true "
                "class's; from pi/2 on, no angle gives the true class a positive cosine), "
                f"got {margin}"
            )
        if isinstance(subcentres, bool) or not isinstance(subcentres, int) or subcentres < 1:
            raise ValueError(
                "subcentres must be an integer >= 1 (mean directions per class), "
                f"got {subcentres!r}"
            )
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa must be a finite number > 0, got {kappa}")
        if isinstance(directions, MeanDirections):
            if direction_opts:
                raise ValueError(
                    f"options {sorted(direction_opts)} only apply when directions is given by "
                    "name; configure the MeanDirections instance instead"
                )
            if (directions.num_classes, directions.embed_dim) != (num_classes, embed_dim):
                raise ValueError(
                    f"directions hold {directions.num_classes} classes x {directions.embed_dim} "
                    f"dims, but the loss was given {num_classes} x {embed_dim}"
                )
            self.directions = directions
        elif isinstance(directions, str):
            self.directions = create_directions(
                directions, num_classes, embed_dim, **direction_opts
            )
        else:
            raise ValueError(
                f"directions must be a strategy name or a MeanDirections, got {type(directions)}"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.learn_kappa = learn_kappa
        self.has_period = self.directions.has_period
        if class_kappa > 0 and not self.directions.has_period:
            raise ValueError(
                "class_kappa needs mean directions refreshed from class sums (accumulate or "
                f"global), not {type(self.directions).__name__}"
            )
        self.class_kappa = float(class_kappa)
        self.angular_margin = margin
        self.subcentres = subcentres
        self.weighting = weighting
        if subcentres > 1:
            if not isinstance(self.directions, GlobalDirections):
                raise ValueError(
                    f"subcentres > 1 needs the global directions: the sub-centres come from "
                    f"spherical k-means over a full pass of the training set, not from "
                    f"{type(self.directions).__name__}"
                )
            if class_kappa > 0:
                raise ValueError("class_kappa and subcentres > 1 do not combine: choose one")
            # Until the first estimate, K copies of each mean direction, of equal weight: the
            # one-centre loss.
            mu = self.directions.directions().detach()
            self.register_buffer("subcentre_mu", mu[:, None, :].repeat(1, subcentres, 1))
            self.register_buffer(
                "subcentre_log_weights",
                torch.full((num_classes, subcentres), -math.log(subcentres), dtype=mu.dtype),
            )
        if learn_kappa:
            self.log_kappa = nn.Parameter(torch.tensor(math.log(kappa)))
        else:
            # Stored as given (not as its log), so a fixed kappa is exactly the number asked for.
            self.register_buffer("fixed_kappa", torch.tensor(kappa, dtype=torch.float64))

    @property
    def kappa(self) -> Tensor:
        """The concentration, a 0-d tensor (differentiable when learn_kappa)."""
        if self.learn_kappa:
            return self.log_kappa.exp()
        return self.fixed_kappa

    def class_kappas(self) -> Tensor | None:
        """The per-class concentrations [C] in use (None: one kappa for all classes, the case
        until the first refresh has estimated them)."""
        if self.class_kappa == 0:  # the paper's loss: nothing to compute on its hot path
            return None
        estimate = self.directions.concentration
        known = estimate > 0
        if not bool(known.any()):
            return None
        log_k = estimate.clamp_min(1e-6).log()
        # Classes never estimated sit at the geometric mean, i.e. at the shared kappa.
        log_k = torch.where(known, log_k, log_k[known].mean())
        relative = (self.class_kappa * (log_k - log_k.mean())).exp()
        return self.kappa * relative.to(self.kappa.dtype)

    def _logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Class logits of unit embeddings x [B, D]; with `labels`, the margin on the true class."""
        kappa = self.kappa.to(x.dtype)
        if self.subcentres > 1:
            centres = self.subcentre_mu.to(x.dtype)
            cosines = (x @ centres.flatten(0, 1).t()).view(len(x), *centres.shape[:2])
            if self.angular_margin > 0 and labels is not None:
                cosines = arc_margin(cosines, labels, self.angular_margin)
            return vmf_subcentre_logits(cosines, kappa, self.subcentre_log_weights)
        mu = self.directions.directions().to(x.dtype)
        kappas = self.class_kappas()
        if self.angular_margin > 0 and labels is not None:
            cosines = arc_margin(x @ mu.t(), labels, self.angular_margin)
            if kappas is None:
                return kappa * cosines
            return vmf_mixture_logits_of_cosines(cosines, kappas, x.shape[1])
        if kappas is None:
            return vmf_logits_unchecked(x, mu, kappa)
        return vmf_mixture_logits_unchecked(x, mu, kappas)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean vMF loss of embeddings [B, D] (any norm) with class labels [B]; a 0-d tensor.

        Raises a ValueError for an empty batch, and `NonFiniteEmbeddings` (a ValueError naming
        the bad rows) when an embedding holds NaN or infinite values or is all zero; the
        directions then take in nothing of the batch.
        """
        labels = check_batch(embeddings, labels, self.embed_dim, self.num_classes)
        x = _unit(embeddings)
        bad = unusable_rows(embeddings, directional=True)
        if self.weighting == "proxy-anchor":
            mu = self.directions.directions().to(x.dtype)
            loss = proxy_anchor_of_cosines(x @ mu.t(), labels)
        else:
            loss = F.cross_entropy(self._logits(x, labels), labels)
        if self.training:
            # A batch with a bad row is handed over as NaN rows only, which the strategies skip:
            # nothing of a refused batch is taken in, and every process of a run still calls its
            # strategy (whose collectives must match) before the batch is refused.
            self.directions.observe(torch.where(bad.any(), torch.nan, x.detach()), labels)
        refuse_unusable(embeddings, directional=True, rows=bad)
        return loss

    def logits(self, embeddings: Tensor) -> Tensor:
        """Class logits [B, C] for embeddings [B, D]: kappa mu . x, or the sub-centre mixture's,
        never with the margin (their softmax is the posterior)."""
        check_rows(embeddings, self.embed_dim, directional=True)
        return self._logits(_unit(embeddings))

    # ---- the training contract (vmfml.losses.base): the strategy does the work ----

    def start(self, full_pass: ClassSums) -> None:
        uses_pass = isinstance(self.directions, GlobalDirections) and self.directions.init == "data"
        if self.subcentres > 1 and uses_pass:
            self._with_subcentres(full_pass, self.directions.start)
            return
        self.directions.start(full_pass)
        if self.subcentres > 1:  # a random start: K copies of each random direction
            mu = self.directions.directions().detach()
            self.subcentre_mu = mu[:, None, :].repeat(1, self.subcentres, 1)

    def end_period(self, full_pass: ClassSums) -> None:
        if self.subcentres > 1:
            self._with_subcentres(full_pass, self.directions.end_period)
        else:
            self.directions.end_period(full_pass)

    def _with_subcentres(self, full_pass: ClassSums, refresh: Callable[[ClassSums], None]) -> None:
        """One full pass for both: the strategy's refresh from its class sums, and the
        sub-centres by k-means within each class of its embeddings."""
        if not isinstance(full_pass, FullPassEmbeddings):
            raise ValueError(
                "subcentres > 1 need a full pass that yields the embeddings themselves "
                "(FullPassEmbeddings, as the trainer's FullPass does), not only class sums"
            )
        x, labels = full_pass.embeddings()
        sums, counts = class_sums(x, labels, self.num_classes)
        refresh(lambda: (sums, counts))
        centres, log_weights, estimated = estimate_subcentres(
            x, labels, self.num_classes, self.subcentres, seed=self.directions.init_seed
        )
        keep = estimated.to(self.subcentre_mu.device)
        # Out of place: the current forward pass may still hold the old ones for its backward.
        self.subcentre_mu = torch.where(
            keep[:, None, None], centres.to(self.subcentre_mu), self.subcentre_mu
        )
        self.subcentre_log_weights = torch.where(
            keep[:, None], log_weights.to(self.subcentre_log_weights), self.subcentre_log_weights
        )

    def log_values(self) -> dict[str, float]:
        values = {"kappa": float(self.kappa.detach())}
        kappas = self.class_kappas()
        if kappas is not None:
            values["class_kappa_min"] = float(kappas.detach().min())
            values["class_kappa_max"] = float(kappas.detach().max())
        return values

    def checkpoint_state(self) -> dict[str, Any]:
        state = self.state_dict()
        for key, value in self.directions.checkpoint_state().items():
            state[f"directions.{key}"] = value
        return state

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load a `checkpoint_state`; a fixed kappa is a setting, not state, so the one this loss
        was built with is kept (a run may resume with another --kappa)."""
        kappa = None if self.learn_kappa else self.fixed_kappa.clone()
        self.load_state_dict(state)
        if kappa is not None:
            self.fixed_kappa.copy_(kappa)
        prefix = "directions."
        self.directions.restore_state(
            {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        )

    def extra_repr(self) -> str:
        extra = "".join(
            f", {name}={value}"
            for name, value, default in (
                ("angular_margin", self.angular_margin, 0.0),
                ("subcentres", self.subcentres, 1),
            )
            if value != default
        )
        return (
            f"kappa={float(self.kappa):.4g}, learn_kappa={self.learn_kappa}, "
            f"class_kappa={self.class_kappa}{extra}"
        )


def _unit(embeddings: Tensor) -> Tensor:
    # Half-precision inputs (mixed-precision training) are lifted to float32: with kappa ~ 16 the
    # logits need more than the 3 significant digits of bfloat16.
    dtype = torch.promote_types(embeddings.dtype, torch.float32)
    return F.normalize(embeddings.to(dtype), dim=1)
