"""Export an embedding model to ONNX or TorchScript, with a dynamic batch axis.

The exported graph maps normalized float images `[B, C, H, W]` (named `images`) to unit
embeddings `[B, D]` (named `embeddings`), exactly `EmbeddingModel.forward`. The preprocessing
(input size, mean, std, interpolation) and the model config travel inside the file: ONNX
`metadata_props` keys `vmfml.preprocessing` / `vmfml.config`, TorchScript extra file `vmfml.json`.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): it covers the CNN backbones used
here without the extra `onnxscript` dependency the torch.export-based exporter needs. Both
exporters and `torch.jit` emit deprecation warnings in recent torch; those are silenced here and
the exported file is always checked numerically instead (`vmfml.export.check`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FORMATS = ("onnx", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 17


class _Exportable(nn.Module):
    """`model(images)` with only a tensor argument: what tracers and exporters can capture."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)  # [B, D] unit rows


def example_input(model: nn.Module, batch: int = 2) -> Tensor:
    """A float `[batch, C, H, W]` input of the model's preprocessing size (values are irrelevant
    to tracing; the check uses real images)."""
    c, h, w = (int(v) for v in model.preprocessing["input_size"])  # type: ignore[index]
    return torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))


def export_metadata(model: nn.Module) -> dict[str, str]:
    """The JSON strings recorded inside an exported file."""
    return {
        "vmfml.preprocessing": json.dumps(dict(model.preprocessing), default=str),  # type: ignore[arg-type]
        "vmfml.config": json.dumps(dict(getattr(model, "config", {}) or {}), default=str),
    }


def export_onnx(model: nn.Module, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` as an ONNX graph `images [B, C, H, W] -> embeddings [B, D]` (B dynamic).

    Args:
        model: an `EmbeddingModel` (put in eval mode and on the CPU here).
        out: the `.onnx` file.
        opset: the ONNX operator set.
    """
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = _Exportable(model.cpu().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example_input(model),),
            str(out),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
        )
    graph = onnx.load(str(out))
    for key, value in export_metadata(model).items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))
    return out


def export_torchscript(model: nn.Module, out: str | Path) -> Path:
    """Write `model` as a traced TorchScript module `images [B, C, H, W] -> [B, D]`.

    Tracing records the operations for one example; convolutional embedding models have no
    data-dependent control flow, and the batch size stays free (checked by `check_export`).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = _Exportable(model.cpu().eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        # The input checks of EmbeddingModel.forward become constants: the shape is fixed anyway.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, (example_input(model),))
        torch.jit.save(
            traced, str(out), _extra_files={"vmfml.json": json.dumps(export_metadata(model))}
        )
    return out


def export_model(model: nn.Module, fmt: str, out: str | Path, **options: Any) -> Path:
    """Export to `fmt` ("onnx" or "torchscript"); `options` go to the format's exporter."""
    if fmt == "onnx":
        return export_onnx(model, out, **options)
    if fmt == "torchscript":
        if options:
            raise ValueError(f"torchscript export takes no options, got {sorted(options)}")
        return export_torchscript(model, out)
    raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
