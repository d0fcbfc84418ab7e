"""Index and evaluation at scale: a million-vector gallery on a small CPU machine.

What it measures, in one run:

1. A gallery of N unit vectors (default 1,000,000 x 128: synthetic, clustered around random
   centres like class embeddings) generated in chunks into a memory-mapped file, then indexed
   with `vmfml.index.SearchIndex` (flat, ivf, hnsw) chunk by chunk. For each: build time, peak
   resident memory of the stage, and for the approximate kinds recall@10 against the exact
   (flat) top-10 and queries per second at several nprobe / efSearch values.
2. Evaluation of retrieval metrics on n labelled embeddings (default 50,000 in 100 classes, a
   size at which pytorch-metric-learning's AccuracyCalculator still fits comfortably: it keeps
   the whole n x max-class-size neighbour table in memory at once): `vmfml.metrics.retrieval_metrics` against
   `AccuracyCalculator`, same metrics (Recall@1, MAP@R, R-Precision; no NMI), time, peak memory,
   and the values (they must agree).

Peak memory per stage is the kernel's high-water mark (VmHWM), reset before each stage through
/proc/self/clear_refs; where that is not allowed, the process-lifetime maximum is reported.

Usage:
    python benchmarks/bench_index.py                 # full run (about 10 minutes on 2 cores;
                                                     # HNSW over the first 200k vectors)
    python benchmarks/bench_index.py --quick         # CI size: 100k gallery, 10k evaluation
    python benchmarks/bench_index.py --out FILE.md   # where to write the markdown table
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = Path(__file__).parent / "results" / "index.md"


# ---- memory ----------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident memory (VmRSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Stage:
    name: str
    seconds: float
    peak_mib: float
    start_mib: float
    extra: dict[str, Any] = field(default_factory=dict)


def measure(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Stage]:
    """Run `fn(*args, **kwargs)`, timing it and recording the peak resident memory meanwhile."""
    gc.collect()
    reset_peak_rss()
    before = rss_mib()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, Stage(name, time.perf_counter() - start, peak_rss_mib(), before)


# ---- data ------------------------------------------------------------------------------------


def clustered_chunk(
    centres: np.ndarray, n: int, rng: np.random.Generator, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around random centres (float32 [n, D]) and their centre index [n]."""
    d = centres.shape[1]
    labels = rng.integers(0, len(centres), n)
    x = centres[labels] + spread * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False), labels


def make_gallery(
    path: Path, n: int, d: int, clusters: int, spread: float, seed: int, chunk: int = 100_000
) -> np.ndarray:
    """Write n clustered unit vectors to a memory-mapped .npy, chunk by chunk."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, chunk):
        out[start : start + chunk] = clustered_chunk(centres, min(chunk, n - start), rng, spread)[0]
    out.flush()
    return out


def make_queries(n: int, d: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Queries from the gallery's distribution (same centres), drawn independently."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return clustered_chunk(centres, n, np.random.default_rng(seed + 1), spread)[0]


# ---- index benchmark -------------------------------------------------------------------------


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(a) & set(b)) for a, b in zip(ids.tolist(), exact.tolist(), strict=True)]
    return float(np.sum(hits) / exact.size)


def timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, len(queries) / (time.perf_counter() - start)


def bench_indexes(
    args: argparse.Namespace, rows: list[dict[str, Any]], stages: list[Stage]
) -> None:
    from vmfml.index import SearchIndex

    k = 10
    with tempfile.TemporaryDirectory(prefix="vmfml-bench-") as tmp:
        gallery, stage = measure(
            "generate gallery (memmap, chunks)",
            make_gallery,
            Path(tmp) / "gallery.npy",
            args.n,
            args.dim,
            args.clusters,
            args.spread,
            args.seed,
        )
        stages.append(stage)
        queries = make_queries(args.queries, args.dim, args.clusters, args.spread, args.seed)
        print(f"gallery {gallery.shape}, queries {queries.shape}", file=sys.stderr)

        flat, stage = measure("build flat", SearchIndex.build, gallery, kind="flat")
        stages.append(stage)
        (exact, qps), stage = measure("search flat", timed_search, flat, queries, k)
        stages.append(stage)
        rows.append(
            {
                "kind": "flat (exact)",
                "param": "-",
                "recall@10": 1.0,
                "qps": qps,
                "build_s": stages[-2].seconds,
                "peak_mib": stages[-2].peak_mib,
            }
        )
        del flat
        print(f"flat: {qps:.0f} q/s", file=sys.stderr)

        ivf, stage = measure(
            f"build ivf (nlist={args.nlist})",
            SearchIndex.build,
            gallery,
            kind="ivf",
            nlist=args.nlist,
            train_size=args.train_size,
        )
        stages.append(stage)
        for nprobe in args.nprobe:
            ivf.set_search_params(nprobe=nprobe)
            ids, qps = timed_search(ivf, queries, k)
            rows.append(
                {
                    "kind": f"ivf nlist={args.nlist}",
                    "param": f"nprobe={nprobe}",
                    "recall@10": recall_at(ids, exact),
                    "qps": qps,
                    "build_s": stage.seconds,
                    "peak_mib": stage.peak_mib,
                }
            )
            print(
                f"ivf nprobe={nprobe}: recall {rows[-1]['recall@10']:.4f}, {qps:.0f} q/s",
                file=sys.stderr,
            )
        del ivf
        hnsw_rows = gallery[: args.hnsw_n]
        hnsw, stage = measure(
            f"build hnsw (M={args.m}, N={len(hnsw_rows):,})",
            SearchIndex.build,
            hnsw_rows,
            kind="hnsw",
            m=args.m,
            ef_construction=args.ef_construction,
            progress=True,
        )
        stages.append(stage)
        # When HNSW indexes a prefix of the gallery, its reference is the exact search of that prefix.
        reference = exact
        if len(hnsw_rows) < len(gallery):
            sub = SearchIndex.build(hnsw_rows, kind="flat")
            reference = sub.search(queries, k)[1]
            del sub
        for ef in args.ef_search:
            hnsw.set_search_params(ef_search=ef)
            ids, qps = timed_search(hnsw, queries, k)
            rows.append(
                {
                    "kind": f"hnsw M={args.m}"
                    + ("" if len(hnsw_rows) == len(gallery) else f" (N={len(hnsw_rows):,})"),
                    "param": f"efSearch={ef}",
                    "recall@10": recall_at(ids, reference),
                    "qps": qps,
                    "build_s": stage.seconds,
                    "peak_mib": stage.peak_mib,
                }
            )
            print(
                f"hnsw ef={ef}: recall {rows[-1]['recall@10']:.4f}, {qps:.0f} q/s", file=sys.stderr
            )
        del hnsw, gallery


# ---- evaluation benchmark --------------------------------------------------------------------


def bench_evaluation(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from vmfml.metrics import retrieval_metrics

    rng = np.random.default_rng(args.seed + 7)
    centres = rng.standard_normal((args.eval_classes, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x, labels = clustered_chunk(centres, args.eval_n, rng, args.eval_spread)
    out = []

    def ours() -> dict[str, float]:
        return retrieval_metrics(x, labels, ks=(1,), nmi=False, progress=False)

    values, stage = measure("vmfml retrieval_metrics", ours)
    out.append(
        {
            "impl": "vmfml.metrics.retrieval_metrics",
            "seconds": stage.seconds,
            "peak_mib": stage.peak_mib,
            "start_mib": stage.start_mib,
            "recall@1": values["recall@1"],
            "map@r": values["map@r"],
            "r_precision": values["r_precision"],
        }
    )

    def pml() -> dict[str, float]:
        import torch

        calc = AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
            k="max_bin_count",
            device=torch.device("cpu"),
        )
        return calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))

    values, stage = measure("pytorch-metric-learning AccuracyCalculator", pml)
    out.append(
        {
            "impl": "pytorch-metric-learning AccuracyCalculator",
            "seconds": stage.seconds,
            "peak_mib": stage.peak_mib,
            "start_mib": stage.start_mib,
            "recall@1": values["precision_at_1"],
            "map@r": values["mean_average_precision_at_r"],
            "r_precision": values["r_precision"],
        }
    )
    return out


# ---- report ----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import faiss
    import torch

    return f"{cpu}, {cores} cores available (shared), {mem:.0f} GiB RAM; Python {platform.python_version()}, faiss {faiss.__version__}, torch {torch.__version__}"


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    stages: list[Stage],
    evals: list[dict[str, Any]],
    total: float,
) -> str:
    command = "python benchmarks/bench_index.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "# Index and evaluation benchmark",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command.strip()}` (total {total / 60:.1f} min).",
        "",
        f"Gallery: {args.n:,} x {args.dim} synthetic unit vectors around {args.clusters:,} random centres, generated in "
        f"chunks into a memory-mapped file; {args.queries:,} queries from the same distribution; recall@10 is the share "
        "of the exact top-10 (flat index) that the approximate index returns. Peak RSS is the process's "
        "high-water mark during the stage (reset before each stage).",
        "",
        "| index | search parameter | recall@10 | queries/s | build (s) | peak RSS during build (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['param']} | {r['recall@10']:.4f} | {r['qps']:,.0f} | {r['build_s']:.1f} | {r['peak_mib']:,.0f} |"
        )
    lines += [
        "",
        "| stage | time (s) | RSS at start (MiB) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(f"| {s.name} | {s.seconds:.1f} | {s.start_mib:,.0f} | {s.peak_mib:,.0f} |")
    lines += [
        "",
        "RSS at start is mostly the loaded libraries (torch, faiss) plus what earlier stages left; "
        "memory-mapped gallery pages read by a stage count as resident but are file-backed and reclaimable.",
        "",
        f"Evaluation: {args.eval_n:,} labelled {args.dim}-d embeddings in {args.eval_classes} classes "
        f"(about {args.eval_n // args.eval_classes} per class, so MAP@R needs {args.eval_n // args.eval_classes} neighbours per query); "
        "every item is a query against all others. This N is where pytorch-metric-learning still fits comfortably: "
        "it holds the whole N x max-class-size neighbour table at once, while vmfml.metrics streams queries in chunks.",
        "",
        "| implementation | time (s) | RSS at start (MiB) | peak RSS (MiB) | Recall@1 | MAP@R | R-Precision |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in evals:
        lines.append(
            f"| {e['impl']} | {e['seconds']:.1f} | {e['start_mib']:,.0f} | {e['peak_mib']:,.0f} | {e['recall@1']:.4f} | {e['map@r']:.4f} | {e['r_precision']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CI size: 100k gallery, 200 queries, 10k evaluation"
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="noise norm around the centres (1.0: cosine to the centre about 0.7)",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--train-size", type=int, default=65_536)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--m", type=int, default=16, help="HNSW links per vector")
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument(
        "--hnsw-n",
        type=int,
        default=200_000,
        help="HNSW indexes the first N gallery vectors (default 200,000: building it over 1M takes "
        "about 15 minutes on 2 shared cores; pass --hnsw-n 1000000 for the whole gallery)",
    )
    parser.add_argument("--eval-n", type=int, default=50_000)
    parser.add_argument("--eval-classes", type=int, default=100)
    parser.add_argument(
        "--eval-spread",
        type=float,
        default=2.0,
        help="class noise norm of the evaluation set (harder classes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="faiss/torch threads (default: all cores)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"markdown file (default {DEFAULT_OUT}; --quick: print only)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.nlist, args.train_size, args.eval_n = (
            100_000,
            200,
            256,
            16_384,
            10_000,
        )
        args.clusters = 1000
    args.hnsw_n = min(args.hnsw_n, args.n)
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if args.threads:
        import faiss
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    stages: list[Stage] = []
    bench_indexes(args, rows, stages)
    evals = bench_evaluation(args)
    text = report(args, rows, stages, evals, time.perf_counter() - start)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
