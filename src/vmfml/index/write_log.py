"""`WriteLog`: the items added and removed since an index folder's last build, in SQLite.

The file `updates.sqlite` sits in the index folder beside the built part (index.faiss,
items.json, meta.json). It runs in WAL mode with synchronous=FULL: a write is on disk (the WAL is
fsynced) before `add` or `remove` returns, and a process killed at any point leaves each write
whole or absent. Writers serialise on SQLite's write lock (`BEGIN IMMEDIATE`, waiting up to
`timeout` seconds), so two processes never interleave inside one write.

Tables:

    state    key/value: build (SHA-256 of the meta.json it extends), next_id, seq (bumped by
             every write)
    added    id, seq, path, label, meta (JSON), vector (float32 bytes)
    removed  id, seq

Ids come from `next_id` inside the writing transaction: never reused, whatever is removed.
A reader follows the log by `seq`: the rows with seq > the last one it applied, found through an
index on seq (`SEQ_INDEXES`), so a write costs the same however long the log has grown.

A rebuild of the folder (`vmfml index --out`, `Gallery.compact`) holds the write lock of the log
it replaces until the new folder is in place. A writer that waited for the lock then finds that
the folder's meta.json is no longer the build its log extends, and writes into the new folder's
log instead (`FolderReplaced`): no write lands in a log nobody will read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmfml.files import file_digest

FILE = "updates.sqlite"
# SQLite's companions of the file while it is open in WAL mode.
COMPANIONS = (FILE, FILE + "-wal", FILE + "-shm", FILE + "-journal")
TIMEOUT_S = 60.0
# The tail of the log is read after every write (`Gallery` applies its own write that way): an
# index on seq keeps that read to the new rows instead of a scan of the whole table. Without it
# a write cost 0.45 ms more per 3,000 rows logged (100k x 128 flat, 2-core machine).
SEQ_INDEXES = {"added_seq": "added", "removed_seq": "removed"}
# The tail's reads, in seq order so that SQLite uses the seq indexes (ORDER BY id alone scans the
# table). Ids rise with seq (next_id is taken under the write lock): the added rows are in id order.
TAIL = {
    "added": "SELECT id, path, label, meta, vector FROM added WHERE seq > ? ORDER BY seq, id",
    "removed": "SELECT id FROM removed WHERE seq > ? ORDER BY seq, id",
}


class FolderReplaced(Exception):
    """The folder was rebuilt while this log was open: reopen the folder's new log."""


@dataclass
class Tail:
    """The writes after a given seq: added rows (in id order) and removed ids."""

    seq: int
    ids: np.ndarray  # int64 [A]
    vectors: np.ndarray  # float32 [A, D]
    paths: list[str | None]
    labels: list[str | None]
    metas: list[dict[str, Any] | None]
    removed: np.ndarray  # int64 [R]


class WriteLog:
    """The SQLite log of one index folder (created on first use with `create=True`)."""

    def __init__(self, directory: Path, build: str, next_id: int, dim: int, create: bool) -> None:
        self.path = Path(directory) / FILE
        self.directory = Path(directory)
        self.build = build
        self.dim = dim
        exists = self.path.is_file()
        if not exists and not create:
            raise FileNotFoundError(self.path)
        self._conn = sqlite3.connect(
            self.path, timeout=TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        made = self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'state'").fetchone()
        if made is None:
            self._create(build, next_id)
        if self._state("build") != build:
            self.close()
            raise ValueError(
                f"{self.path} belongs to another build of the index than {directory}/meta.json "
                "(the folder's files were mixed); the writes in it cannot be applied"
            )
        self._index_seq()

    def _create(self, build: str, next_id: int) -> None:
        with self._write():
            self._conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value)")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS added (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL,"
                " path TEXT, label TEXT, meta TEXT, vector BLOB NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)"
            )
            for key, value in (("build", build), ("next_id", next_id), ("seq", 0)):
                self._conn.execute("INSERT OR IGNORE INTO state VALUES (?, ?)", (key, value))

    def _index_seq(self) -> None:
        """Create the seq indexes if they are missing (a log written before they existed)."""
        have = {name for (name,) in self._conn.execute("SELECT name FROM sqlite_master")}
        if set(SEQ_INDEXES) <= have:
            return
        with self._write():
            for name, table in SEQ_INDEXES.items():
                self._conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} (seq)")

    def close(self) -> None:
        self._conn.close()

    # ---- reading -----------------------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits a write (cheap: no disk read)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def next_id(self) -> int:
        return int(self._state("next_id"))

    def pending(self) -> int:
        """How many writes (rows added or removed) the log holds."""
        (a,) = self._conn.execute("SELECT count(*) FROM added").fetchone()
        (r,) = self._conn.execute("SELECT count(*) FROM removed").fetchone()
        return int(a) + int(r)

    def removed_ids(self) -> set[int]:
        return {int(i) for (i,) in self._conn.execute("SELECT id FROM removed")}

    def tail(self, after_seq: int) -> Tail:
        """Every write with seq > `after_seq`, read in one snapshot."""
        self._conn.execute("BEGIN")
        try:
            return self._read(after_seq)
        finally:
            self._conn.execute("COMMIT")

    def _read(self, after_seq: int) -> Tail:
        rows = self._conn.execute(TAIL["added"], (after_seq,)).fetchall()
        removed = self._conn.execute(TAIL["removed"], (after_seq,)).fetchall()
        vectors = np.frombuffer(b"".join(r[4] for r in rows), dtype=np.float32)
        return Tail(
            seq=int(self._state("seq")),
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            vectors=vectors.reshape(len(rows), self.dim).copy(),
            paths=[r[1] for r in rows],
            labels=[r[2] for r in rows],
            metas=[json.loads(r[3]) if r[3] is not None else None for r in rows],
            removed=np.array([r[0] for r in removed], dtype=np.int64),
        )

    # ---- writing -----------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, items: Sequence[dict[str, Any]]) -> list[int]:
        """Append float32 unit rows `[M, D]` and their items; returns their new ids."""
        with self._write():
            first = int(self._state("next_id"))
            seq = int(self._state("seq")) + 1
            ids = list(range(first, first + len(vectors)))
            self._conn.executemany(
                "INSERT INTO added VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        i,
                        seq,
                        item.get("path"),
                        item.get("label"),
                        json.dumps(item["meta"]) if item.get("meta") else None,
                        np.ascontiguousarray(v, dtype=np.float32).tobytes(),
                    )
                    for i, v, item in zip(ids, vectors, items, strict=True)
                ),
            )
            self._set(next_id=first + len(vectors), seq=seq)
        return ids

    def remove(self, ids: Sequence[int], in_build: Callable[[int], bool]) -> None:
        """Mark `ids` removed, all or none.

        Raises:
            ValueError: some ids are not in the gallery: never given out (neither in the build,
                `in_build(id)`, nor added since), or removed already (they are named).
        """
        with self._write():
            wanted = sorted({int(i) for i in ids})
            marks = ",".join("?" * len(wanted))
            added = {
                i
                for (i,) in self._conn.execute(
                    f"SELECT id FROM added WHERE id IN ({marks})", wanted
                )
            }
            gone = {
                i
                for (i,) in self._conn.execute(
                    f"SELECT id FROM removed WHERE id IN ({marks})", wanted
                )
            }
            unknown = [i for i in wanted if i not in added and not in_build(i)]
            if unknown or gone:
                raise ValueError(
                    "nothing removed: "
                    + "; ".join(
                        part
                        for part in (
                            f"no item with id {_listed(unknown)} in the gallery" if unknown else "",
                            f"id {_listed(sorted(gone))} removed already" if gone else "",
                        )
                        if part
                    )
                )
            seq = int(self._state("seq")) + 1
            self._conn.executemany("INSERT INTO removed VALUES (?, ?)", ((i, seq) for i in wanted))
            self._set(seq=seq)

    @contextmanager
    def locked(self, after_seq: int) -> Iterator[Tail]:
        """Hold the write lock while the folder is rebuilt; yields the writes after `after_seq`.
        Nothing is written here: the rebuilt folder has a log of its own."""
        self._begin_write()
        try:
            yield self._read(after_seq)
        finally:
            self._conn.execute("ROLLBACK")

    @contextmanager
    def _write(self) -> Iterator[None]:
        self._begin_write()
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _begin_write(self) -> None:
        """Take the write lock; FolderReplaced if the folder was rebuilt while we waited."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise RuntimeError(
                f"{self.path}: another process has held the gallery's write lock for over "
                f"{TIMEOUT_S:.0f} s ({err})"
            ) from err
        meta = self.directory / "meta.json"
        if not meta.is_file() or file_digest(meta) != self.build:
            self._conn.execute("ROLLBACK")
            raise FolderReplaced(str(self.directory))

    def _state(self, key: str) -> Any:
        return self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()[0]

    def _set(self, **values: Any) -> None:
        self._conn.executemany(
            "UPDATE state SET value = ? WHERE key = ?", ((v, k) for k, v in values.items())
        )


def _listed(ids: Sequence[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def check_no_pending_writes(directory: str | Path) -> None:
    """Refuse to replace an index folder whose log holds writes: a rebuild from another source
    would drop acknowledged writes without a word."""
    with replacing(directory, hold=False):
        pass


@contextmanager
def replacing(directory: str | Path, hold: bool = True) -> Iterator[None]:
    """Around the replacement of an index folder by a new build: refuse if its log holds writes;
    with `hold`, keep writers waiting until the new folder is in place (a writer that waited
    then writes into the new folder, not into the replaced one)."""
    path = Path(directory) / FILE
    if not path.is_file():
        yield
        return
    conn = sqlite3.connect(path, timeout=TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE" if hold else "BEGIN")
        try:
            (a,) = conn.execute("SELECT count(*) FROM added").fetchone()
            (r,) = conn.execute("SELECT count(*) FROM removed").fetchone()
            if a + r:
                raise ValueError(
                    f"{directory} holds {a} items added and {r} removed since it was built "
                    f"(vmfml index add/remove); `vmfml index compact --index {directory}` folds "
                    "them into a new build; to replace the gallery with another, remove the "
                    "folder first"
                )
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
