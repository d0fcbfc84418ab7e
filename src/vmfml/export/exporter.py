"""Export an embedding model to ONNX or TorchScript, with a dynamic batch axis.

The exported graph maps normalized float images `[B, C, H, W]` (named `images`) to unit
embeddings `[B, D]` (named `embeddings`), exactly `EmbeddingModel.forward`. The preprocessing
(input size, mean, std, interpolation) and the model config travel inside the file: ONNX
`metadata_props` keys `vmfml.preprocessing` / `vmfml.config`, TorchScript extra file `vmfml.json`.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): it covers the CNN backbones used
here without the extra `onnxscript` dependency the torch.export-based exporter needs. Both
exporters and `torch.jit` emit deprecation warnings in recent torch; those are silenced here and
the exported file is always checked numerically instead (`vmfml.export.check`).

A file is written to a temporary name beside its destination and renamed over it only when
complete (and checked, where a check is given): a failed or killed export never leaves a partial
file, nor removes or replaces a previous good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vmfml.files import atomic_write

FORMATS = ("onnx", "torchscript")
# The usual file suffixes of each format: an --out with another format's suffix is refused.
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
DEFAULT_OPSET = 17
# The opsets of torch's TorchScript-based ONNX exporter (torch.onnx._constants: ONNX_MIN_OPSET,
# ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET); a model's operations may need a higher one than 7.
MIN_OPSET = 7
MAX_OPSET = 20


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


def export_onnx(
    model: nn.Module,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Write `model` as an ONNX graph `images [B, C, H, W] -> embeddings [B, D]` (B dynamic).

    Args:
        model: an `EmbeddingModel` (put in eval mode and on the CPU here).
        out: the `.onnx` file, written whole or not at all (see `export_model`).
        opset: the ONNX operator set, `MIN_OPSET`..`MAX_OPSET`.
        check: called on the written temporary file before it replaces `out`.

    Raises:
        ValueError: an opset out of range, or one the model's operations cannot be exported at.
    """
    check_opset(opset)
    return _write(out, "onnx", lambda tmp: _write_onnx(model, tmp, opset), check)


def _write_onnx(model: nn.Module, out: Path, opset: int) -> None:
    import onnx

    module = _Exportable(model.cpu().eval())
    with warnings.catch_warnings(), _quiet_output():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        try:
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
        # torch raises OnnxExporterError (a RuntimeError) or a RuntimeError for an operation
        # it cannot express at this opset; its message is one line, the graph dump is muted.
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"ONNX export at opset {opset} failed: {first}") from err
    graph = onnx.load(str(out))
    for key, value in export_metadata(model).items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out))


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset the exporter does not support."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"ONNX opset must be an integer in {MIN_OPSET}..{MAX_OPSET} (the range torch's "
            f"exporter supports; default {DEFAULT_OPSET}); got {opset!r}"
        )


def export_torchscript(
    model: nn.Module, out: str | Path, check: Callable[[Path], object] | None = None
) -> Path:
    """Write `model` as a traced TorchScript module `images [B, C, H, W] -> [B, D]`.

    Tracing records the operations for one example; convolutional embedding models have no
    data-dependent control flow, and the batch size stays free (checked by `check_export`).
    `out` is written whole or not at all, `check` run on it first (see `export_model`).
    """
    return _write(out, "torchscript", lambda tmp: _write_torchscript(model, tmp), check)


def _write_torchscript(model: nn.Module, out: Path) -> None:
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


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    check: Callable[[Path], object] | None = None,
    **options: Any,
) -> Path:
    """Export to `fmt` ("onnx" or "torchscript"); `options` go to the format's exporter.

    The file is written to a temporary file beside `out`, `check(temporary path)` is called on
    it (an exception there, such as `ExportMismatchError`, stops the export), and only then is
    it renamed over `out`: a failed export, or a killed one, leaves a previous `out` as it was
    and no temporary file behind.
    """
    if fmt == "onnx":
        return export_onnx(model, out, check=check, **options)
    if fmt == "torchscript":
        if options:
            raise ValueError(f"torchscript export takes no options, got {sorted(options)}")
        return export_torchscript(model, out, check=check)
    raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def check_destination(out: str | Path, fmt: str) -> Path:
    """Refuse, before any work, an output path that is a folder or whose suffix is another
    format's (`model.onnx` for torchscript); returns it as a Path."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(
            f"cannot export to {out}: it is a folder; give the file to write, e.g. "
            f"{out / ('model' + SUFFIXES[fmt][0])}"
        )
    suffix = out.suffix.lower()
    for other, suffixes in SUFFIXES.items():
        if other != fmt and suffix in suffixes:
            raise ValueError(
                f"cannot export {fmt} to {out}: {suffix} is the suffix of {other} files; name "
                f"the file {out.with_suffix(SUFFIXES[fmt][0]).name} or export --format {other}"
            )
    return out


def _write(
    out: str | Path,
    fmt: str,
    write: Callable[[Path], None],
    check: Callable[[Path], object] | None,
) -> Path:
    out = check_destination(out, fmt)

    def write_and_check(tmp: str) -> None:
        write(Path(tmp))
        if check is not None:
            check(Path(tmp))

    atomic_write(out, write_and_check)
    return out


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Mute file descriptors 1 and 2: torch's C++ ONNX log prints the whole graph (on stdout) when
    an export fails, and cannot be turned off (`setup_onnx_logging` enables it whatever it is
    asked); the failure itself is raised as an exception with a one-line message."""
    saved: list[tuple[int, int]] = []
    try:
        for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            stream.flush()
            saved.append((fd, os.dup(fd)))
    except (OSError, ValueError, AttributeError):  # no real descriptors (an embedding application)
        for _, copy in saved:
            os.close(copy)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            for fd, _ in saved:
                os.dup2(devnull.fileno(), fd)
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
