"""The subscribers every run has: history.json and the plots of the run folder."""

from __future__ import annotations

import json
from typing import Any

from vmfml.files import write_text_atomic
from vmfml.train.loggers.base import RunEnd, RunLogger, RunStart
from vmfml.train.run_folder import RunFolder


def _folder(run: RunStart) -> RunFolder:
    """The run's folder (a caller that gave none gets one that records nothing elsewhere)."""
    return run.folder if run.folder is not None else RunFolder(run.out_dir)


class HistoryFile(RunLogger):
    """history.json: one record per epoch, rewritten after every epoch (a run stopped half-way
    leaves the epochs its checkpoint holds) and at the end."""

    def start(self, run: RunStart) -> None:
        self.folder = _folder(run)
        self.history = list(run.history)

    def epoch(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._write(self.history)

    def end(self, run: RunEnd) -> None:
        self._write(run.history)

    def _write(self, history: list[dict[str, Any]]) -> None:
        text = json.dumps(history, indent=2)
        self.folder.write("history.json", lambda path: write_text_atomic(path, text))


class Plots(RunLogger):
    """training_curves.png (the kept epoch marked), embedding.png (t-SNE of the test
    embeddings) and reliability.png (the posterior's calibration, same classes only), at the end
    of a run with --plots true."""

    def start(self, run: RunStart) -> None:
        self.folder: RunFolder | None = _folder(run) if run.config.plots else None
        self.seed = run.config.seed

    def end(self, run: RunEnd) -> None:
        if self.folder is None:
            return
        from vmfml.train.plots import plot_embedding, plot_history, plot_reliability

        self.folder.write(
            "training_curves.png",
            lambda path: plot_history(
                run.history, path, kept_epoch=run.kept_epoch, before=run.before
            ),
        )
        embeddings, labels, names = run.test_embeddings
        self.folder.write(
            "embedding.png",
            lambda path: plot_embedding(embeddings, labels, names, path, seed=self.seed),
        )
        calibration = run.calibration
        if calibration is not None:
            self.folder.write("reliability.png", lambda path: plot_reliability(calibration, path))
