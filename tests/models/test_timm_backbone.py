"""timm backbones: same function as timm's own model, preprocessing, and local weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from vmfml.models import create_model
from vmfml.models.timm_backbone import read_state_dict

NAME = "mobilenetv3_small_050"  # 0.6M parameters: fast on CPU


def test_backbone_is_timm_pooled_features_then_the_head() -> None:
    torch.manual_seed(0)
    model = create_model(f"timm:{NAME}", embed_dim=16, input_size=64).eval()
    reference = timm.create_model(NAME, num_classes=0).eval()
    reference.load_state_dict(model.backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = reference(x)  # [2, 1024]: MobileNetV3's pre-logits width, not num_features
        expected = torch.nn.functional.normalize(model.head(features), dim=1)
        torch.testing.assert_close(model(x), expected)
    assert model.num_features == features.shape[1] == 1024


def test_preprocessing_comes_from_timm_data_config() -> None:
    model = create_model("timm:resnet18", embed_dim=8)
    cfg = timm.data.resolve_data_config({}, model=model.backbone)
    pre = model.preprocessing
    assert pre["input_size"] == cfg["input_size"] == (3, 224, 224)
    assert pre["mean"] == list(cfg["mean"]) and pre["std"] == list(cfg["std"])
    assert pre["interpolation"] == cfg["interpolation"] and pre["crop_pct"] == cfg["crop_pct"]

    grey = create_model("timm:resnet18", embed_dim=8, in_chans=1, input_size=96).preprocessing
    assert grey["input_size"] == (1, 96, 96)
    assert grey["mean"] == pytest.approx([sum(cfg["mean"]) / 3])


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        create_model("timm:resnet1800")


def test_pretrained_without_internet_says_pass_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="no internet: pass --weights PATH"):
        create_model(f"timm:{NAME}", pretrained=True)


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "with_classifier", "safetensors"])
def test_weights_path_round_trip(tmp_path: Path, wrap: str) -> None:
    torch.manual_seed(0)
    source = timm.create_model(NAME, num_classes=1000 if wrap == "with_classifier" else 0)
    state = source.state_dict()
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"epoch": 3, "state_dict": state} if wrap == "checkpoint" else state, path)

    torch.manual_seed(1)
    model = create_model(f"timm:{NAME}", embed_dim=8, weights=str(path))
    loaded = model.backbone.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("classifier.")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], msg=key)
    assert model.config["weights"] == str(path)


def test_weights_for_three_channels_are_adapted_to_one(tmp_path: Path) -> None:
    state = timm.create_model(NAME, num_classes=0).state_dict()
    torch.save(state, tmp_path / "w.pth")
    model = create_model(f"timm:{NAME}", embed_dim=8, in_chans=1, weights=str(tmp_path / "w.pth"))
    stem = model.backbone.conv_stem.weight
    torch.testing.assert_close(stem, state["conv_stem.weight"].sum(dim=1, keepdim=True))


def test_mismatched_weights_are_listed(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"missing \(\d+\): .*unexpected \(\d+\): ") as info:
        create_model(f"timm:{NAME}", weights=str(tmp_path / "r18.pth"))
    assert "blocks.0.0.bn1.bias" in str(info.value) and "conv1.weight" in str(info.value)

    state = timm.create_model("resnet18", num_classes=0).state_dict()
    state["fc_extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected \\(1\\): fc_extra.weight"):
        create_model("timm:resnet18", weights=str(tmp_path / "extra.pth"))

    state = timm.create_model("resnet18", num_classes=0).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape \(1\): conv1.weight: file \(64, 3, 5, 5\)"):
        create_model("timm:resnet18", weights=str(tmp_path / "shape.pth"))


def test_unreadable_weight_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        read_state_dict(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(
        ValueError, match="junk.pth is not a weights file: it is not a file written by torch.save"
    ):
        read_state_dict(tmp_path / "junk.pth")
    # --weights /etc/passwd used to say 'list index out of range'.
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(
        ValueError, match="passwd is not a weights file: it is not a file written by torch.save"
    ):
        read_state_dict(tmp_path / "passwd")
    torch.save({"epoch": 1}, tmp_path / "nostate.pth")
    with pytest.raises(ValueError, match="no state dict"):
        read_state_dict(tmp_path / "nostate.pth")


def test_data_parallel_prefix_is_removed(tmp_path: Path) -> None:
    state = {"module.conv.weight": torch.ones(2)}
    torch.save({"model": state}, tmp_path / "dp.pth")
    assert list(read_state_dict(tmp_path / "dp.pth")) == ["conv.weight"]
