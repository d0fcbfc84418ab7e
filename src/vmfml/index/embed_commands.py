"""`vmfml embed`: write the embeddings, labels and paths of a folder of images to an `.npz`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vmfml.index.cli_common import add_model_run_arguments, add_on_error_argument
from vmfml.text import plural


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a vmfml checkpoint (from `vmfml train`)"
    )
    parser.add_argument(
        "--data", required=True, help="a folder with one subfolder of images per class"
    )
    parser.add_argument("--out", required=True, help="the embedding file to write (.npz)")
    add_on_error_argument(parser, "image")
    add_model_run_arguments(parser)


def embed_gallery(args: argparse.Namespace, out: str | Path) -> tuple[Path | None, Any, Any]:
    """Embed the folder --data with --checkpoint into the file `out`: (path, dataset, model).

    Under torchrun every process embeds its shard and process 0 writes the file; the others
    get path None.
    """
    from vmfml import distributed
    from vmfml.index.cli_common import load_gallery
    from vmfml.index.embeddings import embed_folder_to_file
    from vmfml.train.checkpoint import load_embedding_model, model_file
    from vmfml.train.loop import resolve_device

    with distributed.setup(resolve_device(args.device)) as device:
        model, _ = load_embedding_model(args.checkpoint, map_location=device)
        progress = not args.no_progress and distributed.is_main()
        dataset = load_gallery(args.data, model.preprocessing, args.on_error, progress)
        path = embed_folder_to_file(
            out,
            model,
            dataset,
            checkpoint=model_file(args.checkpoint),  # the file the model came from
            data_root=args.data,
            batch_size=args.batch_size,
            device=device,
            num_workers=args.workers,
            progress=progress,
        )
    return (Path(path) if path is not None else None), dataset, model


def run(args: argparse.Namespace) -> int:
    from vmfml.files import check_output_file

    # Before the model and the images are loaded: numpy writes NAME.npz for --out NAME.
    check_output_file(args.out, "--out", make_folders=True)
    if not str(args.out).endswith(".npz"):
        check_output_file(f"{args.out}.npz", "--out", make_folders=True)
    out, dataset, model = embed_gallery(args, args.out)
    if out is None:  # a torchrun process other than 0: process 0 wrote the file
        return 0
    print(
        f"wrote {plural(len(dataset), 'embedding')} (D={model.embed_dim}, "
        f"{plural(len(dataset.class_names), 'class', 'classes')}) to {out}",
        file=sys.stderr,
    )
    return 0
