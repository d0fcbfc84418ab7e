"""`SearchIndex`: a faiss inner-product index over unit embeddings, with its items and metadata.

Three kinds, all ranking by the dot product (= cosine similarity for unit vectors):

    flat   IndexFlatIP: exact search, O(N D) per query. The reference the others are measured by.
    ivf    IndexIVFFlat: k-means partitions the sphere into `nlist` cells; a query scans only the
           `nprobe` nearest cells. Needs a training sample; recall rises with nprobe.
    hnsw   IndexHNSWFlat: a navigable small-world graph with `m` links per vector; a query
           explores `ef_search` candidates. No training; higher memory (links), fast queries.
    ivfpq  OPQ rotation + IVF + product quantisation (`pq_bytes` bytes per vector): the compressed
           kind. The best `refine_factor * k` candidates are re-ranked exactly from the float32
           vectors, kept on disk (vectors.f32) and memory-mapped: page cache, not anonymous memory.

On disk an index is a folder:

    index.faiss   the faiss index (faiss.write_index)
    meta.json     format, version, kind, dim, count, options and whatever the caller recorded
                  (the model: config, checkpoint, preprocessing, fingerprint; the gallery root...)
    items.json    {"ids": [...], "paths": [...], "labels": [...], "metas": [...]}: row i of the
                  faiss index is the item with id ids[i] (format 1: no ids, row i is id i)
    vectors.f32   ivfpq only: the float32 rows [N, D], for the exact re-rank
    updates.sqlite  the writes since the build (`vmfml.index.write_log`; format 2)

Item ids are stable: a row keeps its id through later adds, removals and compacting rebuilds, and
an id is never given out twice (meta.json's next_id, then the write log's).

The folder is written whole and swapped in for an existing one in a single rename
(`vmfml.files.atomic_folder`): a rebuild killed at any point leaves the previous index or the new
one, never index.faiss of one and meta.json of the other. meta.json also records the size and
SHA-256 of the built part (index.faiss, items.json, vectors.f32), and `load` refuses a folder whose files do not match it
(one mixed by hand, or by a version of vmfml that wrote the files one by one).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import faiss
import numpy as np
import torch

from vmfml.files import atomic_folder, file_digest, temp_entries
from vmfml.heap import release_memory
from vmfml.index.columns import LabelColumn, MetaColumn, TextColumn, clause_mask
from vmfml.index.where import Clause

FORMAT = "vmfml-index"
VERSION = 2
KINDS = ("flat", "ivf", "hnsw", "ivfpq")
FILES = ("index.faiss", "meta.json", "items.json")
VECTORS_FILE = "vectors.f32"
# The files meta.json vouches for, by size and SHA-256 (vectors.f32 too where there is one).
CHECKED_FILES = ("index.faiss", "items.json")
# meta.json keys written by `save` (not the caller's own metadata).
RESERVED_META = (
    "format", "version", "kind", "dim", "count", "next_id", "metric", "options", "files"
)  # fmt: skip
# Rows per faiss.add call: bounds the float32 copy of a memory-mapped input to ~32 MiB at D=128.
CHUNK_ROWS = 65_536
# A filter that leaves at most this many rows is searched exactly (by their stored vectors) on
# the approximate kinds: graph and cell searches miss matches that lie far from the query.
EXACT_FILTER_ROWS = 10_000
# How far from 1 an embedding's norm may be before it is refused as "not on the unit sphere".
NORM_TOLERANCE = 1e-3


class Items(Sequence[dict[str, Any]]):
    """Items in row order, a read-only list of `{"id", "path", "label", "meta"}` dicts built on
    access (`meta`: the item's own metadata, {} where none).

    Ids, paths, labels and metadata are stored as packed columns (`vmfml.index.columns`): a
    million dicts would cost far more memory than the index itself.
    """

    def __init__(
        self,
        paths: Sequence[str | None],
        labels: Sequence[str | None],
        ids: np.ndarray | None = None,
        metas: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        self._paths = paths
        self._labels = labels
        self._ids = ids
        self._metas = metas

    def __len__(self) -> int:
        return len(self._paths)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._paths)
        i = int(i)  # numpy integers too; the dict must hold a plain int (JSON)
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range: the index holds {n} items")
        i %= n
        return {
            "id": i if self._ids is None else int(self._ids[i]),
            "path": self._paths[i],
            "label": self._labels[i],
            "meta": dict(self._metas[i] or {}) if self._metas is not None else {},
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    @property
    def paths(self) -> Sequence[str | None]:
        return self._paths

    @property
    def labels(self) -> Sequence[str | None]:
        return self._labels


class SearchIndex:
    """A faiss inner-product index over unit embeddings `[N, D]` plus items and metadata.

    Build one with `SearchIndex.build`, grow it with `add`, persist it with `save` / `load`, and
    query it with `search`. Row r of the faiss index is `items[r]`, whose id is `ids[r]`; ids rise
    with the row (ids 0..N-1 for a fresh build). The live gallery (`vmfml.index.Gallery`) builds on
    this class: it adds and masks out rows, and keeps the ids stable.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
        >>> x /= np.linalg.norm(x, axis=1, keepdims=True)
        >>> index = SearchIndex.build(x, kind="flat")
        >>> scores, ids = index.search(x[:2], k=3)
        >>> ids[:, 0].tolist()
        [0, 1]
    """

    def __init__(
        self,
        faiss_index: faiss.Index,
        kind: str,
        meta: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Wrap an empty or filled faiss index; prefer `build` or `load`."""
        _check_kind(kind)
        if faiss_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("SearchIndex needs an inner-product faiss index (unit embeddings)")
        self.index = faiss_index
        self.kind = kind
        self.meta: dict[str, Any] = dict(meta or {})
        self.options: dict[str, Any] = dict(options or {})
        n = faiss_index.ntotal
        # Packed columns (`vmfml.index.columns`): a few bytes an item, not a Python object each.
        self._paths = TextColumn.nulls(n)
        self._labels = LabelColumn.nulls(n)
        self._metas = MetaColumn.nulls(n)
        self._ids = np.arange(n, dtype=np.int64)
        self.next_id = n
        # ivfpq: the exact float32 rows: those read from vectors.f32 (a memory map), then the
        # rows added since (in memory).
        self._stored: np.ndarray | None = None
        self._added = np.empty((0, faiss_index.d), dtype=np.float32)
        self._direct_map = False
        # Concurrent searches (a gallery's read lock) may both find the direct map missing.
        self._direct_map_lock = threading.Lock()

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray | torch.Tensor,
        items: Sequence[dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
        kind: str = "flat",
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        pq_bytes: int | None = None,
        opq: bool = False,
        refine_factor: int = 16,
        train_size: int | None = None,
        chunk_rows: int = CHUNK_ROWS,
        seed: int = 0,
        progress: bool = False,
    ) -> SearchIndex:
        """Build an index over `embeddings`, adding them in chunks.

        Args:
            embeddings: float `[N, D]` unit rows; a memory map is read one chunk at a time.
            items: N dicts with optional `"path"`, `"label"` (class name) and `"meta"` (a dict
                of JSON scalars, for filters); None: unnamed.
            meta: recorded with the index (model info, gallery root...).
            kind: "flat" (exact), "ivf", "hnsw" or "ivfpq" (compressed).
            ids: the N item ids, rising (default 0..N-1): a compacting rebuild keeps the old ones.
            nlist: ivf/ivfpq cells; default `4 sqrt(N)`, at most N / 39 (faiss wants >= 39
                training points per cell), at least 1.
            nprobe: ivf/ivfpq cells scanned per query; default `nlist / 16` (>= 1, <= nlist).
            m: hnsw links per vector.
            ef_construction: hnsw candidate list while building.
            ef_search: hnsw candidate list while searching (>= k is needed for k results).
            pq_bytes: ivfpq code size per vector, dividing D; default D / 8 (32x smaller than
                float32; on 1,000,000 x 128 with refine_factor 16 it kept 10-recall@10 at 0.958,
                with 8 at 0.942: BENCHMARKS.md 4.2).
            opq: ivfpq: rotate the vectors (OPQ) before quantising them (slow to train; see
                BENCHMARKS.md section 4 for what it gains).
            refine_factor: ivfpq: candidates re-ranked exactly per result (k * refine_factor;
                default 16, 8 until the 1M measurement); a search-time setting
                (`set_search_params`).
            train_size: ivf/ivfpq training rows, sampled uniformly at random; default `64 nlist`
                for ivf, at least 256 * 39 for ivfpq's codebooks (at most N). A random sample
                matters: galleries are usually sorted by class.
            chunk_rows: rows per `add` call.
            seed: of the training sample and of k-means.
            progress: tqdm bar while adding.

        Returns:
            the filled index; its `options` record the parameters actually used.
        """
        _check_kind(kind)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(
                f"embeddings must be a non-empty [N, D] array, got shape {tuple(embeddings.shape)}"
            )
        n, d = int(embeddings.shape[0]), int(embeddings.shape[1])
        options: dict[str, Any] = {}
        faiss_index: faiss.Index
        if kind == "flat":
            faiss_index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            _check_positive(m=m, ef_construction=ef_construction, ef_search=ef_search)
            faiss_index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            faiss_index.hnsw.efConstruction = ef_construction
            options = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
        else:
            if nlist is None:
                nlist = int(min(max(1, round(4 * math.sqrt(n))), max(1, n // 39)))
            if nprobe is None:
                nprobe = max(1, nlist // 16)
            _check_positive(nlist=nlist, nprobe=nprobe)
            if nlist > n:
                raise ValueError(f"nlist={nlist} cells need at least as many vectors; got N={n}")
            if train_size is None:
                train_size = 64 * nlist if kind == "ivf" else max(64 * nlist, 256 * 39)
            train_size = min(n, train_size)
            if train_size < nlist:
                raise ValueError(f"train_size={train_size} is smaller than nlist={nlist}")
            options = {"nlist": nlist, "nprobe": min(nprobe, nlist), "train_size": train_size}
            if kind == "ivf":
                description = f"IVF{nlist},Flat"
            else:
                pq_bytes = max(1, d // 8) if pq_bytes is None else pq_bytes
                _check_positive(pq_bytes=pq_bytes, refine_factor=refine_factor)
                if d % pq_bytes:
                    divisors = [b for b in range(1, d + 1) if d % b == 0]
                    raise ValueError(
                        f"pq_bytes={pq_bytes} must divide the dimension {d}; valid: "
                        + ", ".join(map(str, divisors))
                    )
                if n < 256:
                    raise ValueError(f"ivfpq needs at least 256 vectors to train; got N={n}")
                # "np": no polysemous training (slow, and only for Hamming-thresholded search)
                description = f"{f'OPQ{pq_bytes},' if opq else ''}IVF{nlist},PQ{pq_bytes}np"
                options.update(pq_bytes=pq_bytes, opq=opq, refine_factor=refine_factor)
            faiss_index = faiss.index_factory(d, description, faiss.METRIC_INNER_PRODUCT)
            faiss.extract_index_ivf(faiss_index).cp.seed = seed
            rows = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
            faiss_index.train(_as_float32(embeddings[rows], "training sample"))
        index = cls(faiss_index, kind, meta, options)
        if kind == "ivfpq":
            index._stored = np.empty((0, d), dtype=np.float32)
        index.set_search_params(
            **{k: v for k, v in options.items() if k in ("nprobe", "ef_search")}
        )
        index.add(embeddings, items, ids=ids, chunk_rows=chunk_rows, progress=progress)
        return index

    def add(
        self,
        embeddings: np.ndarray | torch.Tensor,
        items: Sequence[dict[str, Any]] | None = None,
        *,
        ids: Sequence[int] | np.ndarray | None = None,
        chunk_rows: int = CHUNK_ROWS,
        progress: bool = False,
    ) -> None:
        """Append `embeddings` `[M, D]` (unit rows) and their items, as new rows.

        Their ids are `ids` (rising, above every id held) or continue from `next_id`. Added
        `chunk_rows` at a time, so a memory-mapped input is never copied whole.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(
                f"cannot add embeddings of shape {tuple(embeddings.shape)} to an index of "
                f"dimension {self.dim}"
            )
        m = int(embeddings.shape[0])
        if items is not None and len(items) != m:
            raise ValueError(f"{m} embeddings but {len(items)} items")
        new_ids = (
            np.arange(self.next_id, self.next_id + m, dtype=np.int64)
            if ids is None
            else np.asarray(ids, dtype=np.int64).reshape(-1)
        )
        if len(new_ids) != m:
            raise ValueError(f"{m} embeddings but {len(new_ids)} ids")
        if m and (np.any(np.diff(new_ids) <= 0) or new_ids[0] < self.next_id):
            raise ValueError(
                f"item ids must rise and start at {self.next_id} or above (ids are never reused)"
            )
        if not self.index.is_trained:
            raise ValueError(
                f"this {self.kind} index is not trained; build it with SearchIndex.build"
            )
        from tqdm.auto import tqdm

        added = []
        for start in tqdm(
            range(0, m, chunk_rows), desc=f"index ({self.kind})", disable=not progress
        ):
            chunk = _as_float32(embeddings[start : start + chunk_rows], "embeddings")
            _check_unit(chunk, first_row=start)
            self.index.add(chunk)
            if self._stored is not None:
                added.append(np.array(chunk))  # a copy: the caller's array may change
        if items is None:
            items = [{}] * m
        for item in items:
            path, label, meta = item.get("path"), item.get("label"), item.get("meta")
            self._paths.append(None if path is None else str(path))
            self._labels.append(label)
            self._metas.append(dict(meta) if meta else None)
        self._ids = np.concatenate([self._ids, new_ids])
        if added:
            self._added = np.concatenate([self._added, *added])
        if m:
            self.next_id = int(new_ids[-1]) + 1
        self._direct_map = False

    # ---- queries -----------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, rows: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar items of each query.

        Args:
            queries: float `[Q, D]` (unit rows, for scores that are cosines).
            k: neighbours per query, >= 1.
            rows: bool `[N]`, the rows that may be returned (a faiss ID selector: exact on flat,
                min(k, rows.sum()) hits; every hit among them on the other kinds, and exact
                there too when at most `EXACT_FILTER_ROWS` rows pass); None: all.

        Returns:
            `(scores [Q, k] float32, ids [Q, k] int64)`, best first. Where fewer than k items are
            reachable (k > N, a filter, or an ivf probe of sparse cells) the tail has id -1 and
            score -inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if queries.ndim != 2:
            raise ValueError(f"queries must be [Q, D], got shape {tuple(queries.shape)}")
        if queries.shape[1] != self.dim:
            raise ValueError(
                f"queries have dimension {queries.shape[1]} but the index holds "
                f"{self.dim}-dimensional embeddings"
                + (f" of {_model_name(self.meta)}" if _model_name(self.meta) else "")
            )
        if self.index.ntotal == 0:
            raise ValueError("the index is empty: add embeddings before searching")
        q = _as_float32(queries, "queries")
        if rows is not None and self.kind != "flat":
            allowed = np.flatnonzero(rows)
            if len(allowed) <= EXACT_FILTER_ROWS:
                return self._exact(q, allowed, int(k))
        wanted = int(k) * (int(self.options["refine_factor"]) if self.kind == "ivfpq" else 1)
        if rows is None:
            scores, found = self.index.search(q, wanted)
        else:
            bitmap = np.packbits(np.asarray(rows, dtype=bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(len(rows), faiss.swig_ptr(bitmap))
            # faiss.contrib.torch_utils (imported by pytorch-metric-learning) replaces
            # Index.search by a version without `params`; the original stays as search_numpy.
            search = getattr(self.index, "search_numpy", self.index.search)
            scores, found = search(q, wanted, params=self._params(selector))
        if self.kind == "ivfpq":
            scores, found = self._rerank(q, found, int(k))
        scores[found < 0] = -np.inf
        return scores, np.where(found < 0, -1, self._ids[np.maximum(found, 0)])

    def _exact(self, q: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the stored vectors of the `allowed` rows: `(scores, ids)`."""
        sims = q @ self._row_vectors(allowed).T  # [Q, A]
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        scores[:, : top.shape[1]] = np.take_along_axis(sims, top, axis=1)
        ids[:, : top.shape[1]] = self._ids[allowed[top]]
        return scores, ids

    def _row_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored float32 vectors `[len(rows), D]` of rows (exact except for none: ivfpq
        keeps them on disk, the other kinds store them whole)."""
        if self.kind == "ivfpq":
            return self._vectors(rows)
        if self.kind == "ivf":
            self._make_direct_map()
        return np.asarray(self.index.reconstruct_batch(rows.astype(np.int64)), dtype=np.float32)

    def _params(self, selector: Any) -> Any:
        """faiss search parameters with `selector`, keeping the search-time settings."""
        params: Any = faiss  # its SWIG stubs lack these constructors' keyword arguments
        if self.kind == "hnsw":
            return params.SearchParametersHNSW(sel=selector, efSearch=self.options["ef_search"])
        if self.kind in ("ivf", "ivfpq"):
            return params.SearchParametersIVF(sel=selector, nprobe=self.options["nprobe"])
        return params.SearchParameters(sel=selector)

    def _rerank(
        self, q: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the candidate rows by exact inner product with the stored vectors."""
        exact = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for i, row in enumerate(candidates):
            valid = row >= 0
            exact[i, valid] = self._vectors(row[valid]) @ q[i]
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(candidates, order, axis=1)
        best_scores = np.take_along_axis(exact, order, axis=1)
        best[np.isneginf(best_scores)] = -1
        if best.shape[1] < k:  # fewer candidates than k (k > N)
            pad = k - best.shape[1]
            best = np.pad(best, ((0, 0), (0, pad)), constant_values=-1)
            best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return best_scores, best

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """ivfpq: the exact float32 vectors of `rows`, from the memory map or the added rows."""
        assert self._stored is not None
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        n_stored = len(self._stored)
        on_disk = rows < n_stored
        out[on_disk] = self._stored[rows[on_disk]]
        out[~on_disk] = self._added[rows[~on_disk] - n_stored]
        return out

    def mask(self, clause: Clause) -> np.ndarray:
        """The rows whose item passes one filter clause (a bool array over the rows), computed
        over the packed columns without a Python loop for label and path clauses."""
        return clause_mask(clause, self._paths, self._labels, self._metas)

    def row_of(self, item_id: int) -> int | None:
        """The row holding item `item_id`, None if no row does."""
        r = int(np.searchsorted(self._ids, int(item_id)))
        return r if r < len(self._ids) and self._ids[r] == item_id else None

    def reconstruct(self, i: int) -> np.ndarray:
        """The stored embedding `[D]` of the item with id i."""
        row = self.row_of(i)
        if row is None:
            raise IndexError(f"no item with id {i}: the index holds {len(self)} items")
        if self.kind == "ivfpq":
            return self._vectors(np.array([row]))[0]
        if self.kind == "ivf":
            self._make_direct_map()
        return np.asarray(self.index.reconstruct(int(row)), dtype=np.float32)

    def _make_direct_map(self) -> None:
        """IVF lists are not addressable by row until a direct map (8 bytes per item) exists."""
        with self._direct_map_lock:
            if not self._direct_map:
                faiss.extract_index_ivf(self.index).make_direct_map()
                self._direct_map = True

    def set_search_params(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        """Trade speed for recall at query time: `nprobe` (ivf, ivfpq), `ef_search` (hnsw),
        `refine_factor` (ivfpq)."""
        if refine_factor is not None:
            if self.kind != "ivfpq":
                raise ValueError(f"refine_factor applies to ivfpq indexes; this one is {self.kind}")
            _check_positive(refine_factor=refine_factor)
            self.options["refine_factor"] = refine_factor
        if nprobe is not None:
            if self.kind not in ("ivf", "ivfpq"):
                raise ValueError(
                    f"nprobe applies to ivf and ivfpq indexes; this one is {self.kind}"
                )
            _check_positive(nprobe=nprobe)
            nlist = faiss.extract_index_ivf(self.index).nlist
            if nprobe > nlist:
                raise ValueError(f"nprobe={nprobe} exceeds nlist={nlist}")
            faiss.extract_index_ivf(self.index).nprobe = nprobe
            self.options["nprobe"] = nprobe
        if ef_search is not None:
            if self.kind != "hnsw":
                raise ValueError(f"ef_search applies to hnsw indexes; this one is {self.kind}")
            _check_positive(ef_search=ef_search)
            hnsw_index: Any = self.index  # an IndexHNSWFlat (kind checked above)
            hnsw_index.hnsw.efSearch = ef_search
            self.options["ef_search"] = ef_search

    # ---- properties --------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ids(self) -> np.ndarray:
        """int64 `[N]`: the item id of each row (rising)."""
        return self._ids

    @property
    def items(self) -> Items:
        """Row r's item is `{"id", "path", "label", "meta"}` (label = class name)."""
        return Items(self._paths, self._labels, self.ids, self._metas)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"SearchIndex(kind={self.kind}, count={len(self)}, dim={self.dim}{', ' + opts if opts else ''})"

    # ---- persistence -------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write the index folder `directory`, whole or not at all (format 2, with an empty
        write log).

        The files are written into a new folder beside `directory`, which then replaces it in
        one rename; an existing `directory` must be empty or an index folder (it is replaced
        whole, so other files would be lost: see `check_destination`).
        """
        from vmfml.index.write_log import WriteLog

        directory = Path(directory)
        check_destination(directory)
        meta = {
            **self.meta,
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self),
            "next_id": self.next_id,
            "metric": "inner_product",
            "options": self.options,
        }
        checked = CHECKED_FILES + ((VECTORS_FILE,) if self.kind == "ivfpq" else ())

        def write(folder: Path) -> None:
            faiss.write_index(self.index, str(folder / "index.faiss"))
            if self.kind == "ivfpq":
                self._write_vectors(folder / VECTORS_FILE)
            (folder / "items.json").write_text(
                json.dumps(
                    {
                        "ids": self.ids.tolist(),
                        "paths": self._paths.tolist(),
                        "labels": self._labels.tolist(),
                        "metas": self._metas.tolist(),
                    }
                )
            )
            meta["files"] = {name: _fingerprint(folder / name) for name in checked}
            (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
            WriteLog(
                folder, file_digest(folder / "meta.json"), self.next_id, self.dim, create=True
            ).close()
            _fsync_folder(folder)  # on disk before it replaces a folder (a compaction's writes)

        atomic_folder(directory, write)
        return directory

    def _write_vectors(self, path: Path) -> None:
        with open(path, "wb") as f:
            for start in range(0, len(self), CHUNK_ROWS):
                rows = np.arange(start, min(len(self), start + CHUNK_ROWS))
                f.write(np.ascontiguousarray(self._vectors(rows), dtype=np.float32).tobytes())
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, directory: str | Path) -> SearchIndex:
        """Read the built part of an index folder written by `save` (format 1 or 2); the writes
        since (`updates.sqlite`) are the live gallery's (`vmfml.index.Gallery`).

        Raises:
            FileNotFoundError: the folder or one of its files is missing (named).
            ValueError: not a vmfml index, or its parts disagree (dimension, count).
        """
        directory = Path(directory)
        if not directory.is_dir():
            left = [p.name for p in temp_entries(directory) if (p / "meta.json").is_file()]
            hint = (
                f" (a rebuild was interrupted: {', '.join(left)} beside it holds a complete "
                "index; run `vmfml index` again)"
                if left
                else ""
            )
            raise FileNotFoundError(f"index folder not found: {directory}{hint}")
        missing = [f for f in FILES if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{directory} is not a complete vmfml index: missing {', '.join(missing)} "
                f"(an index folder holds {', '.join(FILES)}; build one with `vmfml index`)"
            )
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{directory}: damaged metadata: meta.json: {err}") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{directory}/meta.json is not vmfml index metadata")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(f"{directory} was written by a newer vmfml (format {meta['version']})")
        kind = meta["kind"]
        _check_kind(kind)
        _check_files(directory, meta.get("files"), kind)
        try:
            stored = json.loads((directory / "items.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{directory}: damaged metadata: items.json: {err}") from err
        try:
            faiss_index = faiss.read_index(str(directory / "index.faiss"))
        except RuntimeError as err:
            raise ValueError(f"cannot read {directory / 'index.faiss'}: {err}") from err
        if int(meta["dim"]) != faiss_index.d:
            raise ValueError(
                f"{directory}: meta.json says dimension {meta['dim']} but index.faiss holds "
                f"{faiss_index.d}-dimensional vectors"
            )
        paths, labels = stored.get("paths", []), stored.get("labels", [])
        ids = stored.get("ids", list(range(len(paths))))
        metas = stored.get("metas", [None] * len(paths))
        if not (
            int(meta["count"]) == faiss_index.ntotal == len(paths) == len(labels) == len(ids)
            == len(metas)
        ):  # fmt: skip
            raise ValueError(
                f"{directory}: inconsistent counts: meta.json {meta['count']}, index.faiss "
                f"{faiss_index.ntotal}, items.json {len(paths)} paths / {len(labels)} labels / "
                f"{len(ids)} ids"
            )
        options = dict(meta.get("options", {}))
        own = {k: meta[k] for k in meta if k not in RESERVED_META}
        index = cls(faiss_index, kind, own, options)
        index._paths, index._metas = TextColumn(paths), MetaColumn(metas)
        index._labels = LabelColumn(labels)
        index._ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if np.any(np.diff(index.ids) <= 0):
            raise ValueError(f"{directory}/items.json: item ids do not rise")
        index.next_id = int(meta.get("next_id", len(paths)))
        del stored, paths, labels, ids, metas
        release_memory()  # the parsed items.json's text and objects, now held by no one
        if kind == "ivfpq":
            index._stored = _map_vectors(directory / VECTORS_FILE, len(index), faiss_index.d)
        index.set_search_params(
            nprobe=options.get("nprobe") if kind in ("ivf", "ivfpq") else None,
            ef_search=options.get("ef_search") if kind == "hnsw" else None,
        )
        return index


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _map_vectors(path: Path, n: int, d: int) -> np.ndarray:
    """vectors.f32 memory-mapped read-only (file-backed pages: not the process's own memory)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} is not a complete ivfpq index: missing {path.name}")
    if path.stat().st_size != n * d * 4:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {n} x {d} float32")
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _as_float32(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A C-contiguous float32 numpy copy/view, as faiss requires."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be floating point, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_unit(x: np.ndarray, first_row: int) -> None:
    """Refuse rows off the unit sphere: inner-product scores would not be cosines."""
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(~(np.abs(norms - 1.0) <= NORM_TOLERANCE))
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"embedding row {first_row + i} has norm {norms[i]:.4g}; the index needs unit rows "
            "(L2-normalize the embeddings, as EmbeddingModel does)"
        )


def _model_name(meta: dict[str, Any]) -> str:
    from vmfml.index.model_record import describe

    return describe(meta["model"]) if meta.get("model") else ""


def check_destination(directory: str | Path) -> None:
    """Refuse to write an index to `directory` unless it is new, empty or an index folder.

    `save` replaces the folder whole; anything in it besides an index's files would be lost.
    Temporary files left in an index folder by an interrupted save of older versions count as
    the index's own (they go with it).

    Raises:
        ValueError: `directory` is a file, or a folder holding other files (some are named).
    """
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ValueError(f"cannot write an index to {directory}: it exists and is not a folder")
    leftover = re.compile(rf"^\.({'|'.join(map(re.escape, FILES))})\..*\.tmp$")
    from vmfml.index.write_log import COMPANIONS

    own = (*FILES, VECTORS_FILE, *COMPANIONS, "milvus.db")  # milvus.db: a Milvus Lite gallery
    foreign = sorted(
        p.name for p in directory.iterdir() if p.name not in own and not leftover.match(p.name)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise ValueError(
            f"cannot write an index to {directory}: it holds files that are not part of an index "
            f"({shown}), and writing replaces the whole folder; give a new folder, or an "
            "existing index folder to rebuild it"
        )


def _fingerprint(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}


def _check_files(directory: Path, recorded: Any, kind: str) -> None:
    """Refuse files that are not those meta.json was written with (sizes first: cheap)."""
    if recorded is None:  # written before meta.json recorded its files
        return
    checked = CHECKED_FILES + ((VECTORS_FILE,) if kind == "ivfpq" else ())
    if not isinstance(recorded, dict) or any(
        not isinstance(recorded.get(name), dict) for name in checked
    ):
        raise ValueError(f"{directory}/meta.json: damaged 'files' record")
    for check in ("bytes", "sha256"):
        for name in checked:
            path = directory / name
            actual = path.stat().st_size if check == "bytes" else file_digest(path)
            if actual != recorded[name].get(check):
                raise ValueError(
                    f"{directory} mixes files of different index builds: {name} is not the file "
                    f"its meta.json was written with ({check} differ); the folder cannot be "
                    "trusted, rebuild it with `vmfml index`"
                )
