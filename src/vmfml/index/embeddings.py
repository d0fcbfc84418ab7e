"""Embedding files: the embeddings of a set of images, with everything needed to use them later.

An embedding file is an uncompressed `.npz`, readable with plain `numpy.load`:

    embeddings   float32 [N, D]   unit rows (similarity = dot product)
    labels       int64 [N]        index into class_names; -1 where unknown
    class_names  str [C]
    paths        str [N]          the image files, in row order
    meta         str []           JSON: format, version, count, dim, data_root and `model`
                                  (config, preprocessing, embed_dim, checkpoint, fingerprint)

It is stored uncompressed so that the embeddings member can be memory-mapped where it lies inside
the zip: indexing a million-row file never reads it into memory whole. Embedding a data set
streams too: batches are written into a memory-mapped array on disk as they are computed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from vmfml.files import atomic_write, scratch_dir

FORMAT = "vmfml-embeddings"
VERSION = 1
MEMBERS = ("embeddings", "labels", "class_names", "paths", "meta")


@dataclass
class EmbeddingFile:
    """The contents of an embedding file.

    Attributes:
        embeddings: float32 `[N, D]` (a read-only memory map when loaded from disk).
        labels: int64 `[N]`, indices into `class_names`, -1 where unknown.
        class_names: C names.
        paths: N image paths (empty strings where unknown).
        meta: format, version, count, dim, data_root and `model` (see `model_info`).
    """

    embeddings: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    paths: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def label_names(self) -> list[str | None]:
        """The class name of each row (None where the label is unknown)."""
        names = self.class_names
        return [names[i] if 0 <= i < len(names) else None for i in self.labels.tolist()]

    def items(self) -> list[dict[str, Any]]:
        """Rows as index items `{"path", "label"}` (label = class name or None)."""
        return [
            {"path": p or None, "label": lab}
            for p, lab in zip(self.paths, self.label_names(), strict=True)
        ]


def save_embedding_file(
    path: str | Path,
    embeddings: np.ndarray,
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    paths: Sequence[str],
    meta: dict[str, Any],
) -> Path:
    """Write an embedding file atomically (a temporary file renamed over `path`).

    Args:
        embeddings: float `[N, D]` (may be a memory map: it is written in chunks by numpy).
        labels: `[N]` ints, -1 where unknown.
        class_names: C names.
        paths: N paths.
        meta: JSON-serialisable; `format`, `version`, `count` and `dim` are filled in.

    Returns:
        the path written (with `.npz` appended if it lacked it, as numpy does).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got shape {embeddings.shape}")
    n, d = embeddings.shape
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != n or len(paths) != n:
        raise ValueError(f"{n} embeddings but {len(labels)} labels and {len(paths)} paths")
    meta = {**meta, "format": FORMAT, "version": VERSION, "count": int(n), "dim": int(d)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                embeddings=embeddings.astype(np.float32, copy=False),
                labels=labels,
                class_names=np.array(list(class_names), dtype=str),
                paths=np.array([str(p) for p in paths], dtype=str),
                meta=np.array(json.dumps(meta, default=str)),
            )

    atomic_write(path, write)
    return path


def load_embedding_file(path: str | Path, mmap: bool = True) -> EmbeddingFile:
    """Read an embedding file written by `save_embedding_file` (or `vmfml embed`).

    Args:
        path: the `.npz` file.
        mmap: memory-map the embeddings instead of reading them (only the rows used are paged in).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an embedding file (the message names the missing members).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")
    try:
        npz_file = np.load(path, allow_pickle=False)
    # numpy reads any other file as a pickle, which allow_pickle=False refuses (ValueError).
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a vmfml embedding file (an .npz): {err}") from err
    if not isinstance(npz_file, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} is not a vmfml embedding file: it holds a single array, not an .npz archive"
        )
    try:
        with npz_file as npz:
            missing = [m for m in MEMBERS if m not in npz.files]
            if missing:
                raise ValueError(
                    f"{path} is not a vmfml embedding file: it lacks {missing} "
                    f"(expected members {list(MEMBERS)}; write one with `vmfml embed`)"
                )
            meta = json.loads(str(npz["meta"][()]))
            labels = npz["labels"].astype(np.int64)
            class_names = [str(c) for c in npz["class_names"].tolist()]
            paths = [str(p) for p in npz["paths"].tolist()]
            embeddings = _memmap_member(path, "embeddings.npy") if mmap else None
            if embeddings is None:
                embeddings = npz["embeddings"]
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read embedding file {path}: {err}") from err
    except ValueError as err:  # a damaged member (numpy, json); say which file
        if str(path) in str(err):
            raise
        raise ValueError(f"cannot read embedding file {path}: {err}") from err
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise ValueError(
            f"{path}: embeddings must be float32 [N, D], got {embeddings.dtype} {embeddings.shape}"
        )
    if len(labels) != len(embeddings) or len(paths) != len(embeddings):
        raise ValueError(
            f"{path} is inconsistent: {len(embeddings)} embeddings, {len(labels)} labels, "
            f"{len(paths)} paths"
        )
    return EmbeddingFile(embeddings, labels, class_names, paths, meta)


def _memmap_member(path: Path, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed `.npy` member of a zip in place; None if it is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        # The central directory gives where the member's local header starts; the data follows
        # that 30-byte header, its file name and its extra field (zip64 sizes).
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def embed_into(
    model: nn.Module,
    dataset: Any,
    out: np.ndarray | None,
    *,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray | None:
    """Embed every image of `dataset` into the rows of `out`, one batch at a time.

    Memory stays bounded by one batch of images plus `out`, which may be a memory-mapped file.
    Under torchrun each process embeds its shard (`vmfml.distributed.shard_rows`) and process 0
    writes every process's rows in place, batch by batch: the same rows, in the same order, as
    one process; the other processes pass out=None.

    Args:
        model: an `EmbeddingModel` (unit `[B, D]` output, `.preprocessing`).
        dataset: an `ImageDataset` (`dataset[i] -> (uint8 [C, H, W], label)`).
        out: float32 `[N, D]` with N = len(dataset) (None on processes other than 0).

    Returns:
        `out`, filled.
    """
    from tqdm.auto import tqdm

    from vmfml.data.errors import reraise_worker_errors
    from vmfml.data.transforms import TransformedDataset, make_transform
    from vmfml.distributed import gather_pieces, shard_rows, world_size
    from vmfml.models.inference import embed_batches

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if out is not None and out.shape[0] != len(dataset):
        raise ValueError(f"out has {out.shape[0]} rows for {len(dataset)} images")
    device = torch.device(device)
    n = len(dataset)
    rows = shard_rows(n)
    # Every process takes the same number of steps (the largest shard's), so that each step
    # gathers one batch from each.
    steps = max(-(-len(shard_rows(n, r)) // batch_size) for r in range(world_size()))
    transform = make_transform(model.preprocessing, train=False)  # type: ignore[arg-type]
    loader = DataLoader(
        Subset(TransformedDataset(dataset, transform), rows),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    local = embed_batches(model, reraise_worker_errors(loader), device)
    empty = torch.empty(0, int(model.embed_dim), device=device)  # type: ignore[arg-type]
    with tqdm(total=n, desc="embed", unit="img", disable=not progress) as bar:
        for step in range(steps):
            z, _ = next(local, (empty, None))
            for r, piece in enumerate(gather_pieces(z, batch_size)):
                if out is not None:
                    start = shard_rows(n, r).start + step * batch_size
                    out[start : start + len(piece)] = piece.float().cpu().numpy()
                bar.update(len(piece))
    local.close()
    return out


def embed_folder_to_file(
    out_path: str | Path,
    model: nn.Module,
    dataset: Any,
    *,
    checkpoint: str | Path | None,
    data_root: str | Path | None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> Path | None:
    """Embed a data set and write an embedding file, streaming through a memory map on disk.

    Args:
        out_path: the `.npz` to write.
        model: the embedding model.
        dataset: an `ImageDataset` with `labels`, `class_names` and `paths`.
        checkpoint: the checkpoint the model came from (recorded, so the file says its model).
        data_root: the folder the images came from (recorded).

    Returns:
        the path written (None on processes other than 0 of a torchrun run, which write nothing).
    """
    from vmfml.distributed import is_main
    from vmfml.index.model_record import model_info

    if not is_main():  # under torchrun: embed this process's shard, process 0 writes
        embed_into(
            model, dataset, None, batch_size=batch_size, device=device, num_workers=num_workers,
            progress=False,
        )  # fmt: skip
        return None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scratch = str(scratch_dir(out_path))  # removed below; if killed, by the next run
    try:
        info = model_info(model, checkpoint)
        rows = np.lib.format.open_memmap(
            os.path.join(scratch, "embeddings.npy"),
            mode="w+",
            dtype=np.float32,
            shape=(len(dataset), int(info["embed_dim"])),
        )
        embed_into(
            model,
            dataset,
            rows,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress=progress,
        )
        rows.flush()
        meta = {
            "model": info,
            "data_root": str(Path(data_root).resolve()) if data_root is not None else None,
        }
        paths = list(dataset.paths) if getattr(dataset, "paths", None) is not None else []
        return save_embedding_file(
            out_path,
            rows,
            np.asarray(dataset.labels, dtype=np.int64),
            list(dataset.class_names),
            paths or [""] * len(dataset),
            meta,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
