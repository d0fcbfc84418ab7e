"""The subscriber's side of the training loop: what it is told, and when (`RunLogger`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from vmfml.train.config import TrainConfig
    from vmfml.train.run_folder import RunFolder


@dataclass
class RunStart:
    config: TrainConfig
    out_dir: Path
    # The epochs trained before a resume (their records, as in history.json); [] for a new run.
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    # The run folder's own files are written through it (`RunFolder.write`: recorded as vmfml's).
    folder: RunFolder | None = None


@dataclass
class RunEnd:
    metrics: dict[str, Any]  # metrics.json's content
    history: list[dict[str, Any]]
    kept_epoch: int
    before: dict[str, float] | None  # validation of a pretrained network before training
    # The test embeddings, their labels and the class names (embedding.png).
    test_embeddings: tuple[Tensor, Tensor, list[str]]
    # The posterior's calibration on the test images (`train.open_set.calibration_report`;
    # reliability.png), None for a class-disjoint run.
    calibration: dict[str, Any] | None = None


class RunLogger:
    """A subscriber of the training loop; every method does nothing unless overridden."""

    def start(self, run: RunStart) -> None:
        """The run starts (after its folder is set up, before its first epoch)."""

    def epoch(self, record: dict[str, Any]) -> None:
        """An epoch ended: its record, as history.json holds it."""

    def end(self, run: RunEnd) -> None:
        """The run ended and metrics.json is written."""

    def close(self, status: str) -> None:
        """Always last: `status` is 'finished', 'failed' or 'killed' (Ctrl-C)."""


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The values of an epoch's record that a tracker plots: every number but the epoch."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool)
    }
