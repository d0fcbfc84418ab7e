"""Input checks shared by the metrics: one place that turns user arrays into clean tensors.

Every public metric accepts torch tensors or numpy arrays; these helpers convert them, and reject
bad input with a ValueError that names the argument, before any heavy computation starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = torch.Tensor | np.ndarray
Backend = Literal["auto", "faiss", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "faiss", "torch")


def faiss_available() -> bool:
    """Whether `import faiss` works (faiss-cpu is a dependency, but keep the torch path usable)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> Literal["faiss", "torch"]:
    """`"auto"` -> `"faiss"` when installed, else `"torch"`; reject unknown names and missing faiss."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid options: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise ValueError(
            "backend='faiss' requested but faiss is not installed; use backend='torch'"
        )
    return "faiss" if backend == "faiss" else "torch"


def as_unit_embeddings(x: ArrayLike, name: str) -> torch.Tensor:
    """Float32 `[N, D]` tensor with unit rows (re-normalized: callers promise unit vectors, but
    float16 outputs or a forgotten normalization would otherwise silently change the ranking).
    A tensor that requires grad is taken as its values: metrics are not differentiated."""
    t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.is_complex()):
        t = t.float()
    if t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values in {bad} row(s)")
    norms = t.norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError(
            f"{name} has {int((norms == 0).sum())} all-zero row(s); they have no direction on the sphere"
        )
    return F.normalize(t, dim=1).contiguous()


def as_vector(x: ArrayLike | Sequence[float], name: str) -> torch.Tensor:
    """Float64 CPU tensor of a 1-D array `[N]` (a tensor that requires grad is taken as its
    values)."""
    t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x)
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [N], got shape {tuple(t.shape)}")
    return t.cpu().double()


def as_labels(y: ArrayLike | Sequence[int], n: int, name: str, embeddings_name: str) -> np.ndarray:
    """1-D numpy label array of length `n` (any integer or string labels)."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [N], got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(
            f"{name} has {len(arr)} entries but {embeddings_name} has {n} rows; they must match"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Sorted unique positive integer ks."""
    if isinstance(ks, int):
        ks = (ks,)
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks must be positive integers, got {list(ks)!r}")
        out.append(int(k))
    if not out:
        raise ValueError("ks must contain at least one positive integer")
    return tuple(sorted(set(out)))
