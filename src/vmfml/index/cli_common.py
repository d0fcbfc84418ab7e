"""Arguments and steps shared by `vmfml embed`, `vmfml index` and `vmfml search`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_model_run_arguments(
    parser: argparse.ArgumentParser, batch_size: int = 128, loader: bool = True
) -> None:
    """--batch-size, --device; with `loader` (a folder is streamed) also --workers, --no-progress."""
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="images per forward pass"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:1, mps or auto (default: cpu)"
    )
    if not loader:
        return
    parser.add_argument(
        "--workers", type=non_negative_int, default=0, help="data-loading processes (default: 0)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_rerank_arguments(parser: argparse.ArgumentParser) -> None:
    """--rerank none|aqe|alpha-qe, --rerank-n, --rerank-alpha (`vmfml.index.rerank`), checked
    by `search_rerank`."""
    parser.add_argument(
        "--rerank",
        default="none",
        choices=("none", "aqe", "alpha-qe"),
        help="query expansion: each query plus its top --rerank-n hits (weighted by "
        "similarity ** --rerank-alpha for alpha-qe) searches again, with the same filter "
        "(default: none; a `vmfml serve` request may choose its own)",
    )
    parser.add_argument(
        "--rerank-n",
        type=int,
        help="neighbours the query is expanded by, 0..100 (default 2, as `vmfml evaluate`)",
    )
    parser.add_argument(
        "--rerank-alpha",
        type=float,
        help="alpha-qe's weight exponent, 0..100 (default 3, as `vmfml evaluate`)",
    )


def add_on_error_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help=f"an unreadable {what}: 'raise' stops naming it, 'skip' leaves it out with a warning",
    )


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def load_gallery(folder: str | Path, preprocessing: Any, on_error: str, progress: bool) -> Any:
    """The image folder (class subfolders), decoded with the model's channel count.

    With on_error="skip" every file is decoded once up front and unreadable ones are dropped with
    a warning naming each; with "raise" the first unreadable file stops the run, named.
    """
    from vmfml.data import image_folder

    channels = int(preprocessing["input_size"][0])
    return image_folder(
        folder, on_error=on_error, mode="L" if channels == 1 else "RGB", progress=progress
    )
