"""What a run reports, and to whom: the subscribers of the training loop.

The loop tells its subscribers three things, as Lightning's loggers and callbacks are told: the
run starts (`RunStart`: a resumed run hands over the epochs it already trained), an epoch ended
(its record, the row history.json gets, once the epoch's checkpoint is written) and the run ended
(`RunEnd`: the test metrics, the kept epoch). Every run has the files history.json and the curves
(`files.py`); `--log-to tensorboard,mlflow` adds TensorBoard event files (`tensorboard.py`) and an
MLflow run (`mlflow.py`). Another logger is another small module and a line in `LOGGERS`, never
a line in the loop.

Only process 0 of a torchrun launch has subscribers; `close` is always called, with how the run
ended, also when it fails.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import TracebackType
from typing import TYPE_CHECKING, Any

from vmfml.train.loggers.base import RunEnd, RunLogger, RunStart
from vmfml.train.loggers.files import HistoryFile, Plots
from vmfml.train.run_folder import TRACKER_FILES

if TYPE_CHECKING:
    from vmfml.train.config import TrainConfig

__all__ = ["LOGGERS", "LOGGER_FILES", "RunEnd", "RunLogger", "RunStart", "Subscribers"]

# --log-to name -> (module of vmfml.train.loggers, its class, the packages it needs: the extra
# `tracking` of pyproject.toml installs them)
LOGGERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "tensorboard": ("tensorboard", "TensorBoardLogger", ("tensorboard",)),
    "mlflow": ("mlflow", "MlflowLogger", ("mlflow", "sqlalchemy", "alembic")),
}
# What the loggers may write into a run folder, whichever of them a run uses: a new run in the
# folder removes them all, so that nothing of an earlier run is mixed into its own.
LOGGER_FILES = TRACKER_FILES


def log_to_names(log_to: str | None) -> list[str]:
    """The loggers `--log-to` names (comma-separated, any subset of LOGGERS; none by default).

    An unknown name, or one whose packages are not installed, is refused with what to do."""
    names = [n.strip().lower() for n in (log_to or "").split(",") if n.strip()]
    for name in names:
        if name not in LOGGERS:
            raise ValueError(
                f"--log-to {log_to}: unknown logger {name!r}; use any of {', '.join(LOGGERS)}, "
                "separated by commas"
            )
        missing = [p for p in LOGGERS[name][2] if importlib.util.find_spec(p) is None]
        if missing:
            raise ValueError(
                f"--log-to {name} needs the package{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}, not installed here: pip install 'vmfml[tracking]'"
            )
    return list(dict.fromkeys(names))


def check_settings(config: TrainConfig) -> list[str]:
    """The loggers of `config`, refused before training when a setting cannot apply."""
    names = log_to_names(config.log_to)
    if config.mlflow_uri and "mlflow" not in names:
        raise ValueError("--mlflow-uri applies to --log-to mlflow: add mlflow to --log-to")
    return names


class Subscribers:
    """The subscribers of one run, told in order: the run folder's files first (history.json,
    the curves), then the loggers of --log-to, which may take those files as artefacts. A context
    manager: leaving it closes every subscriber with how the run ended."""

    def __init__(self, config: TrainConfig, main: bool) -> None:
        names = check_settings(config)  # on every process, so that all refuse alike
        self.loggers: list[RunLogger] = []
        if main:
            self.loggers = [HistoryFile(), Plots()]
            for name in names:
                module, cls, _ = LOGGERS[name]
                found = importlib.import_module(f"vmfml.train.loggers.{module}")
                self.loggers.append(getattr(found, cls)())

    def start(self, run: RunStart) -> None:
        for logger in self.loggers:
            logger.start(run)

    def epoch(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.epoch(record)

    def end(self, run: RunEnd) -> None:
        for logger in self.loggers:
            logger.end(run)

    def __enter__(self) -> Subscribers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        status = "finished" if kind is None else "failed"
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            status = "killed"
        for logger in self.loggers:
            logger.close(status)
