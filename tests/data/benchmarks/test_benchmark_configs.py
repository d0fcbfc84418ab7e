"""The shipped configs (src/vmfml/configs/*.yaml): each parses, holds exactly the agreed keys, and
matches its benchmark."""

from __future__ import annotations

import pytest
import yaml

from vmfml.configs import CONFIG_DIR as CONFIGS
from vmfml.data.benchmarks import BENCHMARKS, STANDARD_RECALL_KS

KEYS = {
    "data", "data_root", "model", "pretrained", "embed_dim", "image_size", "loss", "directions",
    "kappa", "refresh_period", "epochs", "batch_size", "lr", "weight_decay", "optimizer", "eval_ks",
    "augment", "num_workers", "device",
}  # fmt: skip
FILES = {
    "cub200": "cub200.yaml",
    "cars196": "cars196.yaml",
    "sop": "sop.yaml",
    "inshop": "inshop.yaml",
}


def load(name: str) -> dict:
    config = yaml.safe_load((CONFIGS / FILES[name]).read_text())
    assert isinstance(config, dict)
    return config


def test_there_is_a_config_per_benchmark() -> None:
    assert set(FILES) == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(FILES))
def test_config_holds_exactly_the_agreed_keys(name: str) -> None:
    assert set(load(name)) == KEYS


@pytest.mark.parametrize("name", sorted(FILES))
def test_config_values_fit_the_benchmark(name: str) -> None:
    config = load(name)
    assert config["data"] == name
    assert tuple(config["eval_ks"]) == STANDARD_RECALL_KS[name]
    assert config["pretrained"] is True and config["model"].startswith("timm:")
    assert config["embed_dim"] == 512 and config["image_size"] == 224
    assert config["loss"] == "vmf" and config["directions"] == "global"
    assert config["refresh_period"] == "epoch" and config["augment"] == "flip_crop"
    assert config["optimizer"] in ("adamw", "sgd") and config["device"] == "auto"
    for key in ("kappa", "lr", "weight_decay"):
        assert isinstance(config[key], float) and config[key] > 0
    for key in ("epochs", "batch_size", "num_workers", "embed_dim", "image_size"):
        assert isinstance(config[key], int) and config[key] > 0


@pytest.mark.parametrize("name", sorted(FILES))
def test_config_loads_into_the_training_config(name: str) -> None:
    train_config = pytest.importorskip("vmfml.train.config")
    config = train_config.load_config(CONFIGS / FILES[name])
    assert config.data == name and config.eval_ks == STANDARD_RECALL_KS[name]
