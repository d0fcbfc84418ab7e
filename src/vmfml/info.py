"""`vmfml info`: what a bug report needs to know about this installation.

Versions (Python, vmfml and its libraries), the devices torch sees and what they can do (CUDA,
its compute capability, bf16), the faiss build (version, SIMD flavour, GPUs), whether Milvus's
client (pymilvus) is installed, the CPU threads, and the cache and data folders with the built-in
data sets found there. `--json` prints the same as one JSON object. Nothing is downloaded and no
data set is read: only file names are looked at.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "collect_info", "run"]

# distribution name -> import name, in the order printed.
LIBRARIES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "numpy": "numpy",
    "timm": "timm",
    "pytorch-metric-learning": "pytorch_metric_learning",
    "faiss-cpu": "faiss",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "pymilvus": "pymilvus",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render(info))
    return 0


def collect_info() -> dict[str, Any]:
    """Everything `vmfml info` prints, as plain JSON-ready values."""
    from vmfml import __version__

    return {
        "vmfml": {"version": __version__, "path": str(Path(__file__).resolve().parent)},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "devices": _devices(),
        "faiss": _faiss(),
        "milvus": {
            "pymilvus": _version("pymilvus"),
            "available": importlib.util.find_spec("pymilvus") is not None,
        },
        "threads": _threads(),
        "folders": _folders(),
    }


def render(info: dict[str, Any]) -> str:
    """The text form: one `name: value` line each, grouped under headings."""
    lines = [
        f"vmfml {info['vmfml']['version']} ({info['vmfml']['path']})",
        f"python {info['python']['version']} ({info['python']['executable']})",
        f"platform {info['platform']}",
        "",
        "libraries:",
    ]
    lines += [f"  {k}: {v or 'not installed'}" for k, v in info["libraries"].items()]
    lines += ["", "devices:"]
    for device in info["devices"]:
        extra = ", ".join(f"{k} {v}" for k, v in device.items() if k not in ("name", "device"))
        lines.append(f"  {device['device']}: {device['name']}" + (f" ({extra})" if extra else ""))
    faiss = info["faiss"]
    lines += ["", "faiss:"] + [f"  {k}: {v}" for k, v in faiss.items()]
    milvus = info["milvus"]
    lines += [
        "",
        f"milvus: pymilvus {milvus['pymilvus']}"
        if milvus["available"]
        else "milvus: pymilvus not installed",
        "",
        "threads:",
    ]
    lines += [f"  {k}: {v}" for k, v in info["threads"].items()]
    lines += ["", "folders:"]
    for name, entry in info["folders"].items():
        if entry["path"] is None:
            lines.append(f"  {name}: not found")
        else:
            lines.append(f"  {name}: {entry['path']}" + ("" if entry["found"] else " (missing)"))
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> list[dict[str, Any]]:
    import torch

    devices: list[dict[str, Any]] = [
        {"device": "cpu", "name": platform.processor() or platform.machine(), "bf16": True}
    ]
    cuda_build = torch.version.cuda
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            with torch.cuda.device(i):
                bf16 = bool(torch.cuda.is_bf16_supported())
            devices.append(
                {
                    "device": f"cuda:{i}",
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "bf16": bf16,
                    "cuda": cuda_build,
                }
            )
    else:
        devices.append(
            {
                "device": "cuda",
                "name": "not available",
                "cuda build": cuda_build or "none (a CPU build of torch)",
            }
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append({"device": "mps", "name": "Apple Metal", "bf16": False})
    return devices


def _faiss() -> dict[str, Any]:
    if importlib.util.find_spec("faiss") is None:
        return {"installed": False}
    import faiss

    get_gpus = getattr(faiss, "get_num_gpus", None)
    options = getattr(faiss, "get_compile_options", None)
    return {
        "version": getattr(faiss, "__version__", None),
        "build": options().strip() if options else None,
        "gpus": get_gpus() if get_gpus else 0,
    }


def _threads() -> dict[str, Any]:
    import torch

    return {
        "cpu cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def _folders() -> dict[str, dict[str, Any]]:
    """The cache and data folders, and where each built-in data set's files were found."""
    import torch

    from vmfml.data.animal_mnist import package_data_dir
    from vmfml.data.fashion_mnist import find_fashion_mnist
    from vmfml.data.locations import data_home, find_dir
    from vmfml.data.mnist_digits import FILES as DIGIT_FILES
    from vmfml.data.mnist_digits import search_dirs as digit_dirs

    shared = Path(os.environ.get("VMFML_VENV") or "~/.cache/vmfml/venv").expanduser()
    home = data_home()
    found: dict[str, Path | None] = {
        "data (VMFML_DATA)": home if home.is_dir() else None,
        "shared environment (VMFML_VENV)": shared if shared.is_dir() else None,
        "torch hub cache": Path(torch.hub.get_dir()),
        "fashion-mnist": find_fashion_mnist(),
        "mnist-digits": find_dir(digit_dirs(), DIGIT_FILES),
        "animal-mnist": package_data_dir(),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, path in found.items():
        out[name] = {
            "path": str(path) if path is not None else _expected(name, home, shared),
            "found": path is not None and path.exists(),
        }
    return out


def _expected(name: str, home: Path, shared: Path) -> str | None:
    """Where a missing folder would be looked for (None where no single place is)."""
    return {
        "data (VMFML_DATA)": str(home),
        "shared environment (VMFML_VENV)": str(shared),
    }.get(name)
