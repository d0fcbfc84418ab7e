"""`vmfml index add | remove | compact`: change a built gallery in place, without a rebuild.

    vmfml index add --index DIR SOURCE...      images (files, or folders searched recursively:
                                               a class subfolder names the label) embedded with
                                               the index's own model, or embedding files (.npz)
    vmfml index remove --index DIR ID...       remove items by id
    vmfml index compact --index DIR            rebuild from the live items, keeping their ids

Each write is on disk before the command returns, and a process holding the gallery (`vmfml
serve`, a `Searcher`) sees it by its next search (see `vmfml.index.gallery`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vmfml.index.cli_common import add_model_run_arguments, add_on_error_argument


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    add = sub.add_parser(
        "add",
        help="add images or embeddings to a built index",
        description="Add images (embedded with the index's model) or embedding files (.npz).",
    )
    add.add_argument("sources", nargs="+", metavar="SOURCE", help="an image, a folder, or a .npz")
    _index_arguments(add)
    add.add_argument(
        "--label", help="the label of every added item (default: its class subfolder's name)"
    )
    add.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="metadata of every added item, for `search --where meta.NAME=VALUE` (repeatable)",
    )
    add.add_argument("--checkpoint", help="the index's model checkpoint, if it moved")
    add_on_error_argument(add, "image")
    add_model_run_arguments(add, batch_size=64, loader=False)
    remove = sub.add_parser(
        "remove", help="remove items by id", description="Remove items from an index by id."
    )
    remove.add_argument("ids", nargs="+", type=int, metavar="ID", help="item ids")
    _index_arguments(remove)
    compact = sub.add_parser(
        "compact",
        help="rebuild an index from its live items, keeping their ids",
        description="Fold the writes since the build into a new build (ids kept).",
    )
    _index_arguments(compact)


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="an index folder written by `vmfml index`")
    parser.add_argument(
        "--milvus-uri", help="a Milvus index: use this Milvus instead of the recorded one"
    )


def run(args: argparse.Namespace) -> int:
    from vmfml.index.opener import open_gallery

    gallery = open_gallery(args.index, milvus_uri=args.milvus_uri)
    try:
        if args.action == "add":
            ids = _add(args, gallery)
            print(
                f"added {len(ids)} items (ids {ids[0]}..{ids[-1]}) to {args.index}: "
                f"{len(gallery)} items",
                file=sys.stderr,
            )
            print(json.dumps({"added": ids}))
        elif args.action == "remove":
            removed = gallery.remove(args.ids)
            print(
                f"removed {len(removed)} items from {args.index}: {len(gallery)} left",
                file=sys.stderr,
            )
            print(json.dumps({"removed": removed}))
        else:
            compact = getattr(gallery, "compact", None)
            if compact is None:
                raise ValueError(f"{args.index} is a Milvus index: Milvus compacts by itself")
            compact()
            print(f"compacted {args.index}: {len(gallery)} items", file=sys.stderr)
    finally:
        gallery.close()
    return 0


def _add(args: argparse.Namespace, gallery: Any) -> list[int]:
    meta = dict(_meta_pair(text) for text in args.meta)
    npz = [s for s in args.sources if str(s).endswith(".npz")]
    if npz and len(npz) != len(args.sources):
        raise ValueError("give either images (files, folders) or embedding files (.npz), not both")
    if npz:
        vectors, items = _from_embedding_files(gallery, npz, args.index)
    else:
        vectors, items = _from_images(gallery, args)
    for item in items:
        item["meta"] = meta
        if args.label is not None:
            item["label"] = args.label
    return list(gallery.add(vectors, items))


def _meta_pair(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name or not raw:
        raise ValueError(f"--meta {text!r}: expected NAME=VALUE, e.g. camera=3")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"--meta {text!r}: the value must be a string, number or true/false")
    return name, value


def _from_embedding_files(
    gallery: Any, files: list[str], index: str
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    from vmfml.index.embeddings import load_embedding_file
    from vmfml.index.model_record import check_same_model

    vectors, items = [], []
    for file in files:
        data = load_embedding_file(file)
        check_same_model(
            gallery.meta.get("model"), data.meta.get("model"), index_name=f"the index {index}"
        )
        if data.dim != gallery.dim:
            raise ValueError(
                f"{file} holds {data.dim}-dimensional embeddings but the index {index} holds "
                f"{gallery.dim}-dimensional ones"
            )
        vectors.append(np.asarray(data.embeddings))
        items.extend(data.items())
    return np.concatenate(vectors), items


def _from_images(gallery: Any, args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:

    from vmfml.index.images import list_query_images, readable_images
    from vmfml.index.searcher import Searcher
    from vmfml.train.checkpoint import load_embedding_model
    from vmfml.train.loop import resolve_device

    checkpoint = args.checkpoint or (gallery.meta.get("model") or {}).get("checkpoint")
    if checkpoint is None:
        raise ValueError(f"the index {args.index} records no model; pass --checkpoint")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"the checkpoint recorded by the index {args.index} is missing: {checkpoint} "
            "(pass --checkpoint with its new location)"
        )
    device = resolve_device(args.device)
    model, _ = load_embedding_model(checkpoint, map_location=device)
    searcher = Searcher(
        model, gallery, device=device, batch_size=args.batch_size, checkpoint=checkpoint
    )
    images = [image for source in args.sources for image in list_query_images(source)]
    if args.on_error == "skip":
        images = readable_images(images, int(searcher.preprocessing["input_size"][0]))
    vectors = searcher.embed_images([path for path, _ in images])
    root = gallery.meta.get("gallery_root")
    items = [{"path": stored_path(path, root), "label": label} for path, label in images]
    outside = sum(Path(str(item["path"])).is_absolute() for item in items)
    if root and outside:
        print(
            f"vmfml index add: {outside} of {len(items)} images lie outside the gallery folder "
            f"{root}: stored by absolute path (a path^= filter names them so; `vmfml serve` "
            "shows no thumbnail for them)",
            file=sys.stderr,
        )
    return vectors.numpy(), items


def stored_path(path: str | Path, root: str | None) -> str:
    """An added image's path as the index stores it: relative to the gallery folder when it lies
    inside it (like the built items, so `path^=shop7/` and the server's thumbnails reach it),
    else absolute."""
    resolved = Path(path).resolve()
    if root is not None and resolved.is_relative_to(Path(root).resolve()):
        return resolved.relative_to(Path(root).resolve()).as_posix()
    return str(resolved)
