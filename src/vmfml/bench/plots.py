"""The benchmark's figures: accuracy against depth, Recall@1 per method, the ablation sweeps.

Each takes the table cells of `vmfml.bench.report.by_cell` and writes one PNG into the results
folder, or returns None when the results hold nothing to draw. Error bars are one sample
standard deviation over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vmfml.bench.profiles import ABLATIONS, VMF_METHODS
from vmfml.bench.stats import Cells, cell_stat, method_order, setting_order, validation_curve
from vmfml.files import save_figure_atomic


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_depth(cells: Cells, out_dir: Path) -> Path | None:
    """Test accuracy (each loss's classifier) against the number of conv blocks, one line per method."""
    settings = sorted({s for (e, s, _) in cells if e == "classification"}, key=setting_order)
    if not settings:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = sorted({m for (e, _, m) in cells if e == "classification"}, key=method_order)
    for method in methods:
        xs, ys, errs = [], [], []
        for setting in settings:
            stat = cell_stat(
                cells.get(("classification", setting, method), []), "classifier_accuracy"
            )
            if stat is not None:
                xs.append(setting_order(setting)[1])
                ys.append(100 * stat.mean)
                errs.append(100 * stat.std)
        style = "-" if method in VMF_METHODS else "--"
        ax.errorbar(xs, ys, yerr=errs, fmt="o" + style, capsize=3, label=method)
    ax.set_xlabel("depth (conv blocks of the small CNN)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(sorted({setting_order(s)[1] for s in settings}))
    ax.set_title("Classification: accuracy against depth (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "accuracy_vs_depth.png"
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_recall_at_1(cells: Cells, out_dir: Path) -> Path | None:
    """Recall@1 on the unseen classes per method, one panel per backbone.

    Points with error bars on an axis zoomed to the panel's values (bars from 0 would make
    differences of 1-7 points invisible); the axis's range is printed in its label.
    """
    backbones = sorted({s for (e, s, _) in cells if e == "retrieval"})
    if not backbones:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(backbones), figsize=(6 * len(backbones), 5), squeeze=False)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        methods = sorted(
            {m for (e, s, m) in cells if e == "retrieval" and s == backbone}, key=method_order
        )
        stats = [cell_stat(cells.get(("retrieval", backbone, m), []), "recall@1") for m in methods]
        shown = [(m, s) for m, s in zip(methods, stats, strict=True) if s is not None]
        ys = list(range(len(shown)))
        for y, (method, stat) in zip(ys, shown, strict=True):
            ax.errorbar(
                100 * stat.mean,
                y,
                xerr=100 * stat.std,
                fmt="o",
                color="tab:blue" if method in VMF_METHODS else "tab:gray",
                capsize=3,
            )
        low, high = zoomed_range([(100 * s.mean, 100 * s.std) for _, s in shown])
        ax.set_xlim(low, high)
        ax.set_yticks(ys, [m for m, _ in shown])
        ax.invert_yaxis()
        ax.set_xlabel(f"Recall@1 on unseen classes (%), axis {low:.0f}-{high:.0f}")
        ax.set_title(backbone)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Retrieval: Recall@1 per method (mean ± std over seeds; vMF in blue; zoomed axis)")
    fig.tight_layout()
    path = out_dir / "recall_at_1.png"
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def zoomed_range(points: list[tuple[float, float]], margin: float = 0.5) -> tuple[float, float]:
    """An axis range (whole numbers, within 0-100) that holds every mean ± std with `margin`."""
    if not points:
        return 0.0, 100.0
    low = min(mean - std for mean, std in points) - margin
    high = max(mean + std for mean, std in points) + margin
    return max(0.0, float(math.floor(low))), min(100.0, float(math.ceil(high)))


def plot_ablations(cells: Cells, out_dir: Path) -> Path | None:
    """Recall@1 against each swept setting (one panel per ablation table)."""
    present = [name for name in ABLATIONS if any(e == name for (e, _, _) in cells)]
    if not present:
        return None
    plt = _pyplot()
    ncols = min(4, len(present))
    nrows = -(-len(present) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 4 * nrows), squeeze=False)
    for ax in axes.flat[len(present) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, present, strict=False):
        values = sorted({s for (e, s, _) in cells if e == name}, key=setting_order)
        runs = {
            v: [r for (e, s, _), rs in cells.items() if e == name and s == v for r in rs]
            for v in values
        }
        # A sweep read on validation is drawn on validation: its test figures are not for reading.
        validated = any(cell_stat(rs, "val_recall@1") is not None for rs in runs.values())
        key = "val_recall@1" if validated else "recall@1"
        stats = [cell_stat(runs[v], key) for v in values]
        points = [(v, s) for v, s in zip(values, stats, strict=True) if s is not None]
        positions = list(range(len(points)))
        ax.errorbar(
            positions,
            [100 * s.mean for _, s in points],
            yerr=[100 * s.std for _, s in points],
            fmt="o-",
            capsize=3,
        )
        ax.set_xticks(positions, [v for v, _ in points])
        ax.set_xlabel(ABLATIONS[name].key)
        ax.set_title(ABLATIONS[name].method, fontsize=9)
        ax.set_ylabel("validation Recall@1 (%)" if validated else "test Recall@1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("vMF loss ablations (retrieval of unseen classes)")
    fig.tight_layout()
    path = out_dir / "ablations.png"
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_validation_curves(cells: Cells, out_dir: Path) -> Path | None:
    """Validation Recall@1 against the epoch, mean over seeds, one line per method and one panel
    per retrieval backbone: where the curves flatten, and where a budget ended still rising."""
    panels = []
    for backbone in sorted({s for (e, s, _) in cells if e == "retrieval"}):
        methods = sorted(
            {m for (e, s, m) in cells if e == "retrieval" and s == backbone}, key=method_order
        )
        curves = {}
        for method in methods:
            by_epoch: dict[int, list[float]] = {}
            for record in cells[("retrieval", backbone, method)]:
                for epoch, value in validation_curve(record):
                    by_epoch.setdefault(epoch, []).append(value)
            if by_epoch:
                curves[method] = sorted((e, sum(v) / len(v)) for e, v in by_epoch.items())
        if curves:
            panels.append((backbone, curves))
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    cmap = plt.get_cmap("tab20")
    # A method has one colour in every panel, and the legend lists every method once.
    every = sorted({m for _, curves in panels for m in curves}, key=method_order)
    handles = {}
    for ax, (backbone, curves) in zip(axes[0], panels, strict=True):
        for method, points in curves.items():
            i = every.index(method)
            style = "-" if method in VMF_METHODS or method == "vmf-class-kappa" else "--"
            (handles[method],) = ax.plot(
                [e for e, _ in points],
                [100 * v for _, v in points],
                style,
                marker=".",
                color=cmap((2 * i) % 20 + (2 * i // 20) % 2),  # dark shades first, then light
                label=method,
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation Recall@1 (%)")
        ax.set_title(backbone)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(
        [handles[m] for m in every], every, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5)
    )
    fig.suptitle(
        "Validation Recall@1 (held-out training classes), mean over seeds; vMF solid",
        fontsize=10,
    )
    fig.tight_layout()
    path = out_dir / "validation_curves.png"
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path
