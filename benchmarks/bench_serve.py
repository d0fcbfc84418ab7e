"""Throughput and latency of `vmfml serve` under concurrent clients.

Builds a gallery of N synthetic unit vectors (default 100,000 x 128) indexed with the real
`SearchIndex`, with a small real (untrained) model recorded so that image queries work too,
starts `vmfml serve` in a subprocess on 127.0.0.1, then runs C client threads (each its own
keep-alive `httpx.Client`) against each endpoint for C in --concurrency. Every level is bounded by
a request count and a time limit. Only 127.0.0.1 is ever contacted.

With --writes the server runs with --writable and the endpoints are the live writes instead:
`add` (POST /api/items, one JSON vector with a label, a path and metadata per request, answered
201 once it is on disk) and `remove` (DELETE /api/items/{id}, a different built item each time),
beside `health` (the floor of one request) and the same writes made on the store directly.

    python benchmarks/bench_serve.py                  # writes benchmarks/results/serve.md
    python benchmarks/bench_serve.py --n 20000 --requests 200 --out /tmp/serve.md
    python benchmarks/bench_serve.py --writes         # writes benchmarks/results/serve_writes.md
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

HOST = "127.0.0.1"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="gallery vectors (default: %(default)s)")
    p.add_argument(
        "--dim", type=int, default=128, help="embedding dimension (default: %(default)s)"
    )
    p.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="index kind")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument(
        "--concurrency",
        default=None,
        help="client threads per level (default: 1,4,16; 1,2 with --writes)",
    )
    p.add_argument("--requests", type=int, default=400, help="requests per level and endpoint")
    p.add_argument(
        "--max-seconds", type=float, default=20.0, help="time cap per level and endpoint"
    )
    p.add_argument(
        "--endpoints",
        default=None,
        help="comma list of vector, item, image, add, remove, health (GET /api/health: the "
        "floor of one request) (default: vector,item,image; health,add,remove with --writes)",
    )
    p.add_argument(
        "--writes",
        action="store_true",
        help="serve with --writable and measure live adds and removes over HTTP",
    )
    p.add_argument(
        "--out",
        default=None,
        help="markdown report (default: benchmarks/results/serve.md, serve_writes.md with --writes)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def build_index(folder: Path, n: int, dim: int, kind: str, seed: int) -> None:
    """N Gaussian directions normalized to the sphere, plus an untrained small CNN with D outputs."""
    import torch

    from vmfml.index import SearchIndex, model_info
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    torch.manual_seed(seed)
    model = create_model("small_cnn", embed_dim=dim, depth=2, width=0.25)
    checkpoint = folder / "model.pt"
    save_model_checkpoint(checkpoint, model)
    items = [{"path": None, "label": f"class_{i % 100}"} for i in range(n)]
    meta = {"model": model_info(model, checkpoint), "gallery_root": None}
    SearchIndex.build(x, items, meta=meta, kind=kind, seed=seed).save(folder / "index")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(index_dir: Path, port: int, log: Path, *options: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "vmfml.cli", "serve", "--index", str(index_dir),
        "--host", HOST, "--port", str(port), "--log-level", "warning", *options,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vmfml serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"vmfml serve did not answer within 120 s:\n{log.read_text()}")


@dataclass
class Level:
    endpoint: str
    concurrency: int
    done: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    server_ms: np.ndarray  # the server's own `took_ms`: search time without HTTP and queueing
    # (searches only; a write's answer has none)

    def row(self) -> str:
        p50, p90, p99 = (np.percentile(self.latencies_ms, q) for q in (50, 90, 99))
        qps = self.done / self.seconds
        server = np.median(self.server_ms) if len(self.server_ms) else float("nan")
        return (
            f"| {self.endpoint} | {self.concurrency} | {self.done} | {self.errors} | {qps:.1f} "
            f"| {p50:.2f} | {p90:.2f} | {p99:.2f} | {server:.2f} |"
        )


def run_level(
    base: str,
    endpoint: str,
    make_request: Callable[[httpx.Client, int], httpx.Response],
    concurrency: int,
    total: int,
    max_seconds: float,
) -> Level:
    """`concurrency` threads share `total` requests; all stop at `max_seconds`."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    server: list[float] = []
    errors = 0
    deadline = time.monotonic() + max_seconds

    def worker(seed: int) -> None:
        nonlocal issued, errors
        with httpx.Client(base_url=base, timeout=60) as client:
            make_request(client, seed)  # warm the connection, not timed
            n = 0
            while time.monotonic() < deadline:
                with lock:
                    if issued >= total:
                        return
                    issued += 1
                t0 = time.perf_counter()
                r = make_request(client, seed * 1_000_003 + n)
                dt = (time.perf_counter() - t0) * 1000
                n += 1
                with lock:
                    latencies.append(dt)
                    if not r.is_success:
                        errors += 1
                    elif "took_ms" in (answer := r.json()):
                        server.append(float(answer["took_ms"]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return Level(
        endpoint,
        concurrency,
        len(latencies),
        errors,
        seconds,
        np.array(latencies),
        np.array(server),
    )


def requesters(
    n: int, dim: int, k: int, seed: int
) -> dict[str, Callable[[httpx.Client, int], httpx.Response]]:
    rng = np.random.default_rng(seed + 1)
    vectors = rng.standard_normal((256, dim)).round(5).tolist()
    from PIL import Image

    images = []
    for i in range(16):
        buffer = io.BytesIO()
        pixels = np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())

    def vector(client: httpx.Client, i: int) -> httpx.Response:
        return client.post("/api/search/vector", json={"vector": vectors[i % 256], "k": k})

    def item(client: httpx.Client, i: int) -> httpx.Response:
        return client.get(f"/api/search/item/{(i * 7919) % n}", params={"k": k})

    def image(client: httpx.Client, i: int) -> httpx.Response:
        files = {"file": ("q.png", images[i % 16], "image/png")}
        return client.post("/api/search/image", files=files, data={"k": str(k)})

    def add(client: httpx.Client, i: int) -> httpx.Response:
        body = {
            "vector": vectors[i % 256],
            "label": f"class_{i % 100}",
            "path": f"added/{i}.png",
            "metadata": {"shop": i % 7, "camera": "front"},
        }
        return client.post("/api/items", json=body)

    built = itertools.count()  # every removal names another built item, across the threads

    def remove(client: httpx.Client, i: int) -> httpx.Response:
        return client.delete(f"/api/items/{next(built) % n}")

    def health(client: httpx.Client, i: int) -> httpx.Response:
        return client.get("/api/health")

    return {
        "vector": vector,
        "item": item,
        "image": image,
        "add": add,
        "remove": remove,
        "health": health,
    }


def store_levels(index_dir: Path, dim: int, total: int, seed: int) -> list[Level]:
    """The same adds and removes made on the store directly (`open_gallery`, no HTTP), one
    at a time: what a write costs the server beside handling the request."""
    from vmfml.index.opener import open_gallery

    store = open_gallery(index_dir)
    rng = np.random.default_rng(seed + 2)
    vectors = rng.standard_normal((total, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    latencies: dict[str, list[float]] = {"add": [], "remove": []}
    added = []
    t0 = time.perf_counter()
    for i, v in enumerate(vectors):
        t = time.perf_counter()
        item = {"path": f"direct/{i}.png", "label": "direct", "meta": {"shop": i % 7}}
        added += store.add(v[None], [item])
        latencies["add"].append((time.perf_counter() - t) * 1000)
    seconds = {"add": time.perf_counter() - t0}
    t0 = time.perf_counter()
    for i in added:
        t = time.perf_counter()
        store.remove([i])
        latencies["remove"].append((time.perf_counter() - t) * 1000)
    seconds["remove"] = time.perf_counter() - t0
    store.close()
    return [
        Level(f"{op} (store, no HTTP)", 1, total, 0, seconds[op], np.array(ms), np.array([]))
        for op, ms in latencies.items()
    ]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import faiss
    import fastapi
    import torch
    import uvicorn

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (1-min load average {load:.1f} at the start, "
        f"from other work), {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"faiss {faiss.__version__}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}"
    )


def main() -> int:
    args = parse_args()
    if args.endpoints is None:
        args.endpoints = "health,add,remove" if args.writes else "vector,item,image"
    if args.concurrency is None:
        args.concurrency = "1,2" if args.writes else "1,4,16"
    if args.out is None:
        args.out = f"benchmarks/results/serve{'_writes' if args.writes else ''}.md"
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    unknown = sorted(set(endpoints) - {"vector", "item", "image", "add", "remove", "health"})
    if unknown:
        raise SystemExit(
            f"unknown endpoint(s) {unknown}; valid: vector, item, image, add, remove, health"
        )
    if {"add", "remove"} & set(endpoints) and not args.writes:
        raise SystemExit("the add and remove endpoints need --writes (a --writable server)")
    levels = [int(c) for c in args.concurrency.split(",")]
    host = machine()
    with tempfile.TemporaryDirectory(prefix="vmfml-bench-serve-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build_index(folder, args.n, args.dim, args.kind, args.seed)
        build_s = time.perf_counter() - t0
        print(f"built a {args.kind} index of {args.n} x {args.dim} in {build_s:.1f} s", flush=True)
        port = free_port()
        options = ("--writable",) if args.writes else ()
        server = start_server(folder / "index", port, folder / "serve.log", *options)
        base = f"http://{HOST}:{port}"
        try:
            make = requesters(args.n, args.dim, args.k, args.seed)
            rows = []
            for endpoint in endpoints:
                for c in levels:
                    level = run_level(
                        base, endpoint, make[endpoint], c, args.requests, args.max_seconds
                    )
                    print(level.row(), flush=True)
                    rows.append(level.row())
        finally:
            server.terminate()
            server.wait(timeout=30)
        if args.writes:
            for level in store_levels(folder / "index", args.dim, args.requests, args.seed):
                print(level.row(), flush=True)
                rows.append(level.row())

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    report = "\n".join(
        [
            "# `vmfml serve`: throughput and latency",
            "",
            f"Gallery: {args.n:,} synthetic unit vectors, D = {args.dim}, `{args.kind}` index"
            f"{' (exact inner-product search)' if args.kind == 'flat' else ''}, k = {args.k}; "
            "model: untrained `small_cnn` "
            "(depth 2, width 0.25), used by the image endpoint (28x28 PNG uploads).",
            f"Each row: up to {args.requests} requests or {args.max_seconds:g} s, shared by "
            "`concurrency` client threads (each a keep-alive httpx client), after one untimed "
            "request per thread. Latency is per request as the client sees it; the clients run on "
            "the same machine as the server, so they compete with it for the CPUs. `server p50 ms` "
            "is the median of the server's own `took_ms` (decode, embed, search; no HTTP, no "
            "queueing).",
            *(
                [
                    "",
                    "Writes (--writes): the server runs with `--writable`; `add` is POST "
                    "/api/items with one JSON vector, a label, a path and two metadata fields "
                    "per request, answered 201 once SQLite has committed it (WAL, "
                    "synchronous=FULL: fsynced); `remove` is DELETE /api/items/{id} of a "
                    "different built item each time. The index folder (where the fsyncs go) is "
                    f"in {tempfile.gettempdir()}. `health` (GET /api/health) is the floor of "
                    "one request on this machine. The `(store, no HTTP)` rows make the same "
                    "writes on the store directly (`open_gallery` in the benchmark's process, "
                    "after the server stopped), one at a time: what a write costs beside the "
                    "request.",
                ]
                if args.writes
                else []
            ),
            "",
            f"Machine: {host}.",
            "",
            f"Command: `{command}`",
            "",
            "| endpoint | concurrency | requests | errors | requests/s | p50 ms | p90 ms | p99 ms "
            "| server p50 ms |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
