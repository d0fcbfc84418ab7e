"""The live gallery at scale: every kind and backend, memory, speed, recall, live writes.

The gallery: `--classes` classes of `--per-class` unit vectors in D=128 (default 10,000 x 100 =
1,000,000), each at cosine 0.7 (+-0.02) to its class mean, a vMF-like shell; queries are fresh
draws of random classes. For each kind (faiss flat, ivf, hnsw, ivfpq; Milvus Lite flat, ivf,
hnsw), in a fresh process each:

    built            what the engine really built, read back from the files it wrote (faiss:
                     index.faiss; Milvus Lite: each segment's index sidecar, opened, and the rows
                     it covers), not what was asked for or what describe_index says
    build s          building and saving the index folder (Milvus: inserting into Lite)
    disk B/vector    the folder's size on disk / N
    RssAnon, RssFile the serving process's anonymous and file-backed resident memory (MiB)
                     that opening the gallery and running the queries added (a fresh process;
                     Milvus Lite's server runs inside it); anon B/vector = RssAnon / N
    q/s 1, q/s 2     single-query searches per second, k = 10, from 1 client and from 2
                     concurrent clients (2 threads of the serving process, as the server's
                     thread pool runs them)
    1-R@1, 10-R@10   against exact search, ties counted: a hit is right if its exact score
                     reaches the exact k-th score (minus 1e-6)
    filtered 10-R@10 the same under `label=<the query's class>` (100 matches), on the first
                     50 queries (each a label not filtered before: "filtered q/s")
    far-filter       the same under `label=<another class>`: 100 matches, all far from the
                     query (the hard case for an approximate index)
    adds/s, removes/s  live writes in batches of 100 (each on disk before it returns)

It ends with a projection on paper to 100M and 1B vectors: memory per node and nodes needed,
from each kind's measured anonymous resident bytes per vector (and disk bytes per vector), on
nodes of `--node-gib` GiB RAM of which `--node-use` may hold the gallery.

`--pq-sweep 8,16,32` measures ivfpq's recall / memory / q/s curve over code size, `--nprobes`
and the refine factor instead.

Usage:
    python benchmarks/bench_gallery.py --out benchmarks/results/gallery-1m.md
    python benchmarks/bench_gallery.py --pq-sweep 8,16,32 --out benchmarks/results/gallery-1m-pq.md
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

D = 128
FILTER_QUERIES = 50  # each a new label: a faiss gallery scans its N items once per new clause
KINDS = [("faiss", "flat"), ("faiss", "ivf"), ("faiss", "hnsw"), ("faiss", "ivfpq"),
         ("milvus", "flat"), ("milvus", "ivf"), ("milvus", "hnsw")]  # fmt: skip


def gallery(classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 [classes * per_class, D] rows at cosine ~0.7 to their class mean; labels."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, D)).astype(np.float32)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    labels = np.repeat(np.arange(classes), per_class)
    return draw(means, labels, rng), labels


def draw(means: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((len(labels), D), dtype=np.float32)
    for start in range(0, len(labels), 100_000):
        mu = means[labels[start : start + 100_000]]
        g = rng.standard_normal(mu.shape).astype(np.float32)
        g -= np.sum(g * mu, axis=1, keepdims=True) * mu
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        w = np.clip(rng.normal(0.7, 0.02, (len(mu), 1)), -1, 1).astype(np.float32)
        out[start : start + len(mu)] = w * mu + np.sqrt(1 - w * w) * g
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def memory_mib() -> dict[str, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    values = {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Rss")}
    return {k: int(v) / 1024 for k, v in values.items()}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def recall(found: np.ndarray, queries: np.ndarray, x: np.ndarray, kth: np.ndarray, k: int) -> float:
    """Share of the top-k whose exact score reaches the exact k-th score (ties counted)."""
    ok = 0
    for q, ids, threshold in zip(queries, found[:, :k], kth, strict=True):
        ids = ids[ids >= 0]
        ok += int(np.sum(x[ids] @ q >= threshold - 1e-6))
    return ok / (k * len(queries))


def built(backend: str, folder: Path, count: int) -> str:
    """What the engine really built, read back from the files it wrote."""
    import faiss

    if backend == "faiss":
        return describe_faiss(faiss.read_index(str(folder / "index.faiss")))
    return milvus_built(folder, count)


def describe_faiss(read: Any) -> str:
    import faiss

    index = faiss.downcast_index(read)  # a view: `read` must outlive it (it owns the index)
    parts = [type(index).__name__]
    if isinstance(index, faiss.IndexPreTransform):
        parts.append(type(faiss.downcast_index(index.index)).__name__)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        parts.append(f"nlist {ivf.nlist}")
        if hasattr(ivf, "pq"):
            parts.append(f"PQ{ivf.pq.M}x{ivf.pq.nbits}")
    if isinstance(index, faiss.IndexHNSW):
        parts.append(f"M {index.hnsw.nb_neighbors(1)}")
    return " ".join(parts) + f", {read.ntotal:,} vectors"


def milvus_built(folder: Path, count: int) -> str:
    """Milvus Lite: each data segment's vector index sidecar, opened, and the rows it covers
    (a segment without one, or rows not yet flushed, are searched by brute force)."""
    import faiss
    import pyarrow.parquet as pq

    collection = json.loads((folder / "meta.json").read_text())["milvus"]["collection"]
    root = folder / "milvus.db" / "collections" / collection
    manifest = json.loads((root / "manifest.json").read_text())
    covered: dict[str, int] = {}
    for name, partition in manifest["partitions"].items():
        base = root / "partitions" / name
        for data_file in partition["data_files"]:
            rows = pq.ParquetFile(base / data_file).metadata.num_rows
            sidecars = sorted((base / "indexes").glob(f"{Path(data_file).stem}.vector.*.idx"))
            what = "no index"
            if sidecars:
                kind = sidecars[0].name.split(".")[-2].upper()
                with sidecars[0].open("rb") as f:
                    numpy_file = f.read(6) == b"\x93NUMPY"
                inside = (
                    "float32 rows (brute force)"
                    if numpy_file
                    else describe_faiss(faiss.read_index(str(sidecars[0])))
                )
                what = f"{kind}: {inside}"
            covered[what] = covered.get(what, 0) + rows
    parts = [f"{what} on {rows:,} rows" for what, rows in covered.items()]
    if sum(covered.values()) != count:
        parts.append(f"{count - sum(covered.values()):,} rows in no segment")
    return "; ".join(parts)


def build(backend: str, kind: str, work: Path, n_queries: int, out: Any) -> None:
    """In its own process: build and save the index folder; puts the seconds it took and what
    was built."""
    from vmfml.index import SearchIndex

    data = np.load(work / "data.npz")
    x, labels = data["x"], data["labels"]
    items = [{"label": str(c)} for c in labels.tolist()]
    folder = work / f"{backend}-{kind}"
    start = time.perf_counter()
    if backend == "faiss":
        SearchIndex.build(x, items, kind=kind).save(folder)
    else:
        from vmfml.index.milvus_store import build_milvus_folder

        build_milvus_folder(folder, x, items, {}, kind)
    seconds = time.perf_counter() - start
    out.put({"build s": seconds, "built": built(backend, folder, len(x))})


def timed_searches(store: Any, queries: np.ndarray, clients: int) -> tuple[np.ndarray, float]:
    """Single-query searches (k = 10) from `clients` concurrent threads: (ids, queries/s)."""

    def run(chunk: np.ndarray) -> list[np.ndarray]:
        return [store.search(q[None], 10)[1][0] for q in chunk]

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        parts = list(pool.map(run, np.array_split(queries, clients)))
        seconds = time.perf_counter() - start
    return np.stack([ids for part in parts for ids in part]), len(queries) / seconds


def serve(backend: str, kind: str, work: Path, n_queries: int, out: Any) -> None:
    """In a fresh process, as a server would: open the folder, search, write; puts the row."""
    from vmfml.index import open_gallery

    data = np.load(work / "data.npz")
    x, queries, qlabels = data["x"], data["q"], data["ql"]
    exact1, exact10, filtered10 = data["kth1"], data["kth10"], data["fkth10"]
    folder = work / f"{backend}-{kind}"
    before = memory_mib()
    store = open_gallery(folder)
    timed_searches(store, queries[n_queries:], 1)  # warm up (the 50 spare queries)
    q = queries[:n_queries]
    found, qps1 = timed_searches(store, q, 1)
    found2, qps2 = timed_searches(store, q, 2)
    row = {
        "backend": backend,
        "kind": kind,
        "disk B/vector": folder_bytes(folder) / len(x),
        "q/s 1": qps1,
        "q/s 2": qps2,
        "1-R@1": recall(found, q, x, exact1[:n_queries], 1),
        "10-R@10": recall(found, q, x, exact10[:n_queries], 10),
        "10-R@10 (2 clients)": recall(found2, q, x, exact10[:n_queries], 10),
    }
    after = memory_mib()  # before the filters: a faiss gallery keeps a mask per filter clause
    row["RssAnon MiB"] = after["RssAnon"] - before["RssAnon"]
    row["RssFile MiB"] = after["RssFile"] - before["RssFile"]
    row["anon B/vector"] = row["RssAnon MiB"] * 2**20 / len(x)
    f = slice(0, min(FILTER_QUERIES, n_queries))
    start = time.perf_counter()
    filtered = np.stack(
        [
            store.search(v[None], 10, f"label={c}")[1][0]
            for v, c in zip(q[f], qlabels[f], strict=True)
        ]
    )
    row["filtered q/s"] = len(filtered) / (time.perf_counter() - start)
    row["filtered 10-R@10"] = recall(filtered, q[f], x, filtered10[f], 10)
    far = np.stack(
        [
            store.search(v[None], 10, f"label={c}")[1][0]
            for v, c in zip(q[f], data["fl"][f], strict=True)
        ]
    )
    row["far-filter 10-R@10"] = recall(far, q[f], x, data["ffkth10"][f], 10)
    new = draw(np.eye(D, dtype=np.float32)[:1], np.zeros(1000, dtype=int), np.random.default_rng(5))
    start = time.perf_counter()
    added = [i for b in range(10) for i in store.add(new[b * 100 : (b + 1) * 100])]
    row["adds/s"] = 1000 / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in range(10):
        store.remove(added[b * 100 : (b + 1) * 100])
    row["removes/s"] = 1000 / (time.perf_counter() - start)
    store.close()
    row["load 1 min"] = os.getloadavg()[0]
    out.put(row)


def pq_sweep(work: Path, args: argparse.Namespace, out: Any) -> None:
    """ivfpq's trade-off: for each code size, 10-R@10 and q/s over nprobe and the refine
    factor, and the index's own bytes per vector (the faiss index serialised: codes, ids,
    centroids, codebooks; the float32 rows for the re-rank stay on disk)."""
    import faiss

    from vmfml.index import SearchIndex

    data = np.load(work / "data.npz")
    n_queries = args.queries
    x, queries = data["x"], data["q"][:n_queries]
    kth1, kth10 = data["kth1"][:n_queries], data["kth10"][:n_queries]
    for m in [int(v) for v in args.pq_sweep.split(",")]:
        for opq in (False, True) if args.opq else (False,):
            start = time.perf_counter()
            index = SearchIndex.build(x, kind="ivfpq", pq_bytes=m, opq=opq)
            build_s = time.perf_counter() - start
            index_bytes = faiss.serialize_index(index.index).nbytes / len(x)
            nlist = int(index.options["nlist"])
            for nprobe in sorted({min(int(v), nlist) for v in args.nprobes.split(",")}):
                for refine in (1, 2, 4, 8, 16):
                    index.set_search_params(nprobe=nprobe, refine_factor=refine)
                    start = time.perf_counter()
                    found = np.stack([index.search(q[None], 10)[1][0] for q in queries])
                    qps = len(queries) / (time.perf_counter() - start)
                    row = {"pq_bytes": m, "opq": opq, "nlist": nlist, "nprobe": nprobe,
                           "refine_factor": refine, "build s": build_s,
                           "index B/vector": index_bytes, "q/s": qps,
                           "1-R@1": recall(found, queries, x, kth1, 1),
                           "10-R@10": recall(found, queries, x, kth10, 10),
                           "load 1 min": os.getloadavg()[0]}  # fmt: skip
                    out.put(row)
            del index
    out.put(None)


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (uncommitted changes)" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--kinds", default=",".join(f"{b}:{k}" for b, k in KINDS))
    parser.add_argument("--opq", action="store_true", help="--pq-sweep: with OPQ too (slow)")
    parser.add_argument(
        "--pq-sweep", default="", help="ivfpq trade-off instead: comma-separated pq_bytes values"
    )
    parser.add_argument("--nprobes", default="16,64,250", help="--pq-sweep: nprobe values")
    parser.add_argument("--node-gib", type=float, default=256, help="projection: RAM per node")
    parser.add_argument(
        "--node-use", type=float, default=0.75, help="projection: share of it for the gallery"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "gallery.md"
    )
    args = parser.parse_args()
    import faiss

    head = [
        f"`python benchmarks/bench_gallery.py {' '.join(sys.argv[1:])}` at commit {git_commit()}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        + "/".join(f"{v:.1f}" for v in os.getloadavg())
        + f" (1/5/15 min) at the start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    try:
        x, labels = gallery(args.classes, args.per_class, seed=0)
        rng = np.random.default_rng(1)
        qlabels = rng.integers(0, args.classes, args.queries + 50)
        # Queries: fresh draws around the same class means (regenerated from the seed).
        class_means = np.random.default_rng(0).standard_normal((args.classes, D)).astype(np.float32)
        class_means /= np.linalg.norm(class_means, axis=1, keepdims=True)
        queries = np.concatenate(
            [draw(class_means, qlabels[50:], rng), draw(class_means, qlabels[:50], rng)]
        )
        qlabels = np.concatenate([qlabels[50:], qlabels[:50]])
        exact = faiss.IndexFlatIP(D)
        exact.add(x)
        scores, _ = exact.search(queries, 11)
        gap = float(np.mean(scores[:, 9] - scores[:, 10]))
        head.append(f"The exact 10th and 11th neighbours differ by {gap:.4f} in cosine on average.")
        by_class = np.argsort(labels, kind="stable").reshape(args.classes, args.per_class)
        fkth = np.array(
            [np.sort(x[by_class[c]] @ v)[-10] for v, c in zip(queries, qlabels, strict=True)]
        )
        # A filter far from the query: another class than the query's (its 100 items lie far
        # from the query, where an approximate search does not look by itself).
        far_labels = (qlabels + 1 + rng.integers(0, args.classes - 1, len(qlabels))) % args.classes
        ffkth = np.array(
            [np.sort(x[by_class[c]] @ v)[-10] for v, c in zip(queries, far_labels, strict=True)]
        )
        np.savez(work / "data.npz", x=x, labels=labels, q=queries, ql=qlabels,
                 kth1=scores[:, 0], kth10=scores[:, 9], fkth10=fkth, fl=far_labels,
                 ffkth10=ffkth)  # fmt: skip
        n = len(x)
        del x, exact
        spawn = mp.get_context("spawn")
        if args.pq_sweep:
            queue = spawn.Queue()
            proc = spawn.Process(target=pq_sweep, args=(work, args, queue))
            proc.start()
            sweep: list[dict[str, Any]] = []
            while (row := queue.get()) is not None:
                sweep.append(row)
                print(json.dumps(row), flush=True)
                write_sweep(args, head, sweep, n)
            proc.join()
            return
        rows: list[dict[str, Any]] = []
        for spec in args.kinds.split(","):
            backend, kind = spec.split(":")
            row: dict[str, Any] = {}
            for stage in (build, serve):
                queue = spawn.Queue()
                proc = spawn.Process(target=stage, args=(backend, kind, work, args.queries, queue))
                proc.start()
                proc.join()
                if proc.exitcode != 0:
                    print(f"{spec}: {stage.__name__} failed (exit {proc.exitcode})", flush=True)
                    break
                row.update(queue.get())
            else:
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_table(args, head, rows, n)
            shutil.rmtree(work / f"{backend}-{kind}", ignore_errors=True)
        if not rows:
            raise SystemExit("no kind could be measured")
    finally:
        shutil.rmtree(work, ignore_errors=True)


COLUMNS = ["backend", "kind", "build s", "disk B/vector", "RssAnon MiB", "RssFile MiB",
           "anon B/vector", "q/s 1", "q/s 2", "1-R@1", "10-R@10", "filtered q/s", "filtered 10-R@10",
           "far-filter 10-R@10", "adds/s", "removes/s", "load 1 min"]  # fmt: skip


def write_table(
    args: argparse.Namespace, head: list[str], rows: list[dict[str, Any]], n: int
) -> None:
    """The results file (rewritten after each kind) and its rows as JSON lines beside it."""
    lines = [
        f"# bench_gallery: {n:,} x {D} ({args.classes:,} classes of {args.per_class}), "
        f"{args.queries} queries, k = 10",
        "",
        *head,
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in rows),
        "",
        "What each engine really built (read back from its files):",
        "",
        *(f"- {row['backend']} {row['kind']}: {row['built']}" for row in rows),
        "",
        *targets(rows),
        "",
        *projection(rows, args.node_gib, args.node_use),
    ]
    _write(args.out, lines, rows)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 22's ivfpq target, checked on the rows."""
    return [
        "ivfpq target (10-R@10 >= 0.95 while the index adds at most 64 B/vector of RssAnon): "
        + ("met" if row["10-R@10"] >= 0.95 and row["anon B/vector"] <= 64 else "NOT met")
        + f": 10-R@10 {row['10-R@10']:.3f}, RssAnon {row['anon B/vector']:.0f} B/vector, "
        f"RssFile {row['RssFile MiB']:.0f} MiB, {row['q/s 1']:.0f} q/s"
        for row in rows
        if row["kind"] == "ivfpq"
    ]


def projection(rows: list[dict[str, Any]], node_gib: float, node_use: float) -> list[str]:
    """On paper: memory and nodes for 100M and 1B vectors from the measured bytes per vector."""
    usable = node_gib * node_use * 2**30
    lines = [
        f"Projection on paper, from the measured anonymous bytes per vector (RAM) and disk bytes "
        f"per vector, on nodes of {node_gib:.0f} GiB RAM of which {node_use:.0%} holds the "
        "gallery; linear in N (no replication, no headroom for writes):",
        "",
        "| backend | kind | anon B/vector | 100M: RAM GiB | 100M: nodes | 100M: disk GiB "
        "| 1B: RAM GiB | 1B: nodes | 1B: disk GiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cells = [row["backend"], row["kind"], f"{row['anon B/vector']:.0f}"]
        for n in (10**8, 10**9):
            ram = row["anon B/vector"] * n
            cells += [f"{ram / 2**30:,.0f}", f"{math.ceil(ram / usable):,}",
                      f"{row['disk B/vector'] * n / 2**30:,.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_sweep(
    args: argparse.Namespace, head: list[str], rows: list[dict[str, Any]], n: int
) -> None:
    columns = ["pq_bytes", "opq", "nlist", "nprobe", "refine_factor", "build s",
               "index B/vector", "q/s", "1-R@1", "10-R@10", "load 1 min"]  # fmt: skip
    meeting = [r for r in rows if r["10-R@10"] >= 0.95 and r["index B/vector"] <= 64]
    best = max(meeting, key=lambda r: r["q/s"], default=None)
    lines = [
        f"# ivfpq trade-off: {n:,} x {D}, {args.queries} queries, k = 10",
        "",
        *head,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows),
        "",
        f"{len(meeting)} of {len(rows)} settings reach 10-R@10 >= 0.95 with an index of at most "
        "64 B/vector"
        + (
            f"; the fastest: pq_bytes {best['pq_bytes']}, nprobe {best['nprobe']}, refine "
            f"{best['refine_factor']} ({best['10-R@10']:.3f}, {best['q/s']:.0f} q/s)"
            if best
            else ""
        ),
    ]
    _write(args.out, lines, rows)


def _write(out: Path, lines: list[str], rows: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _cell(value: Any) -> str:
    if isinstance(value, (str, bool, int)):
        return str(value)
    return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"


if __name__ == "__main__":
    main()
