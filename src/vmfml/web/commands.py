"""`vmfml serve --index PATH`: the search page and HTTP API under uvicorn.

The server listens on 127.0.0.1 unless told otherwise. An API key (from --api-key-file or the
VMFML_API_KEY environment variable, never the command line, where other users of the machine can
read it) is required on /api/ once given; listening on any other address without one is refused
unless --no-auth says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any

from vmfml.index.cli_common import add_rerank_arguments

API_KEY_VARIABLE = "VMFML_API_KEY"
WILDCARD_HOSTS = ("0.0.0.0", "::")  # every address of the machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="folder written by `vmfml index`")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_finite,
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
        default=16_000_000,
        help="largest image decoded, in pixels, checked from the header before decoding; a "
        "larger JPEG is decoded at 1/2, 1/4 or 1/8 of its size, anything else refused (413) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--decode-slots",
        type=int,
        default=2,
        help="images decoded at once; a request that finds none free within 5 s gets 503 with "
        "Retry-After. Bounds the memory a burst of uploads can take (default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=_positive_finite,
        default=60.0,
        help="seconds within which a request body must arrive whole, else 408 (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="comma-separated host names clients may reach the server by (the Host header), "
        "besides 127.0.0.1, localhost, ::1 and --host itself; others get 400 (DNS rebinding). "
        "With --host 0.0.0.0, give the machine's names and addresses",
    )
    parser.add_argument(
        "--api-key-file",
        default=None,
        help=f"file holding the API key /api/ routes require as 'Authorization: Bearer KEY' "
        f"(or set {API_KEY_VARIABLE}; the search page asks for it once)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="listen on a non-loopback --host without an API key: anyone who can reach the "
        "port can search the gallery",
    )
    parser.add_argument(
        "--writable",
        action="store_true",
        help="accept POST /api/items (add an item: a vector, or an image embedded here) and "
        "DELETE /api/items/ID (remove one); without it both answer 403",
    )
    parser.add_argument(
        "--gallery-root",
        default=None,
        help="folder holding the gallery images, when it moved since the index was built "
        "(default: the index's own record)",
    )
    parser.add_argument(
        "--classifier",
        default=None,
        help="classifier.pt of the index's model for /api/classify and the page's class line "
        "(default: the one beside the index's checkpoint, when there is one)",
    )
    add_rerank_arguments(parser)
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
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    # Searches run in the server's worker threads, where `omp_set_num_threads` (a per-thread
    # setting) does not reach: the OpenMP runtime must read the limit from the environment when
    # faiss and torch load it, so before anything below imports them (tests/web/test_server.py).
    # Measured on a busy 2-core machine: a 100k x 128 flat search took 25 ms with 2 OpenMP
    # threads and 2.6 ms with 1.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        import uvicorn

        from vmfml.heap import map_large_buffers_separately
        from vmfml.web.app import ServeSettings, create_app
    except ImportError as err:
        raise ValueError(
            f"`vmfml serve` needs the serve extra ({err.name} is missing): pip install 'vmfml[serve]'"
        ) from err
    import torch

    from vmfml.index import Searcher
    from vmfml.index.rerank import search_rerank

    torch.set_num_threads(args.threads)

    api_key = _read_api_key(args.api_key_file)
    if args.no_auth and api_key is not None:
        raise ValueError("--no-auth and an API key contradict each other: give one of them")
    if not _is_loopback(args.host) and api_key is None and not args.no_auth:
        raise ValueError(
            f"--host {args.host} is reachable from other machines: give an API key "
            f"(--api-key-file FILE or {API_KEY_VARIABLE}), or pass --no-auth to serve "
            "without one"
        )
    if args.gallery_root is not None and not Path(args.gallery_root).is_dir():
        raise FileNotFoundError(f"--gallery-root {args.gallery_root}: no such folder")
    rerank = search_rerank(args.rerank, args.rerank_n, args.rerank_alpha)  # evaluate's defaults
    settings = ServeSettings(
        max_upload_mb=args.max_upload_mb,
        max_k=args.max_k,
        default_k=min(12, args.max_k),
        max_image_pixels=args.max_image_pixels,
        gallery_root=args.gallery_root,
        decode_slots=args.decode_slots,
        body_timeout_s=args.body_timeout,
        allowed_hosts=allowed_hosts(args.host, args.allowed_hosts),
        api_key=api_key,
        writable=args.writable,
        rerank=rerank.method,
        rerank_n=rerank.n,
        rerank_alpha=rerank.alpha,
    )
    # Decoded images' buffers are unmapped as soon as they are freed: a burst of uploads does
    # not leave the process larger for good (BENCHMARKS.md 4).
    map_large_buffers_separately()
    searcher = Searcher.from_index(args.index)
    app = create_app(searcher, settings, _load_classifier(args.classifier, searcher))
    # Bound here, before the address is printed: a port in use is one error line, not a URL
    # printed and then uvicorn's traceback.
    listener = _listen(args.host, args.port)
    port = listener.getsockname()[1]
    if not _is_loopback(args.host) and api_key is None:
        print(
            f"vmfml serve: warning: listening on {args.host}, reachable from other machines, "
            "without an API key (--no-auth)",
            file=sys.stderr,
        )
    if args.host in WILDCARD_HOSTS and not args.allowed_hosts.strip():
        print(
            f"vmfml serve: warning: listening on {args.host}, but only requests to "
            f"{', '.join(ServeSettings.allowed_hosts)} are answered (Host header); name the "
            "others with --allowed-hosts NAME,ADDRESS",
            file=sys.stderr,
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"vmfml serve: {len(searcher.index)} items from {args.index} "
        f"on http://{host}:{port}/"
        + (" (API key required)" if api_key else "")
        + (" (writable)" if args.writable else "")
        + (f" (re-ranking by default: {rerank.describe()})" if rerank.method != "none" else ""),
        file=sys.stderr,
    )
    config = uvicorn.Config(
        app, log_level=args.log_level, access_log=args.log_level in ("info", "debug")
    )
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def allowed_hosts(host: str, extra: str) -> tuple[str, ...]:
    """The Host header values answered: loopback names, `--host` unless a wildcard, `extra`."""
    from vmfml.web.settings import LOOPBACK_HOSTS

    names = [*LOOPBACK_HOSTS]
    if not _is_loopback(host) and host not in WILDCARD_HOSTS:
        names.append(f"[{host}]" if ":" in host else host)  # how a URL spells the address
    names.extend(h.strip().lower() for h in extra.split(",") if h.strip())
    return tuple(dict.fromkeys(names))


def _positive_finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _read_api_key(path: str | None) -> str | None:
    """The key from --api-key-file, else from the environment; None when neither is given."""
    from_env = os.environ.get(API_KEY_VARIABLE)
    if path is not None and from_env:
        raise ValueError(f"give the API key once: --api-key-file or {API_KEY_VARIABLE}, not both")
    if path is not None:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise FileNotFoundError(f"--api-key-file {path}: {err.strerror}") from err
        if not key:
            raise ValueError(f"--api-key-file {path} is empty")
        return key
    if from_env is not None:
        key = from_env.strip()
        if not key:
            raise ValueError(f"{API_KEY_VARIABLE} is set but empty")
        return key
    return None


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a ValueError saying why not (a port in use)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says
    # TCP, and with Nagle on every response waited ~40 ms for a delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as err:
        listener.close()
        hint = "; another server is using it, choose another --port" if port else ""
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from err
    listener.set_inheritable(True)
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _load_classifier(path: str | None, searcher: Any) -> Any:
    """--classifier, else the classifier.pt beside the index's checkpoint (or its run's best.pt);
    None, said on stderr, when there is none: /api/classify then answers 404."""
    from vmfml.openset import OpenSetClassifier
    from vmfml.train.checkpoint import model_file
    from vmfml.train.open_set import classifier_file

    if path is None:
        checkpoint = (searcher.index.meta.get("model") or {}).get("checkpoint")
        found = classifier_file(model_file(checkpoint)) if checkpoint else None
        if found is None or not found.is_file():
            print(
                "vmfml serve: classification off: the index's model has no classifier.pt beside "
                "it (give --classifier FILE; `vmfml classify` fits one for an older run)",
                file=sys.stderr,
            )
            return None
        path = str(found)
    classifier = OpenSetClassifier.load(path)
    if classifier.mean_directions.shape[1] != searcher.index.dim:
        raise ValueError(
            f"--classifier {path} is for {classifier.mean_directions.shape[1]}-d embeddings, "
            f"the index holds {searcher.index.dim}-d ones: give the classifier of the index's model"
        )
    return classifier
