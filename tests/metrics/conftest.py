"""Brute-force references for the metrics tests: float64 numpy, one query at a time."""

from __future__ import annotations

import numpy as np
import pytest


def reference_retrieval(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: tuple[int, ...],
    same_source: bool,
) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision by sorting every query's full similarity row."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ g.astype(np.float64).T
    recalls = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")
        if same_source:
            order = order[order != i]
        rel = gallery_labels[order] == query_labels[i]
        r = int(rel.sum())
        if r == 0:
            continue
        for k in ks:
            recalls[k].append(bool(rel[:k].any()))
        top = rel[:r]
        precision = np.cumsum(top) / np.arange(1, r + 1)
        aps.append(float((precision * top).sum() / r))
        rps.append(float(top.sum() / r))
    out = {f"recall@{k}": float(np.mean(recalls[k])) for k in ks}
    out["map@r"] = float(np.mean(aps))
    out["r_precision"] = float(np.mean(rps))
    return out


def clustered(
    rng: np.random.Generator, num_classes: int, per_class: int, dim: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors scattered around random class directions, and their labels."""
    centres = rng.standard_normal((num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + noise * rng.standard_normal((len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
