"""`vmfml serve --index PATH`: the search page and HTTP API under uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="folder written by `vmfml index`")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        help="largest accepted upload in MiB, refused with 413 while streaming (default: %(default)s)",
    )
    parser.add_argument(
        "--max-k",
        type=int,
        default=100,
        help="most neighbours one request may ask for (default: %(default)s)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=40_000_000,
        help="largest accepted image in pixels, checked before decoding (default: %(default)s)",
    )
    parser.add_argument(
        "--gallery-root",
        default=None,
        help="folder holding the gallery images, when it moved since the index was built "
        "(default: the index's own record)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads one search may use (faiss OpenMP, torch intra-op). Concurrent requests "
        "already run in parallel, and OpenMP teams stall badly on a busy machine "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level; `warning` also silences the access log (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    try:
        import uvicorn

        from vmfml.web.app import ServeSettings, create_app
    except ImportError as err:
        raise ValueError(
            f"`vmfml serve` needs the serve extra ({err.name} is missing): pip install 'vmfml[serve]'"
        ) from err
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # Searches run in the server's worker threads, where `omp_set_num_threads` (a per-thread
    # setting) does not reach: the OpenMP runtime must read the limit from the environment when
    # faiss and torch load it. Measured on a busy 2-core machine: a 20k x 128 flat search took
    # 32 ms with 2 OpenMP threads and 0.5 ms with 1.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from vmfml.index import Searcher

    torch.set_num_threads(args.threads)

    settings = ServeSettings(
        max_upload_mb=args.max_upload_mb,
        max_k=args.max_k,
        default_k=min(12, args.max_k),
        max_image_pixels=args.max_image_pixels,
        gallery_root=args.gallery_root,
    )
    searcher = Searcher.from_index(args.index)
    app = create_app(searcher, settings)
    if not _is_loopback(args.host):
        print(
            f"vmfml serve: warning: listening on {args.host}, reachable from other machines; "
            "the API has no authentication",
            file=sys.stderr,
        )
    print(
        f"vmfml serve: {len(searcher.index.items)} items from {args.index} "
        f"on http://{args.host}:{args.port}/",
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.log_level in ("info", "debug"),
    )
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
