"""Retrieval metrics at scale: vmfml.metrics.retrieval_metrics vs pytorch-metric-learning.

Draws `classes x per_class` unit embeddings from von Mises-Fisher distributions (one random mean
direction per class, concentration `kappa`), then times every evaluation in a fresh subprocess
(wall time, CPU time, peak RSS from getrusage). A watchdog polls each subprocess's resident memory
and kills it above `--mem-limit-gb`, so a quadratic-memory implementation is reported as killed
instead of taking the machine down.

    .venv/bin/python benchmarks/bench_metrics.py            # 100 classes x 1,000, D = 128
    .venv/bin/python benchmarks/bench_metrics.py --per-class 100 --small-per-class 50   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SECTION = "## Retrieval metrics at scale"


def make_embeddings(
    classes: int, per_class: int, dim: int, kappa: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`[classes * per_class, dim]` float32 vMF samples and their labels `[N]` (class-major)."""
    from scipy.stats import vonmises_fisher

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    x = np.concatenate(
        [vonmises_fisher(mu, kappa).rvs(per_class, random_state=rng) for mu in means]
    ).astype(np.float32)
    # Shuffled, as a real test set would be (class-major order flatters some top-k scans).
    order = rng.permutation(len(x))
    return x[order], np.repeat(np.arange(classes), per_class)[order]


def worker(kind: str, data: str, n_per_class: int) -> None:
    """Run one evaluation in this (fresh) process and print a JSON line."""
    import torch

    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    if n_per_class < np.bincount(y).max():
        keep = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in np.unique(y)])
        x, y = x[keep], y[keep]
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if kind == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
            k="max_bin_count",
            device=torch.device("cpu"),
        )
        raw = calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))
        metrics = {
            "recall@1": raw["precision_at_1"],
            "map@r": raw["mean_average_precision_at_r"],
            "r_precision": raw["r_precision"],
        }
    else:
        from vmfml.metrics import retrieval_metrics

        metrics = retrieval_metrics(
            x, y, backend="faiss" if kind == "faiss" else "torch", progress=False
        )
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        json.dumps(
            {"n": len(y), "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss_gb, "metrics": metrics}
        )
    )


def rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def run_job(kind: str, data: str, per_class: int, mem_limit_gb: float, timeout_s: float) -> dict:
    """One evaluation in a subprocess, killed above `mem_limit_gb` or after `timeout_s`."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--data",
        data,
        "--per-class",
        str(per_class),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start, peak, status = time.perf_counter(), 0.0, "ok"
    while proc.poll() is None:
        peak = max(peak, rss_gb(proc.pid))
        if peak > mem_limit_gb:
            status = f"killed: RSS above {mem_limit_gb:g} GB"
        elif time.perf_counter() - start > timeout_s:
            status = f"killed: over {timeout_s:g} s"
        if status != "ok":
            proc.kill()
            break
        time.sleep(0.2)
    out, err = proc.communicate()
    if status == "ok" and proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
        status = "MemoryError" if "MemoryError" in err else f"failed: {tail}"
    if status != "ok":
        return {
            "kind": kind,
            "status": status,
            "peak_rss_gb": peak,
            "wall_s": time.perf_counter() - start,
        }
    result = json.loads(out.strip().splitlines()[-1])
    return {"kind": kind, "status": "ok", **result}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def _fmt(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "-"


def table(rows: list[dict]) -> str:
    names = {
        "faiss": "vmfml (faiss)",
        "torch": "vmfml (torch)",
        "pml": "pytorch-metric-learning 2.x AccuracyCalculator",
    }
    lines = [
        "| implementation | N | wall s | CPU s | peak RSS GB | recall@1 | MAP@R | R-Precision | NMI | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m = r.get("metrics", {})
        lines.append(
            f"| {names[r['kind']]} | {r['n']:,} | {r['wall_s']:.1f} | "
            + (f"{r['cpu_s']:.1f}" if "cpu_s" in r else "-")
            + f" | {r['peak_rss_gb']:.2f} | {_fmt(m, 'recall@1')} | {_fmt(m, 'map@r')} | {_fmt(m, 'r_precision')} | "
            f"{_fmt(m, 'nmi')} | {r['status']} |"
        )
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of the shared results file."""
    old = path.read_text() if path.exists() else "# Metrics benchmarks\n"
    if SECTION in old:
        before, after = old.split(SECTION, 1)
        nxt = after.find("\n## ")
        old = before + (after[nxt + 1 :] if nxt >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument(
        "--small-per-class", type=int, default=200, help="second, smaller N per class (0: skip)"
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--kappa", type=float, default=80.0, help="vMF concentration of every class"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mem-limit-gb", type=float, default=8.0)
    parser.add_argument("--timeout-s", type=float, default=1200.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "metrics.md")
    parser.add_argument("--worker", choices=["faiss", "torch", "pml"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.per_class)
        return

    command = "cd /work/main && .venv/bin/python " + " ".join(
        ["benchmarks/bench_metrics.py", *sys.argv[1:]]
    )
    load_before = load_average()
    x, y = make_embeddings(args.classes, args.per_class, args.dim, args.kappa, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "embeddings.npz")
        np.savez(data, x=x, y=y)
        jobs = [(kind, args.per_class) for kind in ("faiss", "torch", "pml")]
        if args.small_per_class:
            jobs += [(kind, args.small_per_class) for kind in ("faiss", "torch", "pml")]
        for kind, per_class in jobs:
            print(f"running {kind} with {per_class} per class ...", file=sys.stderr, flush=True)
            row = run_job(kind, data, per_class, args.mem_limit_gb, args.timeout_s)
            row.setdefault("n", args.classes * per_class)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Synthetic embeddings: {args.classes} classes, von Mises-Fisher samples (kappa = {args.kappa:g}, "
            f"D = {args.dim}, random class mean directions, seed {args.seed}); every query is a gallery item "
            "and is excluded from its own neighbours. vmfml computes Recall@1/2/4/8, MAP@R, R-Precision "
            "and NMI; pytorch-metric-learning computes precision_at_1 (= Recall@1), MAP@R and "
            "R-Precision (k = max_bin_count). Each row is a fresh subprocess; peak RSS is its getrusage "
            "ru_maxrss (includes about 0.4 GB for importing torch) or, for killed runs, the watchdog's "
            "last VmRSS reading.",
            "",
            table(rows),
            "",
            f"Machine: {cpu_model()}, {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GB RAM, "
            f"Python {platform.python_version()}. Load average 1/5/15 min: {load_before} before, "
            f"{load_average()} after (about 2 means the benchmark had the machine to itself); wall "
            "times on a shared machine are noisy, CPU s (user + system of the process) is steadier.",
            "",
            f"Command: `{command}`",
        ]
    )
    print(text)
    write_section(args.out, text)


if __name__ == "__main__":
    main()
