"""`vmfml export`: write a checkpoint's embedding model as ONNX or TorchScript, then check it.

The check runs the exported file (onnxruntime / torch.jit.load) on images - real ones from
`--check-data`, else random ones - and compares with PyTorch. The file is written under a
temporary name and renamed to `--out` only after the check passes: above `--atol` the command
fails and `--out` is left as it was (a previous good export stays), so a wrong export is never
left behind looking valid. An `--out` that is a symbolic link stays one: the file it points to
is replaced, atomically. Before any work, `--out` is refused when it is a folder, when its folder
cannot be written, or when its suffix is the other format's (`--format torchscript --out x.onnx`).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch

from vmfml.export.check import DEFAULT_ATOL
from vmfml.export.exporter import DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a vmfml checkpoint")
    parser.add_argument("--format", choices=FORMATS, required=True, help="onnx or torchscript")
    parser.add_argument("--out", required=True, help="the file to write (.onnx, .pt)")
    parser.add_argument(
        "--check-data", help="a folder of class subfolders: check on these real images"
    )
    parser.add_argument(
        "--check-images", type=int, default=16, help="images in the check (default 16, >= 2)"
    )
    parser.add_argument(
        "--atol",
        type=tolerance,
        default=DEFAULT_ATOL,
        help=f"allowed max abs difference, >= 0 (default {DEFAULT_ATOL:g})",
    )
    parser.add_argument(
        "--opset",
        type=opset,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})",
    )


def tolerance(text: str) -> float:
    """--atol: a finite number >= 0 (a negative one could never pass, NaN would always)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def opset(text: str) -> int:
    """--opset: an integer in the range torch's exporter supports."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not MIN_OPSET <= value <= MAX_OPSET:
        raise argparse.ArgumentTypeError(
            f"ONNX opset must lie in {MIN_OPSET}..{MAX_OPSET} (what torch's exporter supports); "
            f"got {value}"
        )
    return value


def run(args: argparse.Namespace) -> int:
    from vmfml.export.check import ExportMismatchError, check_export
    from vmfml.export.exporter import check_destination, export_model
    from vmfml.files import check_output_file
    from vmfml.train.checkpoint import load_embedding_model

    if args.check_images < 2:
        raise ValueError(f"--check-images must be at least 2, got {args.check_images}")
    out = check_output_file(check_destination(args.out, args.format), "--out", make_folders=True)
    existed = out.is_file()
    model, _ = load_embedding_model(args.checkpoint)
    images, source = check_images(model, args.check_data, args.check_images)
    options = {"opset": args.opset} if args.format == "onnx" else {}
    result: dict[str, Any] = {}

    def check(tmp: Path) -> None:
        # The check names the file; the user knows it as --out, not as its temporary name.
        try:
            result.update(check_export(tmp, args.format, model, images, atol=args.atol))
        except ExportMismatchError as err:
            kept = f"{out} left as it was" if existed else f"{out} not written"
            raise ExportMismatchError(f"{str(err).replace(str(tmp), str(out))}; {kept}") from err

    export_model(model, args.format, out, check=check, **options)
    print(
        f"wrote {out} ({args.format}); check on {result['images']} {source} images, batch sizes "
        f"{result['batch_sizes']}: max abs diff {result['max_abs_diff']:.2e} <= {args.atol:g}",
        file=sys.stderr,
    )
    return 0


def check_images(model: Any, folder: str | None, n: int) -> tuple[torch.Tensor, str]:
    """n float images `[n, C, H, W]` for the check, and a word saying where they came from.

    From `folder`: n images spread evenly over the (class-sorted) folder, so that several
    classes appear. Without: uniform random pixels, still run through the model's transform.
    """
    from vmfml.data.transforms import make_transform

    transform = make_transform(model.preprocessing, train=False)
    if folder is None:
        c, h, w = (int(v) for v in model.preprocessing["input_size"])
        generator = torch.Generator().manual_seed(0)
        raw = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=generator)
        return torch.stack([transform(image) for image in raw]), "random"
    from vmfml.index.cli_common import load_gallery

    dataset = load_gallery(folder, model.preprocessing, on_error="raise", progress=False)
    picks = torch.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().long().unique()
    if len(picks) < 2:
        raise ValueError(
            f"--check-data {folder} holds {len(dataset)} image(s); the check needs at least 2"
        )
    return torch.stack([transform(dataset[int(i)][0]) for i in picks]), "real"
