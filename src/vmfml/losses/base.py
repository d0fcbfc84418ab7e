"""The contract between a loss and the training loop, and the base class that fills it in.

The loop (vmfml.train.loop) knows nothing about any particular loss or mean-direction strategy:
it asks the loss for its optimizer groups, calls `start` once before the first step and
`end_period` at every period boundary (handing both a closure that runs a full pass over the
training set, which only the paper's `global` strategy calls), logs `log_values()`, and saves
and restores `checkpoint_state()`. Everything a loss needs beyond its forward pass goes through
these methods, so a new loss is a new class, never a new branch in the loop.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from vmfml.directions.base import ClassSums

__all__ = ["BaseLoss", "MetricLoss"]


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
