from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.train.config import TrainConfig, load_config


def test_defaults_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("kappa: 8\nepochs: 3\neval_ks: [1, 10]\nlearn_kappa: true\n")
    config = load_config(path, {"epochs": "5", "directions": "accumulate"})
    assert config.kappa == 8.0 and isinstance(config.kappa, float)
    assert config.epochs == 5  # the command line wins over the file
    assert config.eval_ks == (1, 10)
    assert config.learn_kappa is True
    assert config.directions == "accumulate"
    assert config.batch_size == TrainConfig().batch_size


def test_unknown_key_is_refused_with_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("kapa: 8\n")
    with pytest.raises(ValueError, match=r"unknown config key 'kapa'.*did you mean 'kappa'"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        load_config(None, {"epoch": 3})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "three", "expects int"),
        ("epochs", 2.5, "expects int"),
        ("learn_kappa", "maybe", "expects bool"),
        ("split", "random", "split must be one of"),
        ("refresh_period", "weekly", "refresh_period must be"),
        ("kappa", -1, "kappa must be positive"),
        ("eval_ks", "1,0", "eval_ks must be positive"),
    ],
)
def test_bad_values_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, {key: value})


def test_optional_fields_accept_none() -> None:
    assert load_config(None, {"train_subset": "none"}).train_subset is None
    assert load_config(None, {"train_subset": "500"}).train_subset == 500


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kappa: [1,\n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(listy)


def _float_settings() -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("key", _float_settings())
def test_every_float_setting_must_be_finite(key: str, value: str) -> None:
    """Issue 21 #6: `--lr inf` trained until the embeddings turned NaN, `--warmup-epochs nan`
    was accepted; every float setting is checked where the config is parsed."""
    with pytest.raises(ValueError, match=f"{key} must be a finite number; got"):
        load_config(None, {key: value})


def test_float_settings_cover_the_rates_and_factors() -> None:
    # The parametrization above must not go empty by a change of how fields are typed.
    assert {"lr", "warmup_epochs", "kappa", "weight_decay", "max_minutes"} <= set(_float_settings())


@pytest.mark.parametrize("key", ["seed", "split_seed"])
def test_negative_seeds_are_refused(key: str) -> None:
    """Issue 21 #6: `--seed -1` failed after training (the embedding plot's seed)."""
    with pytest.raises(ValueError, match=f"{key} must be 0 or more; got -1"):
        load_config(None, {key: "-1"})
    assert getattr(load_config(None, {key: "0"}), key) == 0
