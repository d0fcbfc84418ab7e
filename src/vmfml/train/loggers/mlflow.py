"""`--log-to mlflow`: the run as an MLflow run, in a store in the run folder or on a server.

The store is RUN/mlflow.db (SQLite) with the artefacts in RUN/mlflow-artifacts, unless
--mlflow-uri names a tracking server; `mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`
shows it. Nothing is written in the working directory (MLflow's own default store).

The MLflow run (experiment `vmfml`, named after the run folder) gets the config as parameters,
every number of each epoch's record as a metric at step = epoch (`@` written `_at_`, which MLflow
names may not hold: val_recall@1 is val_recall_at_1), the test metrics as `test_...` at the kept
epoch, and config.yaml, metrics.json, history.json, the plots and best.pt as artefacts. Its id is
kept in RUN/mlflow_run.json, so that `--resume` continues the same MLflow run: the epochs it lacks
(trained after its last logged one) are logged first.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from vmfml.files import write_text_atomic
from vmfml.train.loggers.base import RunEnd, RunLogger, RunStart, numbers

RUN_FILE = "mlflow_run.json"
EXPERIMENT = "vmfml"
# The run folder's files an MLflow run keeps a copy of, when the run wrote them.
ARTEFACTS = (
    "config.yaml",
    "metrics.json",
    "history.json",
    "training_curves.png",
    "embedding.png",
    "best.pt",
)
STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


def metric_name(key: str) -> str:
    """A history key as an MLflow metric name (letters, digits, _ - . / space and colon)."""
    return key.replace("@", "_at_")


class MlflowLogger(RunLogger):
    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run: RunStart) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        out = run.out_dir.resolve()
        self.out = out
        uri = run.config.mlflow_uri or f"sqlite:///{out / 'mlflow.db'}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's, in MLflow's store
            self.client = MlflowClient(tracking_uri=uri)
            self.run_id = self._resumed_run(out, run) if run.resumed else None
            if self.run_id is None:
                self.run_id = self._new_run(out, run)
                params = [Param(k, str(v)) for k, v in run.config.to_dict().items()]
                self.client.log_batch(self.run_id, params=params)
            logged = {m.step for m in self.client.get_metric_history(self.run_id, "train_loss")}
        for record in run.history:
            if record["epoch"] not in logged:
                self.epoch(record)

    def _resumed_run(self, out: Path, run: RunStart) -> str | None:
        """The MLflow run of the run being resumed, running again; None when there is none on
        this store (another --mlflow-uri, or --log-to mlflow given only now)."""
        try:
            saved = json.loads((out / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        if saved.get("mlflow_uri") != run.config.mlflow_uri:
            return None
        try:
            self.client.update_run(saved["run_id"], status="RUNNING")
        except Exception:  # deleted, or never on this server: a new run takes its place
            return None
        return str(saved["run_id"])

    def _new_run(self, out: Path, run: RunStart) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # In the run folder's own store, the artefacts stay in the run folder too.
            local = None if run.config.mlflow_uri else (out / "mlflow-artifacts").as_uri()
            experiment_id = self.client.create_experiment(EXPERIMENT, artifact_location=local)
        created = self.client.create_run(experiment_id, run_name=out.name)
        run_id = str(created.info.run_id)
        saved = {"run_id": run_id, "mlflow_uri": run.config.mlflow_uri}
        write_text_atomic(out / RUN_FILE, json.dumps(saved, indent=2))
        return run_id

    def epoch(self, record: dict[str, Any]) -> None:
        self._log(numbers(record), record["epoch"])

    def end(self, run: RunEnd) -> None:
        tested = {f"test_{key}": value for key, value in numbers(run.metrics).items()}
        self._log(tested, run.kept_epoch)
        for name in ARTEFACTS:
            if (self.out / name).is_file():
                self.client.log_artifact(self.run_id, str(self.out / name))

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, STATUS[status])

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(k), v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)
