"""The `vmfml` command.

Each subcommand lives beside the code it drives, in a `commands.py` module that defines
`add_arguments(parser)` and `run(args) -> int`. This file only wires them together, importing a
subcommand's module when it is used so that `vmfml --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vmfml.train.commands", "train an embedding model (vMF loss by default)"),
    "evaluate": (
        "vmfml.train.eval_commands",
        "evaluate a checkpoint: accuracy and retrieval metrics",
    ),
    "classify": (
        "vmfml.openset.commands",
        "classify new images: the known class and its probability, or unknown",
    ),
    "embed": (
        "vmfml.index.embed_commands",
        "write embeddings, labels and paths of a folder of images",
    ),
    "index": ("vmfml.index.index_commands", "build a faiss index over embeddings"),
    "search": ("vmfml.index.search_commands", "search an index with an image or a folder"),
    "export": ("vmfml.export.commands", "export the embedding model to ONNX or TorchScript"),
    "bench": ("vmfml.bench.commands", "run the loss comparison benchmark"),
    "serve": ("vmfml.web.commands", "serve a search page and HTTP API over an index"),
    "info": (
        "vmfml.info",
        "versions, devices, faiss, Milvus and data folders (for bug reports)",
    ),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmfml",
        description="Directional-statistics deep metric learning: train, evaluate, index, search, serve.",
    )
    from vmfml import __version__

    parser.add_argument("--version", action="version", version=f"vmfml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (torch, faiss... are slow to load).
        if name == wanted:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        with warnings.catch_warnings():  # restores Python's warning display on return
            warnings.showwarning = _one_line_warnings(args.command)
            return int(module.run(args) or 0)
    # User errors (bad values, missing files, unknown keys) are raised as these types by the parts.
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"vmfml {args.command}: error: {message}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from vmfml.distributed import ProcessGroupLost

        if not isinstance(err, ProcessGroupLost):
            raise
        print(f"vmfml {args.command}: stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vmfml {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warnings(command: str) -> Any:
    """vmfml's own warnings (bad images skipped, no validation split, training that did not
    help) print as one line, `vmfml CMD: warning: MESSAGE`; other libraries' keep Python's
    format, with the file and line that raised them."""
    package = str(Path(__file__).resolve().parent)
    default = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if category is UserWarning and str(Path(filename).resolve()).startswith(package):
            print(f"vmfml {command}: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":
    sys.exit(main())
