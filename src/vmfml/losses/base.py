"""The contract between a loss and the training loop, and the base class that fills it in.

The loop (vmfml.train.loop) knows nothing about any particular loss or mean-direction strategy:
it asks the loss for its optimizer groups, calls `start` once before the first step and
`end_period` at every period boundary (handing both a closure that runs a full pass over the
training set, which only the paper's `global` strategy calls), logs `log_values()`, and saves
and restores `checkpoint_state()`. Everything a loss needs beyond its forward pass goes through
these methods, so a new loss is a new class, never a new branch in the loop.

The input checks every public loss and loss function shares live here too: each refuses bad
input with a ValueError that names the argument (`check_batch`, `check_rows`), and rows a loss
cannot use (NaN, infinite, or all zero on the sphere) with `NonFiniteEmbeddings`, which the
training loop turns into its NaN stop.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from vmfml.directions.base import ClassSums

__all__ = [
    "BaseLoss",
    "MetricLoss",
    "NonFiniteEmbeddings",
    "check_batch",
    "check_embeddings",
    "check_labels",
    "check_rows",
    "refuse_unusable",
    "unusable_rows",
]


@runtime_checkable
class MetricLoss(Protocol):
    """What the trainer, the evaluation and the benchmark rely on, for every loss `create_loss`
    returns.

    `logits` exists on every loss but raises ValueError unless `has_classifier` is True.
    """

    expects_normalized: bool
    has_classifier: bool
    # True when `end_period` does work, so that a refresh period means something.
    has_period: bool

    def __call__(self, embeddings: Tensor, labels: Tensor) -> Tensor: ...

    def logits(self, embeddings: Tensor) -> Tensor: ...

    def param_groups(self, lr: float) -> list[dict[str, Any]]: ...

    def start(self, full_pass: ClassSums) -> None: ...

    def end_period(self, full_pass: ClassSums) -> None: ...

    def log_values(self) -> dict[str, float]: ...

    def checkpoint_state(self) -> dict[str, Any]: ...

    def restore_state(self, state: dict[str, Any]) -> None: ...

    # nn.Module's, used by the loop
    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def double(self) -> Any: ...


class BaseLoss(nn.Module):
    """Defaults of the contract for a loss with no periodic work.

    Subclasses set `lr_multiplier` to the factor their authors train the loss's own parameters
    (proxies, class weights) with, relative to the network's learning rate, with the source.
    """

    expects_normalized: bool = True
    has_classifier: bool = False
    has_period: bool = False
    lr_multiplier: float = 1.0

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups of the loss's trainable parameters (none: an empty list)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr * self.lr_multiplier}] if params else []

    def start(self, full_pass: ClassSums) -> None:
        """Before the first step of a new run (not on resume)."""

    def end_period(self, full_pass: ClassSums) -> None:
        """At the end of every refresh period."""

    def log_values(self) -> dict[str, float]:
        """Numbers worth a column in the training history."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        """The state to save (the same on every process of a multi-process run)."""
        return self.state_dict()

    def restore_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state)

    def logits(self, embeddings: Tensor) -> Tensor:
        raise ValueError(
            f"{type(self).__name__} has no per-class weights, so no class logits "
            "(check has_classifier first); classify with a kNN over embeddings instead"
        )


# ---- input checks shared by the losses and the loss functions ----------------------------------


class NonFiniteEmbeddings(ValueError):
    """Embeddings a loss cannot use: rows holding NaN or infinite values, or, for a loss on the
    unit sphere, all-zero rows, which have no direction."""


def check_embeddings(embeddings: Tensor, embed_dim: int, name: str = "embeddings") -> None:
    """Raise a ValueError unless `embeddings` is a floating-point [B, embed_dim] tensor."""
    if not isinstance(embeddings, Tensor) or not embeddings.is_floating_point():
        what = (
            f"a {embeddings.dtype} tensor"
            if isinstance(embeddings, Tensor)
            else type(embeddings).__name__
        )
        raise ValueError(f"{name} must be a floating-point tensor, got {what}")
    if embeddings.dim() != 2 or embeddings.shape[1] != embed_dim:
        raise ValueError(f"{name} must have shape [B, {embed_dim}], got {list(embeddings.shape)}")


def check_labels(labels: Tensor, batch_size: int, num_classes: int) -> Tensor:
    """Validate class labels for a batch of batch_size embeddings; returns them as int64.

    Raises a ValueError naming the problem: not an integer tensor, not of shape [batch_size],
    or values outside [0, num_classes).
    """
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    if labels.shape != (batch_size,):
        raise ValueError(
            f"labels must have shape [{batch_size}] (one per embedding), got {list(labels.shape)}"
        )
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels must lie in [0, {num_classes}) (num_classes={num_classes}), "
                f"got values in [{low}, {high}]"
            )
    return labels.long()


def check_batch(
    embeddings: Tensor, labels: Tensor, embed_dim: int, num_classes: int, name: str = "embeddings"
) -> Tensor:
    """The checks of a loss's batch: `check_embeddings`, at least one row (a loss is a mean over
    the batch), `check_labels`; returns the labels as int64."""
    check_embeddings(embeddings, embed_dim, name)
    if embeddings.shape[0] == 0:
        raise ValueError(
            f"empty batch: {name} have shape {list(embeddings.shape)}; a loss is a mean over "
            "the batch and needs at least one embedding"
        )
    return check_labels(labels, embeddings.shape[0], num_classes)


def unusable_rows(embeddings: Tensor, directional: bool) -> Tensor:
    """[B] bool, the rows of embeddings [B, D] holding NaN or infinite values and, when
    `directional` (a loss on the unit sphere), the all-zero rows. Nothing is read back from the
    embeddings' device."""
    bad = ~torch.isfinite(embeddings).all(dim=1)
    if directional:
        bad |= (embeddings == 0).all(dim=1)
    return bad


def refuse_unusable(
    embeddings: Tensor,
    directional: bool,
    rows: Tensor | None = None,
    name: str = "embeddings",
) -> None:
    """Raise `NonFiniteEmbeddings` naming the `unusable_rows` of embeddings [B, D] (`rows`, when
    the caller has them already), with a count of each kind. One read back from the device."""
    rows = unusable_rows(embeddings, directional) if rows is None else rows
    if not bool(rows.any()):
        return
    nan = torch.isnan(embeddings).any(dim=1)
    inf = torch.isinf(embeddings).any(dim=1) & ~nan
    zero = rows & ~nan & ~inf
    kinds = [
        f"{int(n)} {what}"
        for what, n in (
            ("with NaN", nan.sum()),
            ("with an infinite value", inf.sum()),
            ("all zero", zero.sum()),
        )
        if n
    ]
    bad = rows.nonzero().flatten().tolist()
    shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    state = "not finite" if not zero.any() else "without a direction on the sphere"
    raise NonFiniteEmbeddings(
        f"{len(bad)} of {embeddings.shape[0]} {name} are {state} ({' and '.join(kinds)}): "
        f"rows {shown}"
    )


def check_rows(
    embeddings: Tensor, embed_dim: int, directional: bool, name: str = "embeddings"
) -> None:
    """`check_embeddings`, then `refuse_unusable`: the checks of embeddings without labels."""
    check_embeddings(embeddings, embed_dim, name)
    refuse_unusable(embeddings, directional, name=name)
