"""Export an embedding model to ONNX or TorchScript and check it against PyTorch."""

from vmfml.export.check import DEFAULT_ATOL, ExportMismatchError, check_export, run_exported
from vmfml.export.exporter import FORMATS, export_model, export_onnx, export_torchscript

__all__ = [
    "DEFAULT_ATOL",
    "FORMATS",
    "ExportMismatchError",
    "check_export",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "run_exported",
]
