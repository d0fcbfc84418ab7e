"""The lifted structure loss alone: pytorch-metric-learning's against vmfml's linear-memory form.

PML's LiftedStructureLoss masks a [positive pairs x negative pairs] matrix (about B^3 / C
entries for B images of C classes); vmfml.losses.baselines.PairwiseLiftedStructureLoss computes
the same loss from per-anchor log-sum-exps. Both are timed on the same batches (forward and
backward of the loss on unit embeddings, as the benchmark's batches of C classes give them),
interleaved round by round, and their losses and gradients compared.

    .venv/bin/python benchmarks/bench_lifted_structure.py [--batch-sizes 64,128,256] [--rounds 3]
        [--out benchmarks/results/lifted_structure.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses

from vmfml.bench.runner import git_commit
from vmfml.losses.baselines import PairwiseLiftedStructureLoss


def time_loss(loss: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor):
    """Seconds for one forward and backward, the loss and the gradient."""
    leaf = x.clone().requires_grad_(True)
    start = time.perf_counter()
    value = loss(leaf, labels)
    value.backward()
    return time.perf_counter() - start, value.detach(), leaf.grad


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", default="64,128,256")
    parser.add_argument("--classes", type=int, default=10, help="classes per batch (Fashion-MNIST)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/lifted_structure.md")
    args = parser.parse_args()
    pml = losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
    ours = PairwiseLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)
    commit, dirty = git_commit()
    lines = [
        "## The lifted structure loss alone: PML's form against vmfml's",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_lifted_structure.py --batch-sizes "
        f"{args.batch_sizes} --rounds {args.rounds}` at {commit}{' (dirty)' if dirty else ''}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.classes} classes "
        f"per batch, {args.dim}-d unit embeddings, float32, median of {args.rounds} interleaved "
        "rounds of one forward and backward.",
        "",
        "| batch | PML mask entries | PML ms | vmfml ms | PML / vmfml | max loss diff | max grad diff |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    print("\n".join(lines), flush=True)
    for b in (int(s) for s in args.batch_sizes.split(",")):
        gen = torch.Generator().manual_seed(b)
        x = F.normalize(torch.randn(b, args.dim, generator=gen), dim=1)
        labels = torch.arange(b) % args.classes
        same = labels[:, None] == labels[None, :]
        entries = int(same.sum() - b) * int((~same).sum())
        times: dict[str, list[float]] = {"pml": [], "ours": []}
        for _ in range(args.rounds):
            t_pml, v_pml, g_pml = time_loss(pml, x, labels)
            t_ours, v_ours, g_ours = time_loss(ours, x, labels)
            times["pml"].append(t_pml)
            times["ours"].append(t_ours)
        m_pml, m_ours = (1000 * statistics.median(times[k]) for k in ("pml", "ours"))
        row = (
            f"| {b} | {entries:,} | {m_pml:.1f} | {m_ours:.2f} | {m_pml / m_ours:.0f} | "
            f"{(v_pml - v_ours).abs().item():.1e} | {(g_pml - g_ours).abs().max().item():.1e} |"
        )
        lines.append(row)
        print(row, flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
