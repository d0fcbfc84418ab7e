"""`OpenSetClassifier`: the known classes of a trained model as a vMF mixture, with a reject option.

What classifying a new image needs beside the network, fitted once from embeddings:
- the class mean directions mu_c: the normalized class sums of the training embeddings at the
  final weights (the vMF maximum-likelihood estimate, the same nearest-class-mean rule as
  `vmfml evaluate`'s `accuracy`, for every loss);
- a concentration per class kappa_c (from each class's mean resultant length, Banerjee et al.
  2005), for the `vmf_likelihood` score;
- one shared concentration kappa for the posterior p(c | x) = softmax(kappa mu . x), fitted by
  maximum likelihood on held-out labelled images (a temperature fit: calibrated posteriors);
- the training embeddings, for the `knn` score;
- every rejection score of held-out images of the known classes, so that the threshold of any
  score keeps a stated share of them (`keep_rate`, 95% by default).

It is saved as plain tensors, numbers and strings (`save`), and read back with
`torch.load(weights_only=True)`: a classifier file from elsewhere runs no code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vmfml.directions.concentration import estimate_kappa, mean_resultant_length
from vmfml.openset.functional import SCORES, posteriors, threshold_at_keep_rate, unknown_scores

FORMAT = "vmfml-classifier"
VERSION = 1
DEFAULT_SCORE = "knn"
DEFAULT_KEEP_RATE = 0.95
DEFAULT_K = 10
# The posterior concentration is searched in [KAPPA_MIN, KAPPA_MAX] (log scale).
KAPPA_MIN, KAPPA_MAX = 1e-2, 1e4


@dataclass
class Prediction:
    """The classification of a batch of embeddings.

    `label` [N] is the best class index, `probability` [N] its posterior, `score` [N] the
    rejection score (higher = more unusual), `unknown` [N] whether it exceeds the threshold, and
    `top` [N, k] / `top_probability` [N, k] the k best classes.
    """

    label: Tensor
    probability: Tensor
    score: Tensor
    unknown: Tensor
    top: Tensor
    top_probability: Tensor


@dataclass
class OpenSetClassifier:
    class_names: list[str]
    mean_directions: Tensor  # [C, D] unit, float32
    class_kappa: Tensor  # [C] float64
    kappa: float  # the posterior's shared concentration
    reference: Tensor  # [M, D] training embeddings (unit, float32)
    # Every score of the held-out known images: any score's threshold, at any keep rate.
    held_out_scores: dict[str, Tensor]
    score: str = DEFAULT_SCORE
    keep_rate: float = DEFAULT_KEEP_RATE
    k: int = DEFAULT_K
    info: dict[str, Any] = field(default_factory=dict)  # how it was fitted, for the report

    @classmethod
    def fit(
        cls,
        class_names: list[str],
        train: tuple[Tensor, Tensor],
        held_out: tuple[Tensor, Tensor] | None = None,
        score: str = DEFAULT_SCORE,
        keep_rate: float = DEFAULT_KEEP_RATE,
        k: int = DEFAULT_K,
    ) -> OpenSetClassifier:
        """Fit from unit training embeddings and labels, and held-out ones of the same classes.

        Without `held_out` the posterior's kappa and the thresholds are fitted on the training
        embeddings themselves (knn then skips each image's own match); `info` says which.
        """
        _check_score(score)
        emb, labels = train
        num_classes = len(class_names)
        if emb.dim() != 2 or labels.shape != (emb.shape[0],):
            raise ValueError(
                f"expected embeddings [N, D] and labels [N]; got {list(emb.shape)} and "
                f"{list(labels.shape)}"
            )
        counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
        empty = [class_names[c] for c in (counts == 0).nonzero().flatten().tolist()]
        if empty:
            raise ValueError(f"classes without training images: {', '.join(empty[:10])}")
        sums = torch.zeros(num_classes, emb.shape[1], dtype=torch.float64)
        sums.index_add_(0, labels, emb.to(torch.float64))
        mu = torch.nn.functional.normalize(sums, dim=1).to(torch.float32)
        class_kappa = estimate_kappa(mean_resultant_length(sums, counts), int(emb.shape[1]))
        # A class of one image (R = 1) has an infinite estimate: cap it at the largest finite one.
        finite = class_kappa[class_kappa.isfinite()]
        cap = float(finite.max()) if finite.numel() else float(emb.shape[1])
        class_kappa = class_kappa.nan_to_num(posinf=cap).clamp_min(1e-6)
        on_training = held_out is None
        fit_emb, fit_labels = train if held_out is None else held_out
        model = cls(
            class_names=list(class_names),
            mean_directions=mu,
            class_kappa=class_kappa,
            kappa=fit_posterior_kappa(fit_emb, fit_labels, mu),
            reference=emb.to(torch.float32).contiguous(),
            held_out_scores={},
            score=score,
            keep_rate=_check_keep_rate(keep_rate),
            k=min(k, emb.shape[0] - 1),
            info={
                "fitted_on": "training images" if on_training else "held-out images",
                "images": int(fit_emb.shape[0]),
            },
        )
        model.held_out_scores = {
            name: model.scores(fit_emb, name, exclude_self=on_training) for name in SCORES
        }
        return model

    @property
    def threshold(self) -> float:
        """Images scoring above it are unknown: it keeps `keep_rate` of the held-out images."""
        return threshold_at_keep_rate(self.held_out_scores[self.score], self.keep_rate)

    def configured(
        self, score: str | None = None, keep_rate: float | None = None
    ) -> OpenSetClassifier:
        """A copy that rejects by another score and/or keeps another share of known images."""
        return replace(
            self,
            score=self.score if score is None else _check_score(score),
            keep_rate=self.keep_rate if keep_rate is None else _check_keep_rate(keep_rate),
        )

    def scores(self, emb: Tensor, name: str | None = None, exclude_self: bool = False) -> Tensor:
        """Rejection scores [N] of unit embeddings (higher = more unusual); `name` another score."""
        return unknown_scores(
            name or self.score,
            emb,
            self.mean_directions,
            self.kappa,
            class_kappa=self.class_kappa,
            reference=self.reference,
            k=self.k,
            exclude_self=exclude_self,
        )

    def posteriors(self, emb: Tensor) -> Tensor:
        """p(c | x) [N, C] (float64) under the calibrated shared-kappa mixture."""
        return posteriors(emb, self.mean_directions, self.kappa)

    def predict(self, emb: Tensor, top_k: int = 1, reject: bool = True) -> Prediction:
        """Classify unit embeddings; with `reject`, mark those past the threshold unknown."""
        probs = self.posteriors(emb)
        top_probability, top = probs.topk(min(top_k, probs.shape[1]), dim=1)
        score = self.scores(emb)
        unknown = score > self.threshold if reject else torch.zeros_like(score, dtype=torch.bool)
        return Prediction(
            label=top[:, 0],
            probability=top_probability[:, 0],
            score=score,
            unknown=unknown,
            top=top,
            top_probability=top_probability,
        )

    def state(self) -> dict[str, Any]:
        """Plain tensors, numbers and strings: what `save` writes."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "class_names": list(self.class_names),
            "mean_directions": self.mean_directions,
            "class_kappa": self.class_kappa,
            "kappa": float(self.kappa),
            "reference": self.reference,
            "held_out_scores": dict(self.held_out_scores),
            "score": self.score,
            "keep_rate": float(self.keep_rate),
            "k": int(self.k),
            "info": dict(self.info),
        }

    def save(self, path: str | Path) -> None:
        """Write atomically (the file a crash leaves behind is the old one or the new one)."""
        from vmfml.files import atomic_write

        state = self.state()
        atomic_write(Path(path), lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | Path) -> OpenSetClassifier:
        """Read a file written by `save`, never running code from it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"classifier file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for damaged or unsafe files
            raise ValueError(f"cannot read classifier file {path}: {err}") from err
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a vmfml classifier file")
        if state.get("version", 0) > VERSION:
            raise ValueError(f"{path} was written by a newer vmfml (format {state['version']})")
        return cls(
            class_names=list(state["class_names"]),
            mean_directions=state["mean_directions"],
            class_kappa=state["class_kappa"],
            kappa=float(state["kappa"]),
            reference=state["reference"],
            held_out_scores=dict(state["held_out_scores"]),
            score=str(state["score"]),
            keep_rate=float(state["keep_rate"]),
            k=int(state["k"]),
            info=dict(state["info"]),
        )


def _check_score(name: str) -> str:
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")
    return name


def _check_keep_rate(rate: float) -> float:
    if not (isinstance(rate, (int, float)) and 0.0 < rate <= 1.0):
        raise ValueError(
            f"keep_rate must be in (0, 1] (the share of known images kept); got {rate}"
        )
    return float(rate)


def fit_posterior_kappa(emb: Tensor, labels: Tensor, mu: Tensor) -> float:
    """The kappa that maximizes the mean log posterior log softmax(kappa mu . x)[y] of labelled
    unit embeddings (a temperature fit), searched on a log scale in [KAPPA_MIN, KAPPA_MAX]."""
    from scipy.optimize import minimize_scalar

    cos = emb.to(torch.float64) @ mu.to(torch.float64).t()
    target = labels.to(torch.int64)

    def nll(log_kappa: float) -> float:
        logits = math.exp(log_kappa) * cos
        return float(torch.nn.functional.cross_entropy(logits, target))

    best = minimize_scalar(nll, bounds=(math.log(KAPPA_MIN), math.log(KAPPA_MAX)), method="bounded")
    return float(math.exp(best.x))
