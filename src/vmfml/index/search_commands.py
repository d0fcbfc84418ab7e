"""`vmfml search`: the top-k gallery items of query images (or of an embedding file).

Queries are an image, a folder of images (searched recursively; files in class subfolders take
the subfolder's name as their label), or an embedding file from `vmfml embed`. Where a query's
label is known, each hit is marked correct or wrong and precision@1 / precision@k are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vmfml.files import check_output_file
from vmfml.index.cli_common import (
    add_model_run_arguments,
    add_on_error_argument,
    add_rerank_arguments,
    positive_int,
)

# Queries embedded and searched per round: bounds memory for a folder of many thousand images.
QUERY_CHUNK = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "queries",
        nargs="+",
        metavar="QUERY",
        help="an image, a folder of images, or an embedding file (.npz)",
    )
    parser.add_argument("--index", required=True, help="an index folder written by `vmfml index`")
    parser.add_argument("-k", type=positive_int, default=5, help="results per query (default 5)")
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format"
    )
    parser.add_argument("--grid", help="also write a PNG of each query beside its top-k hits")
    parser.add_argument(
        "--grid-rows",
        type=positive_int,
        default=16,
        help="queries in the grid, spread evenly (default 16)",
    )
    parser.add_argument(
        "--thumb", type=positive_int, default=96, help="grid thumbnail side in pixels"
    )
    parser.add_argument(
        "--checkpoint", help="the index's model checkpoint, if it moved since indexing"
    )
    parser.add_argument(
        "--where",
        action="append",
        metavar="FILTER",
        help="only items that pass: label=NAME, path^=PREFIX, meta.NAME=VALUE (repeatable: ANDed)",
    )
    parser.add_argument("--milvus-uri", help="a Milvus index: this Milvus, not the recorded one")
    parser.add_argument("--nprobe", type=positive_int, help="ivf/ivfpq: cells scanned per query")
    parser.add_argument(
        "--ef-search", type=positive_int, help="hnsw: candidates explored per query"
    )
    parser.add_argument(
        "--refine-factor", type=positive_int, help="ivfpq: candidates re-ranked exactly, per hit"
    )
    add_rerank_arguments(parser)
    add_on_error_argument(parser, "query image")
    add_model_run_arguments(parser, batch_size=64, loader=False)


def run(args: argparse.Namespace) -> int:
    from vmfml.index.rerank import search_rerank
    from vmfml.index.where import parse_where

    args.where = parse_where(args.where)  # a bad filter is refused before any work
    args.rerank = search_rerank(args.rerank, args.rerank_n, args.rerank_alpha)
    if args.grid:
        check_output_file(args.grid, "--grid")
    embedding_files = [q for q in args.queries if str(q).endswith(".npz")]
    if embedding_files and len(embedding_files) != len(args.queries):
        raise ValueError(
            "give either image queries (files, folders) or embedding files (.npz), not both"
        )
    if embedding_files:
        index, queries, results = _search_embedding_files(args, embedding_files)
    else:
        index, queries, results = _search_images(args)
    report = _summary(queries, results, args.k)
    if args.format == "json":
        payload = {
            "index": str(args.index),
            "k": args.k,
            "rerank": args.rerank.describe(),
            "queries": [
                {"query": str(src), "label": label, "hits": hits}
                for (src, label), hits in zip(queries, results, strict=True)
            ],
            **report,
        }
        print(json.dumps(payload, indent=2))
    else:
        _print_table(queries, results)
        if report:
            print(
                f"{report['labelled_queries']} labelled queries: precision@1 = {report['precision@1']:.4f}, "
                f"precision@{args.k} = {report[f'precision@{args.k}']:.4f}"
            )
    if args.grid:
        from vmfml.index.grid import save_result_grid

        rows = np.unique(
            np.linspace(0, len(queries) - 1, min(args.grid_rows, len(queries))).round().astype(int)
        )
        out = save_result_grid(
            args.grid,
            [queries[i] for i in rows],
            [results[i] for i in rows],
            k=args.k,
            thumb=args.thumb,
        )
        print(f"wrote {out} ({len(rows)} queries)", file=sys.stderr)
    return 0


def _search_images(
    args: argparse.Namespace,
) -> tuple[Any, list[tuple[Path, str | None]], list[list[Any]]]:
    from vmfml.index.images import list_query_images, readable_images
    from vmfml.index.searcher import Searcher
    from vmfml.train.loop import resolve_device

    queries = [q for source in args.queries for q in list_query_images(source)]
    searcher = Searcher.from_index(
        args.index,
        checkpoint=args.checkpoint,
        milvus_uri=args.milvus_uri,
        device=resolve_device(args.device),
        batch_size=args.batch_size,
    )
    searcher.index.set_search_params(args.nprobe, args.ef_search, args.refine_factor)
    if args.on_error == "skip":
        channels = int(searcher.preprocessing["input_size"][0])
        queries = readable_images(queries, channels, "query", "query images")
    results: list[list[Any]] = []
    for start in range(0, len(queries), QUERY_CHUNK):
        paths = [path for path, _ in queries[start : start + QUERY_CHUNK]]
        results.extend(searcher.search_images(paths, args.k, args.where, args.rerank))
    return searcher.index, queries, results


def _search_embedding_files(
    args: argparse.Namespace, files: list[str]
) -> tuple[Any, list[tuple[Path, str | None]], list[list[Any]]]:
    from vmfml.index.embeddings import load_embedding_file
    from vmfml.index.model_record import check_same_model
    from vmfml.index.opener import open_gallery
    from vmfml.index.rerank import reranked_hits

    index = open_gallery(args.index, milvus_uri=args.milvus_uri)
    index.set_search_params(args.nprobe, args.ef_search, args.refine_factor)
    queries: list[tuple[Path, str | None]] = []
    results: list[list[Any]] = []
    for file in files:
        data = load_embedding_file(file)
        check_same_model(
            index.meta.get("model"), data.meta.get("model"), index_name=f"the index {args.index}"
        )
        if data.dim != index.dim:
            raise ValueError(
                f"{file} holds {data.dim}-dimensional embeddings but the index {args.index} "
                f"holds {index.dim}-dimensional ones"
            )
        labels = data.label_names()
        for start in range(0, len(data), QUERY_CHUNK):
            chunk = np.asarray(data.embeddings[start : start + QUERY_CHUNK])
            results.extend(reranked_hits(index, chunk, args.k, args.where, args.rerank))
        queries.extend(
            (Path(p) if p else Path(f"{file}#{i}"), labels[i]) for i, p in enumerate(data.paths)
        )
    return index, queries, results


def _summary(
    queries: list[tuple[Path, str | None]], results: list[list[Any]], k: int
) -> dict[str, Any]:
    """precision@1 and precision@k over the queries whose label is known (empty if none)."""
    scored = [
        (label, hits)
        for (_, label), hits in zip(queries, results, strict=True)
        if label is not None
    ]
    if not scored:
        return {}
    p1 = np.mean([bool(hits) and hits[0]["label"] == label for label, hits in scored])
    pk = np.mean([sum(h["label"] == label for h in hits[:k]) / k for label, hits in scored])
    return {"labelled_queries": len(scored), "precision@1": float(p1), f"precision@{k}": float(pk)}


def _print_table(queries: list[tuple[Path, str | None]], results: list[list[Any]]) -> None:
    for n, ((source, label), hits) in enumerate(zip(queries, results, strict=True), start=1):
        known = f"  [label: {label}]" if label is not None else ""
        print(f"query {n}/{len(queries)}: {source}{known}")
        width = max([5, *(len(str(h["label"])) for h in hits)])
        print(f"  {'rank':>4}  {'score':>7}  {'label':<{width}}  {'match':<5}  path")
        for rank, hit in enumerate(hits, start=1):
            match = (
                ""
                if label is None or hit["label"] is None
                else ("yes" if hit["label"] == label else "no")
            )
            print(
                f"  {rank:>4}  {hit['score']:>7.4f}  {hit['label']!s:<{width}}  {match:<5}  {hit['path']}"
            )
