"""The subscribers every run has: history.json and the plots of the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmfml.files import write_text_atomic
from vmfml.train.loggers.base import RunEnd, RunLogger, RunStart


class HistoryFile(RunLogger):
    """history.json: one record per epoch, rewritten after every epoch (a run stopped half-way
    leaves the epochs its checkpoint holds) and at the end."""

    def start(self, run: RunStart) -> None:
        self.path = run.out_dir / "history.json"
        self.history = list(run.history)

    def epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        write_text_atomic(self.path, json.dumps(self.history, indent=2))

    def end(self, run: RunEnd) -> None:
        write_text_atomic(self.path, json.dumps(run.history, indent=2))


class Plots(RunLogger):
    """training_curves.png (the kept epoch marked) and embedding.png (t-SNE of the test
    embeddings), at the end of a run with --plots true."""

    def start(self, run: RunStart) -> None:
        self.out: Path | None = run.out_dir if run.config.plots else None
        self.seed = run.config.seed

    def end(self, run: RunEnd) -> None:
        if self.out is None:
            return
        from vmfml.train.plots import plot_embedding, plot_history

        path = self.out / "training_curves.png"
        plot_history(run.history, path, kept_epoch=run.kept_epoch, before=run.before)
        embeddings, labels, class_names = run.test_embeddings
        plot_embedding(embeddings, labels, class_names, self.out / "embedding.png", seed=self.seed)
