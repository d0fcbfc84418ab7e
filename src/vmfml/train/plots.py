"""Pictures of a run: training curves and a 2-D view of the test embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vmfml.files import save_figure_atomic  # noqa: E402


def plot_history(
    history: list[dict[str, Any]],
    path: str | Path,
    kept_epoch: int | None = None,
    before: dict[str, float] | None = None,
) -> None:
    """Training loss, and training and validation scores against epochs (the kept epoch marked;
    the validation of a pretrained network before training, when given, at epoch 0)."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
    curves = (
        ("train_accuracy", "train accuracy (running)"),
        ("val_accuracy", "validation accuracy"),
        ("val_recall@1", "validation Recall@1"),
    )
    for key, label in curves:
        points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if points and before is not None and before.get(key) is not None:
            points.insert(0, (0, before[key]))
        if points:
            xs, ys = zip(*points, strict=True)
            ax_acc.plot(xs, ys, marker="o", label=label)
    if kept_epoch is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(kept_epoch, color="grey", linestyle="--", linewidth=1)
        ax_acc.plot([], [], color="grey", linestyle="--", label=f"kept (epoch {kept_epoch})")
    ax_acc.set(xlabel="epoch", ylabel="score", title="Accuracy and Recall@1")
    if ax_acc.get_legend_handles_labels()[0]:
        ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def plot_embedding(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    class_names: list[str],
    path: str | Path,
    max_points: int = 2000,
    seed: int = 0,
) -> None:
    """t-SNE (cosine) of up to `max_points` test embeddings, coloured by class."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    n = len(labels)
    idx = rng.choice(n, size=min(n, max_points), replace=False)
    x = embeddings[idx].numpy()
    y = labels[idx].numpy()
    xy = TSNE(
        n_components=2,
        metric="cosine",
        init="pca",
        random_state=seed,
        perplexity=min(30, len(idx) - 1),
    ).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c in np.unique(y):
        pts = xy[y == c]
        ax.scatter(
            pts[:, 0], pts[:, 1], s=5, color=cmap(int(c) % cmap.N), label=class_names[int(c)]
        )
    ax.set(title=f"Test embeddings (t-SNE, cosine; {len(idx)} points)", xticks=[], yticks=[])
    if len(class_names) <= 30:
        ax.legend(
            markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False
        )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def plot_reliability(report: dict[str, Any], path: str | Path, n_bins: int = 15) -> Path:
    """Reliability diagram of `train.open_set.calibration_report`: accuracy against confidence in
    equal-width bins, for the posterior before and after its concentration was fitted."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for key, colour in (("before", "tab:orange"), ("after", "tab:blue")):
        part = report.get(key)
        if part is None:
            continue
        conf = torch.as_tensor(part["confidence"]).double().numpy()
        hit = torch.as_tensor(part["correct"]).double().numpy()
        bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
        filled = [b for b in range(n_bins) if (bins == b).any()]
        ax.plot(
            [conf[bins == b].mean() for b in filled],
            [hit[bins == b].mean() for b in filled],
            marker="o",
            color=colour,
            label=f"{key}: kappa {part['kappa']:.3g}, ECE {part['ece']:.3f}",
        )
    ax.set_xticks(edges[:: max(1, n_bins // 5)])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (posterior of the chosen class)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability of the vMF posterior (test images)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)
