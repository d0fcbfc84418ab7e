"""`Gallery`: an index folder as a live gallery: add and remove items without a rebuild.

The folder's built part (`SearchIndex`: index.faiss, items.json, meta.json) is read once; the
writes since the build live in its SQLite write log (`WriteLog`, updates.sqlite), on disk before
`add` or `remove` returns. In memory the gallery is the built index plus the logged rows added to
it, and a mask of the rows still live: a removed row stays in the faiss index (hnsw cannot delete)
but every search excludes it through a faiss ID selector, as it excludes rows a filter rejects.
`compact` rebuilds the folder from the live rows, keeping their ids.

Other processes' writes: before each call the gallery asks SQLite whether another connection
committed (`PRAGMA data_version`, no disk read) and applies the new rows, and checks whether the
folder was rebuilt (meta.json replaced), then reloads it. So a server holding the gallery sees
`vmfml index add/remove` by the next search.

Thread safety: searches and reads share a read-write lock (`index.rwlock.ReadWriteLock`), so a
server's searches run side by side (faiss's CPU searches may); a write, a compaction or
applying another process's writes holds it alone.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from vmfml.files import file_digest
from vmfml.index.rwlock import ReadWriteLock
from vmfml.index.search_index import SearchIndex
from vmfml.index.store import Hit, Item, Where, checked_additions
from vmfml.index.where import Clause, parse_where
from vmfml.index.write_log import FILE as LOG_FILE
from vmfml.index.write_log import FolderReplaced, Tail, WriteLog

# Search options a compacting rebuild carries over from the build it replaces.
# Filter masks (one bool per row each) kept for repeated clauses; the rest are recomputed.
MAX_CACHED_MASKS = 16
BUILD_OPTIONS = ("nlist", "nprobe", "m", "ef_construction", "ef_search", "pq_bytes", "opq",
                 "refine_factor")  # fmt: skip


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json of an index folder (FileNotFoundError / ValueError naming the folder)."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        SearchIndex.load(directory)  # raises its message (missing folder, interrupted rebuild)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{directory}: damaged metadata: meta.json: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not vmfml index metadata")
    return meta


class Gallery:
    """The live gallery of an index folder (see the module docstring); a `GalleryStore`.

    Example:
        >>> g = Gallery(folder)                                     # doctest: +SKIP
        >>> ids = g.add(vectors, [{"path": "shop7/a.jpg", "label": "shoe", "meta": {"camera": 3}}])
        >>> g.search(query[None], k=5, where=["label=shoe", "meta.camera=3"])
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._rw = ReadWriteLock()
        # Under a shared read lock: one thread at a time asks the write log whether another
        # process wrote (its SQLite connection), and updates the filter masks' cache.
        self._check = threading.Lock()
        self._masks_lock = threading.Lock()
        self._log: WriteLog | None = None
        self._load()

    # ---- reading the folder ------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)read the built part, then every logged write."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._stamp = _stamp(self.directory)
        self._index = SearchIndex.load(self.directory)
        self._built_rows = len(self._index)
        self._live = np.ones(len(self._index), dtype=bool)
        # Filter clauses come from requests: at most MAX_CACHED_MASKS N-byte masks are kept.
        self._masks: OrderedDict[Clause, np.ndarray] = OrderedDict()
        self._seq = 0
        self._version = -1
        self._open_log(create=False)

    def _open_log(self, create: bool) -> None:
        """Open the write log (creating it for the first write into a format-1 folder)."""
        if self._log is not None or not (create or (self.directory / LOG_FILE).is_file()):
            return
        self._log = WriteLog(
            self.directory,
            file_digest(self.directory / "meta.json"),
            self._index.next_id,
            self.dim,
            create=create,
        )
        self._follow()

    def _follow(self) -> None:
        """Apply the log's writes this gallery has not seen."""
        assert self._log is not None
        version = self._log.data_version()
        if version != self._version:
            self._apply(self._log.tail(self._seq))
            self._version = version

    def _apply(self, tail: Tail) -> None:
        """Add the tail's rows to the in-memory index and mask out its removed ids."""
        if len(tail.ids):
            items = [
                {"path": p, "label": lab, "meta": m}
                for p, lab, m in zip(tail.paths, tail.labels, tail.metas, strict=True)
            ]
            self._index.add(tail.vectors, items, ids=tail.ids)
            self._live = np.concatenate([self._live, np.ones(len(tail.ids), dtype=bool)])
        for i in tail.removed.tolist():
            row = self._index.row_of(i)
            if row is not None:
                self._live[row] = False
        if len(tail.ids) or len(tail.removed):
            self._masks.clear()
        self._seq = tail.seq

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Shared access to the gallery with every write made so far applied: another process's
        writes, or a rebuilt folder, are applied first under the write lock."""
        while True:
            with self._rw.read():
                with self._check:
                    stale = self._stale()
                if not stale:
                    yield
                    return
            with self._rw.write():
                self._refresh()

    def _stale(self) -> bool:
        """Whether the folder was rebuilt or the log holds writes not applied here yet."""
        if _stamp(self.directory) != self._stamp:
            return True
        if self._log is None:
            return (self.directory / LOG_FILE).is_file()
        return self._log.data_version() != self._version

    def _refresh(self) -> None:
        """See other processes' writes, and a rebuilt folder."""
        if _stamp(self.directory) != self._stamp:
            self._load()
        elif self._log is None:
            self._open_log(create=False)
        else:
            self._follow()

    @contextmanager
    def _writing(self) -> Iterator[WriteLog]:
        """The write log, opened (or created); a folder rebuilt meanwhile is reloaded first."""
        self._refresh()
        self._open_log(create=True)
        assert self._log is not None
        yield self._log

    def _retrying(self, write: Any) -> Any:
        """Run `write(log)`; if the folder was rebuilt while we waited for the lock, reload the
        new folder and write there (never into the retired log, which nobody reads)."""
        for _ in range(3):
            try:
                with self._writing() as log:
                    return write(log)
            except FolderReplaced:
                self._load()
        raise RuntimeError(f"{self.directory} kept being rebuilt during a write; try again")

    # ---- writing -----------------------------------------------------------------------------

    def add(
        self, vectors: np.ndarray | torch.Tensor, items: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Store unit rows `[M, D]` and their items; returns their new ids (on disk already)."""
        x, checked = checked_additions(vectors, items, self.dim)
        with self._rw.write():
            ids = self._retrying(lambda log: log.add(x, checked))
            self._follow_own()
            return ids

    def remove(self, ids: Sequence[int]) -> list[int]:
        """Remove items by id, all or none; an id never given out, or removed already, is
        refused by name."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        with self._rw.write():

            def in_build(i: int) -> bool:
                row = self._index.row_of(i)
                return row is not None and row < self._built_rows

            self._retrying(lambda log: log.remove(wanted, in_build))
            self._follow_own()
            return wanted

    def _follow_own(self) -> None:
        """Apply this process's own write (SQLite's data_version only counts other writers)."""
        self._version = -1
        self._follow()

    def compact(self) -> None:
        """Rebuild the folder from the live items, keeping their ids, kind and options; the
        write log starts empty. Writers wait meanwhile; those that waited write to the new
        folder."""
        with self._rw.write():
            for _ in range(3):
                try:
                    with self._writing() as log, log.locked(self._seq) as tail:
                        self._apply(tail)
                        self._rebuilt(log.next_id()).save(self.directory)
                    break
                except FolderReplaced:
                    self._load()
            self._load()

    def _rebuilt(self, next_id: int) -> SearchIndex:
        rows = np.flatnonzero(self._live)
        if len(rows) == 0:
            raise ValueError(f"{self.directory}: every item was removed; nothing to rebuild")
        index = self._index
        vectors = np.stack([index.reconstruct(int(i)) for i in index.ids[rows]])
        items = [index.items[int(r)] for r in rows]
        options = {k: v for k, v in index.options.items() if k in BUILD_OPTIONS}
        if "nlist" in options:  # as many cells as fit the live rows
            options["nlist"] = min(int(options["nlist"]), max(1, len(rows) // 39))
            options["nprobe"] = min(int(options["nprobe"]), options["nlist"])
        rebuilt = SearchIndex.build(
            vectors, items, index.meta, index.kind, ids=index.ids[rows], **options
        )
        rebuilt.next_id = next_id
        return rebuilt

    # ---- reading -----------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(scores [Q, k], ids [Q, k])` among the live items that pass `where` (ANDed clauses,
        see `vmfml.index.where`); exact on flat: min(k, matches) hits."""
        clauses = parse_where(where)
        with self._reading():
            return self._search(queries, k, clauses)

    def _search(
        self, queries: np.ndarray | torch.Tensor, k: int, clauses: tuple[Clause, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = self._allowed(clauses)
        if rows is not None and not rows.any():
            q = np.asarray(queries)
            return (
                np.full((len(q), k), -np.inf, dtype=np.float32),
                np.full((len(q), k), -1, dtype=np.int64),
            )
        return self._index.search(queries, k, rows=rows)

    def hits(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> list[list[Hit]]:
        clauses = parse_where(where)
        with self._reading():
            scores, ids = self._search(queries, k, clauses)
            out: list[list[Hit]] = []
            for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
                row: list[Hit] = []
                for score, i in zip(row_scores, row_ids, strict=True):
                    if i >= 0:
                        item = self._item(self._index.row_of(i))
                        row.append(Hit(**item, score=float(score)))  # type: ignore[typeddict-item]
                out.append(row)
            return out

    def _allowed(self, clauses: tuple[Clause, ...]) -> np.ndarray | None:
        """The rows a search may return (None: all of them)."""
        rows = None if self._live.all() else self._live
        for clause in clauses:
            with self._masks_lock:
                mask = self._masks.get(clause)
                if mask is not None:
                    self._masks.move_to_end(clause)
            if mask is None:
                mask = self._index.mask(clause)
                with self._masks_lock:
                    self._masks[clause] = mask
                    while len(self._masks) > MAX_CACHED_MASKS:
                        self._masks.popitem(last=False)  # the least recently used
            rows = mask if rows is None else rows & mask
        return rows

    def get(self, item_id: int) -> Item | None:
        with self._reading():
            return self._get(item_id)

    def _get(self, item_id: int) -> Item | None:
        row = self._index.row_of(int(item_id))
        return None if row is None or not self._live[row] else self._item(row)

    def _item(self, row: int | None) -> Item:
        assert row is not None
        return self._index.items[row]  # type: ignore[return-value]

    def reconstruct(self, item_id: int) -> np.ndarray:
        with self._reading():
            if self._get(item_id) is None:
                raise IndexError(f"no item with id {item_id} in the gallery {self.directory}")
            return self._index.reconstruct(int(item_id))

    def set_search_params(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        with self._rw.write():
            self._index.set_search_params(nprobe, ef_search, refine_factor)

    def close(self) -> None:
        with self._rw.write():
            if self._log is not None:
                self._log.close()
                self._log = None

    # ---- properties --------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._reading():
            return int(self._live.sum())

    @property
    def items(self) -> LiveItems:
        with self._reading():
            return LiveItems(self._index, np.flatnonzero(self._live))

    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def kind(self) -> str:
        return self._index.kind

    @property
    def meta(self) -> dict[str, Any]:
        return self._index.meta

    @property
    def options(self) -> dict[str, Any]:
        return self._index.options

    @property
    def pending_writes(self) -> int:
        """Rows added and removed since the last build (what `compact` would fold in)."""
        with self._reading(), self._check:
            return 0 if self._log is None else self._log.pending()

    def __repr__(self) -> str:
        return f"Gallery({self.directory}, kind={self.kind}, count={len(self)}, dim={self.dim})"


class LiveItems(Sequence[Item]):
    """The live items in id order, at the time they were asked for (position is not the id)."""

    def __init__(self, index: SearchIndex, rows: np.ndarray) -> None:
        self._items = index.items
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> Item: ...

    @overload
    def __getitem__(self, i: slice) -> list[Item]: ...

    def __getitem__(self, i: int | slice) -> Item | list[Item]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._items[int(self._rows[i])]  # type: ignore[return-value]


def _stamp(directory: Path) -> tuple[int, int, int] | None:
    """What changes when the folder is rebuilt (meta.json is a new file each time)."""
    try:
        st = os.stat(directory / "meta.json")
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
