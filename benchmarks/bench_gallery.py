"""The live gallery at scale: every kind and backend, memory, speed, recall, live writes.

The gallery: `--classes` classes of `--per-class` unit vectors in D=128 (default 10,000 x 100 =
1,000,000), each at cosine 0.7 (+-0.02) to its class mean, a vMF-like shell; queries are fresh
draws of random classes. For each kind (faiss flat, ivf, hnsw, ivfpq; Milvus Lite flat, ivf,
hnsw), in a fresh process each:

    build s          building and saving the index folder (Milvus: inserting into Lite)
    bytes/vector     the folder's size on disk / N
    RssAnon, RssFile the serving process's anonymous and file-backed resident memory (MiB)
                     that opening the gallery and running the queries added (a fresh process;
                     Milvus Lite's server runs inside it)
    q/s              single-query searches per second, k = 10
    1-R@1, 10-R@10   against exact search, ties counted: a hit is right if its exact score
                     reaches the exact k-th score (minus 1e-6)
    filtered 10-R@10 the same under `label=<the query's class>` (100 matches)
    far-filter       the same under `label=<another class>`: 100 matches, all far from the
                     query (the hard case for an approximate index)
    adds/s, removes/s  live writes in batches of 100 (each on disk before it returns)

Usage:
    python benchmarks/bench_gallery.py --classes 500 --out benchmarks/results/gallery.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

D = 128
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


def build(backend: str, kind: str, work: Path, n_queries: int, out: Any) -> None:
    """In its own process: build and save the index folder; puts the seconds it took."""
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
    out.put({"build s": time.perf_counter() - start})


def serve(backend: str, kind: str, work: Path, n_queries: int, out: Any) -> None:
    """In a fresh process, as a server would: open the folder, search, write; puts the row."""
    from vmfml.index import open_gallery

    data = np.load(work / "data.npz")
    x, queries, qlabels = data["x"], data["q"], data["ql"]
    exact1, exact10, filtered10 = data["kth1"], data["kth10"], data["fkth10"]
    folder = work / f"{backend}-{kind}"
    before = memory_mib()
    store = open_gallery(folder)
    found = np.stack([store.search(q[None], 10)[1][0] for q in queries[:50]])  # warm up
    start = time.perf_counter()
    found = np.stack([store.search(q[None], 10)[1][0] for q in queries[:n_queries]])
    qps = n_queries / (time.perf_counter() - start)
    q = queries[:n_queries]
    row = {
        "backend": backend,
        "kind": kind,
        "bytes/vector": folder_bytes(folder) / len(x),
        "q/s": qps,
        "1-R@1": recall(found, q, x, exact1[:n_queries], 1),
        "10-R@10": recall(found, q, x, exact10[:n_queries], 10),
    }
    filtered = np.stack(
        [
            store.search(v[None], 10, f"label={c}")[1][0]
            for v, c in zip(q, qlabels[:n_queries], strict=True)
        ]
    )
    row["filtered 10-R@10"] = recall(filtered, q, x, filtered10[:n_queries], 10)
    far = np.stack(
        [
            store.search(v[None], 10, f"label={c}")[1][0]
            for v, c in zip(q, data["fl"][:n_queries], strict=True)
        ]
    )
    row["far-filter 10-R@10"] = recall(far, q, x, data["ffkth10"][:n_queries], 10)
    after = memory_mib()
    row["RssAnon MiB"] = after["RssAnon"] - before["RssAnon"]
    row["RssFile MiB"] = after["RssFile"] - before["RssFile"]
    new = draw(np.eye(D, dtype=np.float32)[:1], np.zeros(1000, dtype=int), np.random.default_rng(5))
    start = time.perf_counter()
    added = [i for b in range(10) for i in store.add(new[b * 100 : (b + 1) * 100])]
    row["adds/s"] = 1000 / (time.perf_counter() - start)
    start = time.perf_counter()
    for b in range(10):
        store.remove(added[b * 100 : (b + 1) * 100])
    row["removes/s"] = 1000 / (time.perf_counter() - start)
    store.close()
    out.put(row)


def pq_sweep(work: Path, n_queries: int, pq_bytes: list[int], with_opq: bool, out: Any) -> None:
    """ivfpq's trade-off: for each code size, 10-R@10 and q/s at several refine factors, and the
    index's own memory (the faiss index serialised: codes, ids, centroids)."""
    import faiss

    from vmfml.index import SearchIndex

    data = np.load(work / "data.npz")
    x, queries, kth = data["x"], data["q"][:n_queries], data["kth10"][:n_queries]
    rows = []
    for m in pq_bytes:
        for opq in (False, True) if with_opq else (False,):
            start = time.perf_counter()
            index = SearchIndex.build(x, kind="ivfpq", pq_bytes=m, opq=opq)
            build_s = time.perf_counter() - start
            index_mib = faiss.serialize_index(index.index).nbytes / 2**20
            for refine in (1, 2, 4, 8):
                index.set_search_params(refine_factor=refine)
                start = time.perf_counter()
                found = np.stack([index.search(q[None], 10)[1][0] for q in queries])
                qps = len(queries) / (time.perf_counter() - start)
                rows.append({"pq_bytes": m, "opq": opq, "refine_factor": refine,
                             "build s": build_s, "index MiB": index_mib, "q/s": qps,
                             "10-R@10": recall(found, queries, x, kth, 10)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    out.put(rows)


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
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "gallery.md"
    )
    args = parser.parse_args()
    import faiss

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
        scores, _ = exact.search(queries, 10)
        fkth = np.array(
            [np.sort(x[labels == c] @ v)[-10] for v, c in zip(queries, qlabels, strict=True)]
        )
        # A filter far from the query: another class than the query's (its 100 items lie far
        # from the query, where an approximate search does not look by itself).
        far_labels = (qlabels + 1 + rng.integers(0, args.classes - 1, len(qlabels))) % args.classes
        ffkth = np.array(
            [np.sort(x[labels == c] @ v)[-10] for v, c in zip(queries, far_labels, strict=True)]
        )
        np.savez(work / "data.npz", x=x, labels=labels, q=queries, ql=qlabels,
                 kth1=scores[:, 0], kth10=scores[:, 9], fkth10=fkth, fl=far_labels,
                 ffkth10=ffkth)  # fmt: skip
        del x, exact
        rows = []
        spawn = mp.get_context("spawn")
        if args.pq_sweep:
            queue = spawn.Queue()
            sizes = [int(v) for v in args.pq_sweep.split(",")]
            proc = spawn.Process(target=pq_sweep, args=(work, args.queries, sizes, args.opq, queue))
            proc.start()
            sweep = queue.get()
            proc.join()
            write_sweep(args, sweep)
            return
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
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(work / f"{backend}-{kind}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    columns = ["backend", "kind", "build s", "bytes/vector", "RssAnon MiB", "RssFile MiB", "q/s",
               "1-R@1", "10-R@10", "filtered 10-R@10", "far-filter 10-R@10", "adds/s",
               "removes/s"]  # fmt: skip
    n = args.classes * args.per_class
    lines = [
        f"# bench_gallery: {n:,} x {D} ({args.classes:,} classes of {args.per_class}), "
        f"{args.queries} queries, k = 10",
        "",
        f"`python benchmarks/bench_gallery.py --classes {args.classes} --per-class "
        f"{args.per_class} --queries {args.queries}`; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    if not rows:
        raise SystemExit("no kind could be measured")
    for row in rows:
        cells = [
            row[c]
            if isinstance(row[c], str)
            else f"{row[c]:,.3f}"
            if row[c] < 10
            else f"{row[c]:,.0f}"
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_sweep(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    columns = ["pq_bytes", "opq", "refine_factor", "build s", "index MiB", "q/s", "10-R@10"]
    lines = [
        f"# ivfpq trade-off: {args.classes * args.per_class:,} x {D}, {args.queries} queries",
        "",
        f"`python benchmarks/bench_gallery.py --classes {args.classes} --queries {args.queries} "
        f"--pq-sweep {args.pq_sweep}{' --opq' if args.opq else ''}`; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(value: Any) -> str:
    if isinstance(value, (str, bool, int)):
        return str(value)
    return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"


if __name__ == "__main__":
    main()
