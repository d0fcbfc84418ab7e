"""`vmfml index`: build a faiss index over a gallery's embeddings and save it with its metadata.

The gallery comes either from an embedding file (`--embeddings`, written by `vmfml embed`) or
straight from a checkpoint and an image folder (`--checkpoint --data`), embedded on the way
through a memory-mapped scratch file. `vmfml index add | remove | compact` change a built index
in place (`vmfml.index.gallery_commands`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vmfml.index.cli_common import add_model_run_arguments, add_on_error_argument, positive_int
from vmfml.index.gallery_commands import add_subcommands

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
OPTIONS = ("nlist", "nprobe", "m", "ef_construction", "ef_search", "pq_bytes", "opq",
           "refine_factor")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("gallery (either --embeddings, or --checkpoint with --data)")
    source.add_argument("--embeddings", help="an embedding file written by `vmfml embed`")
    source.add_argument("--checkpoint", help="a vmfml checkpoint, to embed --data directly")
    source.add_argument("--data", help="a folder with one subfolder of images per class")
    parser.add_argument("--out", help="the index folder to write")
    parser.add_argument(
        "--backend",
        choices=("faiss", "milvus"),
        default="faiss",
        help="faiss: the index in the folder; milvus: in Milvus (Lite file or a server)",
    )
    parser.add_argument(
        "--milvus-uri",
        help="--backend milvus: a Milvus Lite file or http://HOST:19530 (default: a Lite "
        "database inside --out)",
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="flat",
        help="flat: exact inner product; ivf: inverted lists (large galleries); hnsw: graph "
        "(large galleries); ivfpq: compressed (product quantisation, exact re-rank from disk)",
    )
    parser.add_argument(
        "--nlist", type=positive_int, help="ivf/ivfpq cells (default 4 sqrt(N), at most N/39)"
    )
    parser.add_argument(
        "--nprobe", type=positive_int, help="ivf/ivfpq cells scanned per query (default nlist/16)"
    )
    parser.add_argument(
        "--pq-bytes", type=positive_int, help="ivfpq bytes per vector, dividing D (default D/8)"
    )
    parser.add_argument(
        "--opq", action="store_true", default=None,
        help="ivfpq: rotate the vectors (OPQ) before quantising (slower to train)",
    )  # fmt: skip
    parser.add_argument(
        "--refine-factor",
        type=positive_int,
        help="ivfpq: candidates re-ranked exactly, per result (default 16)",
    )
    parser.add_argument("--m", type=positive_int, help="hnsw links per vector (default 32)")
    parser.add_argument(
        "--ef-construction", type=positive_int, help="hnsw build candidates (default 40)"
    )
    parser.add_argument(
        "--ef-search", type=positive_int, help="hnsw search candidates (default 64)"
    )
    add_on_error_argument(parser, "gallery image")
    add_model_run_arguments(parser)
    add_subcommands(parser)


def run(args: argparse.Namespace) -> int:
    if args.action is not None:
        from vmfml.index import gallery_commands

        return gallery_commands.run(args)
    if args.out is None:
        raise ValueError("--out is required: the index folder to write")
    from vmfml.files import scratch_dir
    from vmfml.index.embeddings import load_embedding_file
    from vmfml.index.search_index import SearchIndex, check_destination
    from vmfml.index.write_log import check_no_pending_writes, replacing

    if args.embeddings and (args.checkpoint or args.data):
        raise ValueError("give either --embeddings, or --checkpoint with --data, not both")
    if not args.embeddings and not (args.checkpoint and args.data):
        raise ValueError(
            "no gallery: give --embeddings FILE.npz, or --checkpoint CKPT with --data FOLDER"
        )
    options = _kind_options(args)
    # Before any work: an --out that cannot take the index (a file, a folder of other things,
    # an index holding writes since its build).
    check_destination(args.out)
    check_no_pending_writes(args.out)
    scratch = None
    try:
        if args.embeddings:
            gallery = load_embedding_file(args.embeddings)
        else:
            # Beside --out, named after it: a killed run's scratch is removed by the next one.
            scratch = scratch_dir(Path(args.out))
            gallery = _embed_gallery(args, scratch / "gallery.npz")
            if gallery is None:  # a torchrun process other than 0: process 0 builds the index
                return 0
        meta: dict[str, Any] = {
            "model": gallery.meta.get("model"),
            "gallery_root": gallery.meta.get("data_root"),
            "embeddings_file": str(Path(args.embeddings).resolve()) if args.embeddings else None,
            "class_names": gallery.class_names,
        }
        start = time.perf_counter()
        if args.backend == "milvus":
            from vmfml.index.milvus_store import build_milvus_folder

            if "opq" in options or "refine_factor" in options:
                raise ValueError("--opq and --refine-factor apply to faiss ivfpq indexes")
            build_milvus_folder(
                args.out, gallery.embeddings, gallery.items(), meta, args.kind,
                uri=args.milvus_uri, **options,
            )  # fmt: skip
            print(
                f"indexed {len(gallery)} embeddings into Milvus in "
                f"{time.perf_counter() - start:.1f} s ({args.kind}) -> {args.out}",
                file=sys.stderr,
            )
            return 0
        if args.milvus_uri:
            raise ValueError("--milvus-uri applies to --backend milvus")
        index = SearchIndex.build(
            gallery.embeddings,
            gallery.items(),
            meta,
            kind=args.kind,
            progress=not args.no_progress,
            **options,
        )
        seconds = time.perf_counter() - start
        with replacing(args.out):
            index.save(args.out)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"indexed {len(index)} embeddings in {seconds:.1f} s: {index!r} -> {args.out}",
        file=sys.stderr,
    )
    return 0


def _kind_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given for the chosen kind; an option of another kind is refused, not ignored.

    Options left out take `SearchIndex.build`'s defaults (the one place defaults live).
    """
    given = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    valid = {
        "flat": (),
        "ivf": ("nlist", "nprobe"),
        "hnsw": ("m", "ef_construction", "ef_search"),
        "ivfpq": ("nlist", "nprobe", "pq_bytes", "opq", "refine_factor"),
    }
    wrong = [key for key in given if key not in valid[args.kind]]
    if wrong:
        flags = ", ".join("--" + key.replace("_", "-") for key in wrong)
        allowed = ", ".join("--" + key.replace("_", "-") for key in valid[args.kind]) or "none"
        raise ValueError(f"{flags} not valid with --kind {args.kind} (its options: {allowed})")
    return given


def _embed_gallery(args: argparse.Namespace, scratch_file: Path) -> Any:
    """Embed --data with --checkpoint into a scratch embedding file and open it memory-mapped."""
    from vmfml.index.embed_commands import embed_gallery
    from vmfml.index.embeddings import load_embedding_file

    path, _, _ = embed_gallery(args, scratch_file)
    return load_embedding_file(path) if path is not None else None
