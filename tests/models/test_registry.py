"""The registry: name/option validation, config round trips, and every registered model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vmfml.models import (
    EmbeddingModel,
    create_model,
    list_models,
    model_options,
    register_model,
    registry,
)
from vmfml.models.small_cnn import SmallCNN

# Small, fast options for each registered name; a family entry also names the variant to build.
SMALL: dict[str, tuple[str, dict[str, Any], int]] = {
    "small_cnn": ("small_cnn", {"depth": 2}, 28),
    "efficientnet_lite0": ("efficientnet_lite0", {"input_size": 64}, 64),
    "timm:<variant>": ("timm:mobilenetv3_small_050", {"input_size": 64}, 64),
}


@pytest.fixture()
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register models without leaking them into the others."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


def test_every_registered_model_has_a_smoke_entry() -> None:
    assert sorted(SMALL) == list_models()


@pytest.mark.parametrize("listed", list_models())
def test_registered_model_gives_unit_rows_and_rebuilds_from_config(listed: str) -> None:
    name, opts, side = SMALL[listed]
    torch.manual_seed(0)
    model = create_model(name, embed_dim=24, **opts).eval()
    channels = model.preprocessing["input_size"][0]
    assert model.preprocessing["input_size"] == (channels, side, side)
    x = torch.randn(3, channels, side, side)
    with torch.no_grad():
        z = model(x)
    assert z.shape == (3, 24) and model.embed_dim == 24
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))

    torch.manual_seed(1)  # a different init: equality below comes from the loaded weights only
    rebuilt = create_model(**model.config).eval()
    assert rebuilt.config == model.config
    assert rebuilt.preprocessing == model.preprocessing
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), z)


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    with pytest.raises(ValueError, match="Did you mean 'small_cnn'") as info:
        create_model("smal_cnn")
    for name in list_models():
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["", "timm", "timm:", "small_cnn:x", "resnet50"])
def test_malformed_or_unknown_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="model"):
        create_model(name)


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(ValueError, match=r"\['depht'\]") as info:
        create_model("small_cnn", depht=2)
    for option in model_options("small_cnn"):
        assert option in str(info.value)


def test_config_holds_every_option_with_defaults() -> None:
    model = create_model("small_cnn", embed_dim=16, depth=1)
    assert model.config == {
        "name": "small_cnn",
        "embed_dim": 16,
        **model_options("small_cnn"),
        "depth": 1,
    }


def test_family_gets_its_variant_and_config_keeps_the_full_name() -> None:
    model = create_model("timm:mobilenetv3_small_050", embed_dim=8, input_size=32)
    assert model.config["name"] == "timm:mobilenetv3_small_050"
    assert "model_name" not in model.config
    assert type(model.backbone).__name__ == "MobileNetV3"


@pytest.mark.usefixtures("isolated_registry")
def test_register_model_adds_a_name_and_refuses_duplicates() -> None:
    pre = {
        "input_size": (1, 8, 8),
        "mean": [0.5],
        "std": [0.5],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }

    @register_model("toy")
    def toy(embed_dim: int | None = 4, depth: int = 1) -> EmbeddingModel:
        return EmbeddingModel(SmallCNN(depth=depth), embed_dim, pre)

    assert "toy" in list_models()
    assert model_options("toy") == {"depth": 1}
    assert create_model("toy", embed_dim=5).embed_dim == 5
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy")(toy)
    with pytest.raises(TypeError, match="embed_dim"):
        register_model("no_dim")(lambda depth=1: None)
    with pytest.raises(ValueError, match="':'"):
        register_model("a:b")
