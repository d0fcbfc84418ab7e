"""`--log-to tensorboard,mlflow`: what history.json holds, read back with each tracker's own reader
(TensorBoard's EventAccumulator, MLflow's client); a resumed run continues the same MLflow run;
only process 0 logs under torchrun; a logger that cannot run is refused before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from train_helpers import QUICK as BASE
from train_helpers import flags

from vmfml.train import loop
from vmfml.train.config import load_config

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

QUICK = {**BASE, "train_subset": 300, "eval_ks": (1, 2), "epochs": 2}
BOTH = {"log_to": "tensorboard,mlflow"}


def tensorboard_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of RUN/tensorboard as (step, value), as TensorBoard shows it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def mlflow_runs(out: Path) -> tuple[Any, list[Any]]:
    """The MLflow client of the run folder's store and the runs it holds."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, client.search_runs(experiments)


def history_values(history: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(r["epoch"], r[key]) for r in history]


def assert_float32_equal(
    logged: list[tuple[int, float]], expected: list[tuple[int, float]]
) -> None:
    """TensorBoard keeps scalars in float32: the same steps, the values to float32 rounding."""
    assert [step for step, _ in logged] == [step for step, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)


def test_the_trackers_get_what_history_json_holds(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # MLflow's default store would be a file here
    out = tmp_path / "run"
    result = loop.train(load_config(None, {**QUICK, **BOTH, "out_dir": str(out)}))
    history = json.loads((out / "history.json").read_text())
    assert history == result.history and len(history) == 2

    scalars = tensorboard_scalars(out)
    numbers = {k for k, v in history[0].items() if k != "epoch" and isinstance(v, float)}
    assert set(scalars) == numbers  # every number of the record, under its own name
    for key in ("train_loss", "lr", "val_recall@1", "val_map@r", "val_score"):
        assert_float32_equal(scalars[key], history_values(history, key))

    client, runs = mlflow_runs(out)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert json.loads((out / "mlflow_run.json").read_text())["run_id"] == run.info.run_id
    for key, name in (("train_loss", "train_loss"), ("val_recall@1", "val_recall_at_1")):
        logged = client.get_metric_history(run.info.run_id, name)
        assert [(m.step, m.value) for m in logged] == history_values(history, key), key
    assert run.data.params["lr"] == str(QUICK.get("lr", 3e-3))
    assert run.data.params["log_to"] == "tensorboard,mlflow"
    kept = result.metrics["kept"]["epoch"]
    tested = client.get_metric_history(run.info.run_id, "test_recall_at_1")
    assert [(m.step, m.value) for m in tested] == [(kept, result.metrics["recall@1"])]
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artefacts == {"best.pt", "config.yaml", "metrics.json", "history.json"}
    assert (out / "mlflow-artifacts").is_dir()
    assert list(cwd.iterdir()) == []  # no mlflow.db, no mlruns where the command ran


def test_a_resumed_run_continues_its_mlflow_run_and_tensorboard_shows_each_epoch_once(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in epoch 2: the MLflow run is KILLED with epoch 1 logged (and history.json holds
    it); --resume continues that MLflow run, which ends FINISHED with epochs 1 and 2 once."""
    out = tmp_path / "run"
    config = load_config(None, {**QUICK, **BOTH, "out_dir": str(out)})
    real = loop._end_period
    calls = {"n": 0}

    def interrupt_in_epoch_2(*args: Any) -> float:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop, "_end_period", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config)
    monkeypatch.setattr(loop, "_end_period", real)
    assert [r["epoch"] for r in json.loads((out / "history.json").read_text())] == [1]
    client, runs = mlflow_runs(out)
    assert [r.info.status for r in runs] == ["KILLED"]
    first = runs[0].info.run_id

    resumed = loop.train(config, resume=True)
    client, runs = mlflow_runs(out)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(first, "FINISHED")]
    logged = client.get_metric_history(first, "train_loss")
    assert [(m.step, m.value) for m in logged] == history_values(resumed.history, "train_loss")
    scalars = tensorboard_scalars(out)
    assert_float32_equal(scalars["train_loss"], history_values(resumed.history, "train_loss"))

    # A new run in the folder replaces the old one's tracking files with its own.
    loop.train(load_config(None, {**QUICK, "epochs": 1, "out_dir": str(out)}))
    assert not (out / "tensorboard").exists() and not (out / "mlflow.db").exists()


def test_a_logger_that_cannot_run_is_refused_before_the_data_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded")

    monkeypatch.setattr(loop, "build_datasets", no_data)
    out = tmp_path / "run"

    def refused(**settings: Any) -> str:
        with pytest.raises(ValueError) as err:
            loop.train(load_config(None, {**QUICK, **settings, "out_dir": str(out)}))
        return str(err.value)

    assert "unknown logger 'wandb'; use any of tensorboard, mlflow" in refused(log_to="wandb")
    assert "--mlflow-uri applies to --log-to mlflow" in refused(mlflow_uri="http://host:5000")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    said = refused(log_to="tensorboard,mlflow")
    assert (
        "--log-to mlflow needs the package mlflow, not installed here: pip install 'vmfml[tracking]'"
        in said
    )
    assert not out.exists()
    # None by default: the defaults log nothing beyond the run folder's own files.
    assert load_config(None, {}).log_to is None and load_config(None, {}).mlflow_uri is None


@pytest.mark.slow
def test_only_process_0_logs_under_torchrun(tmp_path: Path, fashion_sample: object) -> None:
    out = tmp_path / "run"
    settings = {**QUICK, **BOTH, "batch_size": 128, "out_dir": out}
    command = [sys.executable, "-m", "vmfml", "train", "--nproc", "2", *flags(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    client, runs = mlflow_runs(out)
    assert len(runs) == 1  # one MLflow run, not one per process
    logged = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert [(m.step, m.value) for m in logged] == history_values(history, "train_loss")
    assert len(list((out / "tensorboard").iterdir())) == 1  # one event file
    assert_float32_equal(
        tensorboard_scalars(out)["train_loss"], history_values(history, "train_loss")
    )


def test_the_summary_names_the_trackers_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmfml.train.commands import print_summary

    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "mlflow.db").write_text("")
    print_summary({"recall@1": 0.5}, tmp_path)
    assert (
        f"run folder: {tmp_path} (metrics.json, tensorboard/, mlflow.db)" in capsys.readouterr().out
    )
