"""ONNX and TorchScript exports give PyTorch's embeddings on real Fashion-MNIST images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vmfml.cli import main
from vmfml.export import ExportMismatchError, check_export, export_model, run_exported
from vmfml.models import create_model
from vmfml.train.checkpoint import save_model_checkpoint


def real_images(
    model: torch.nn.Module, fashion_sample: tuple[np.ndarray, np.ndarray], n: int = 12
) -> torch.Tensor:
    """n Fashion-MNIST images, one class after another, through the model's transform."""
    from vmfml.data.transforms import make_transform

    x, y = fashion_sample
    rows = [int(np.flatnonzero(y == c)[0]) for c in range(10)] + list(range(n - 10))
    transform = make_transform(model.preprocessing, train=False)  # type: ignore[arg-type]
    return torch.stack([transform(torch.from_numpy(x[i].copy())[None]) for i in rows[:n]])


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", embed_dim=32, depth=2, width=0.5, head_bn=True).eval()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_small_cnn_export_matches_pytorch(
    tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray], fmt: str
) -> None:
    pytest.importorskip("onnxruntime") if fmt == "onnx" else None
    model = small_cnn()
    images = real_images(model, fashion_sample)
    out = export_model(model, fmt, tmp_path / f"m.{fmt}")
    result = check_export(out, fmt, model, images)
    assert result["max_abs_diff"] < 1e-4 and result["batch_sizes"] == [1, 12]
    # Independent of check_export: a batch size never seen at export time, against PyTorch.
    got = run_exported(out, fmt, images[:5])
    with torch.no_grad():
        np.testing.assert_allclose(got, model(images[:5]).numpy(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_preprocessing_travels_in_the_files(tmp_path: Path) -> None:
    model = small_cnn()
    onnx = pytest.importorskip("onnx")
    props = {
        p.key: p.value
        for p in onnx.load(str(export_model(model, "onnx", tmp_path / "m.onnx"))).metadata_props
    }
    assert json.loads(props["vmfml.preprocessing"])["input_size"] == [1, 28, 28]
    assert json.loads(props["vmfml.config"])["name"] == "small_cnn"
    extra = {"vmfml.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in recent torch
        torch.jit.load(
            str(export_model(model, "torchscript", tmp_path / "m.pt")), _extra_files=extra
        )
    assert json.loads(json.loads(extra["vmfml.json"])["vmfml.preprocessing"])["mean"] == [0.5]


@pytest.mark.slow
def test_timm_model_export(tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("timm:resnet10t", embed_dim=32, input_size=32).eval()
    images = real_images(model, fashion_sample, n=10)  # grey 28x28 -> RGB 32x32
    assert images.shape == (10, 3, 32, 32)
    for fmt in ("onnx", "torchscript"):
        result = check_export(export_model(model, fmt, tmp_path / f"r.{fmt}"), fmt, model, images)
        assert result["max_abs_diff"] < 1e-4


def test_a_wrong_export_fails_loudly(
    tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    model = small_cnn()
    out = export_model(model, "torchscript", tmp_path / "m.pt")
    changed = small_cnn()
    with torch.no_grad():
        # What a silently wrong export looks like: slightly different weights. (A uniform scale
        # would not do: the L2 normalization cancels it.)
        changed.head[0].weight.add_(0.01 * torch.randn_like(changed.head[0].weight))
    with pytest.raises(ExportMismatchError, match="differs from PyTorch by .* tolerance 0.0001"):
        check_export(out, "torchscript", changed, real_images(model, fashion_sample))


def test_export_cli(
    tmp_path: Path,
    fashion_sample: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("onnxruntime")
    from PIL import Image

    x, y = fashion_sample
    for c in range(3):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in np.flatnonzero(y == c)[:4]:
            Image.fromarray(x[i]).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    save_model_checkpoint(tmp_path / "m.ckpt", small_cnn())
    base = ["export", "--checkpoint", str(tmp_path / "m.ckpt"), "--out"]
    assert (
        main(
            [
                *base,
                str(tmp_path / "m.onnx"),
                "--format",
                "onnx",
                "--check-data",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    assert "check on 12 real images" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "m.pt"), "--format", "torchscript"]) == 0
    assert "random images" in capsys.readouterr().err
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.pt").is_file()
    assert main([*base, str(tmp_path / "x.onnx"), "--format", "onnx", "--check-images", "1"]) == 2
    assert "--check-images must be at least 2" in capsys.readouterr().err
    assert (
        main(
            [
                *base,
                str(tmp_path / "x.onnx"),
                "--format",
                "onnx",
                "--check-data",
                str(tmp_path / "nope"),
            ]
        )
        == 2
    )
    assert "image folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, str(tmp_path / "x.tf"), "--format", "tflite"])
