"""`MilvusGallery`: a gallery held by Milvus, the engine for galleries past one machine.

pymilvus's `MilvusClient(uri)` picks the deployment from the uri: a local path is Milvus Lite
(embedded, no server; `pip install milvus-lite`), `http://HOST:19530` a Milvus server or cluster.
Every call is the same on both. The index folder keeps only meta.json (the model, the kind,
`backend: milvus`, the uri and collection) and, by default, the Lite database (`milvus.db`);
`open_gallery` reads it, so the search command and server never know which engine they hold.

The collection: `id` (INT64 primary key, given by vmfml: never reused), `vector` (FLOAT_VECTOR,
inner product), `path`, `label` (VARCHAR, nullable), `meta` (JSON, nullable). A second
collection `<name>_state` holds one row, the next id. Searches run at Strong consistency: a
write is visible to the next search. --kind maps to Milvus's FLAT, IVF_FLAT, HNSW and IVF_PQ.

Not done here (see docs/scale-out-search.md): ids are given out by one writer at a time per
process; two processes writing to one Milvus server at once could be given the same ids.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vmfml.files import atomic_folder
from vmfml.index.search_index import FORMAT, VERSION, _as_float32, _check_unit, check_destination
from vmfml.index.store import Hit, Item, Where, checked_additions
from vmfml.index.where import milvus_expression, parse_where

LITE_FILE = "milvus.db"
INDEX_TYPES = {"flat": "FLAT", "ivf": "IVF_FLAT", "hnsw": "HNSW", "ivfpq": "IVF_PQ"}
FIELDS = ["path", "label", "meta"]
INSERT_ROWS = 10_000
MAX_TEXT = 4096


# Milvus Lite runs faiss in this process; faiss.contrib.torch_utils (imported by
# pytorch-metric-learning's AccuracyCalculator and inference utilities) replaces faiss's search
# by one that Milvus Lite cannot call.
FAISS_PATCHED = (
    "Milvus Lite cannot search in this process: faiss.contrib.torch_utils (imported by "
    "pytorch-metric-learning's AccuracyCalculator) has replaced faiss's search. Search the "
    "Milvus Lite gallery from a process that does not import it, or use a Milvus server "
    "(--milvus-uri http://...)"
)


def _client(uri: str) -> Any:
    """A MilvusClient; a Lite database held by another process is said so in one line."""
    try:
        from pymilvus import MilvusClient
    except ImportError as err:
        raise ValueError(
            "the Milvus backend needs pymilvus and milvus-lite: pip install 'vmfml[milvus]'"
        ) from err
    quiet = [logging.getLogger(name) for name in ("milvus_lite", "pymilvus")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:  # their tracebacks of a refused connection: we say it in one line
            logger.setLevel(logging.CRITICAL)
        return MilvusClient(uri)
    except Exception as err:
        if "Open local milvus failed" in str(err) or "lock" in str(err).lower():
            raise ValueError(
                f"the Milvus Lite database {uri} is open in another process (Milvus Lite lets one "
                "process at a time use a database); stop that process, or serve the gallery from "
                "a Milvus server (--milvus-uri http://HOST:19530)"
            ) from None
        raise ValueError(f"cannot connect to Milvus at {uri}: {err}") from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _release_lite(path: str) -> None:
    """Stop this process's Milvus Lite server of `path`, releasing the database's lock (closing
    the client does not): the folder written here is renamed into place and reopened."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(path)


def _index_params(client: Any, kind: str, dim: int, options: dict[str, Any]) -> Any:
    params = client.prepare_index_params()
    extra: dict[str, Any] = {}
    if kind in ("ivf", "ivfpq"):
        extra["nlist"] = int(options["nlist"])
    if kind == "ivfpq":
        extra["m"] = int(options["pq_bytes"])
    if kind == "hnsw":
        extra = {"M": int(options["m"]), "efConstruction": int(options["ef_construction"])}
    # pymilvus 3 sends each setting as its own key; Milvus Lite 3.2 reads only a `params` key
    # holding them as JSON (and builds with its own defaults otherwise: IVF 128 cells, HNSW M 16).
    # A Milvus server reads both forms, the same settings.
    params.add_index(
        "vector",
        index_type=INDEX_TYPES[kind],
        metric_type="IP",
        params={**extra, "params": extra} if extra else {},
    )
    return params


def build_milvus_folder(
    directory: str | Path,
    embeddings: np.ndarray,
    items: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    kind: str = "flat",
    *,
    uri: str | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    m: int = 32,
    ef_construction: int = 40,
    ef_search: int = 64,
    pq_bytes: int | None = None,
) -> Path:
    """Write an index folder whose gallery lives in Milvus (a new collection at `uri`, default a
    Lite database inside the folder); the embeddings are inserted with ids 0..N-1."""
    if kind not in INDEX_TYPES:
        raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(INDEX_TYPES)}")
    if kind == "ivfpq" and (uri is None or "://" not in uri):
        raise ValueError(
            "Milvus Lite cannot hold an ivfpq (IVF_PQ) index: it supports flat, ivf and hnsw "
            "(FLAT, IVF_FLAT, HNSW); use one of those, --backend faiss --kind ivfpq, or a Milvus "
            "server (--milvus-uri http://HOST:19530)"
        )
    directory = Path(directory)
    check_destination(directory)
    n, d = int(embeddings.shape[0]), int(embeddings.shape[1])
    nlist = nlist or int(min(max(1, round(4 * np.sqrt(n))), max(1, n // 39)))
    options: dict[str, Any] = {}
    if kind in ("ivf", "ivfpq"):
        options = {"nlist": nlist, "nprobe": min(nprobe or max(1, nlist // 16), nlist)}
    if kind == "ivfpq":
        options["pq_bytes"] = pq_bytes or max(1, d // 8)
        if d % options["pq_bytes"]:
            raise ValueError(f"pq_bytes={options['pq_bytes']} must divide the dimension {d}")
    if kind == "hnsw":
        options = {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
    collection = f"vmfml_{uuid.uuid4().hex[:12]}"

    def write(folder: Path) -> None:
        target = uri or str(folder / LITE_FILE)
        client = _client(target)
        try:
            _create(client, collection, d, kind, options)
            for start in range(0, n, INSERT_ROWS):
                rows = _as_float32(embeddings[start : start + INSERT_ROWS], "embeddings")
                _check_unit(rows, first_row=start)
                client.insert(
                    collection,
                    _rows(range(start, start + len(rows)), rows, items[start : start + len(rows)]),
                )
            client.upsert(f"{collection}_state", [{"id": 0, "next_id": n, "vector": [0.0, 0.0]}])
            client.flush(collection)
        finally:
            client.close()
            if "://" not in target:
                _release_lite(target)
        record = {
            **meta,
            "format": FORMAT,
            "version": VERSION,
            "backend": "milvus",
            "milvus": {"uri": uri or LITE_FILE, "collection": collection},
            "kind": kind,
            "dim": d,
            "count": n,
            "metric": "inner_product",
            "options": options,
        }
        (folder / "meta.json").write_text(json.dumps(record, indent=2, default=str))

    atomic_folder(directory, write)
    return directory


def _create(client: Any, collection: str, dim: int, kind: str, options: dict[str, Any]) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("path", DataType.VARCHAR, max_length=MAX_TEXT, nullable=True)
    schema.add_field("label", DataType.VARCHAR, max_length=MAX_TEXT, nullable=True)
    schema.add_field("meta", DataType.JSON, nullable=True)
    client.create_collection(
        collection,
        schema=schema,
        index_params=_index_params(client, kind, dim, options),
        consistency_level="Strong",
    )
    # The id counter: Milvus needs a vector field in every collection; a 2-d dummy does.
    state = client.create_schema(auto_id=False, enable_dynamic_field=False)
    state.add_field("id", DataType.INT64, is_primary=True)
    state.add_field("next_id", DataType.INT64)
    state.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    state_index = client.prepare_index_params()
    state_index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection(
        f"{collection}_state", schema=state, index_params=state_index, consistency_level="Strong"
    )


def _rows(ids: Any, vectors: np.ndarray, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": int(i),
            "vector": v.tolist(),
            "path": item.get("path"),
            "label": item.get("label"),
            "meta": item.get("meta") or None,
        }
        for i, v, item in zip(ids, vectors, items, strict=True)
    ]


class MilvusGallery:
    """A `GalleryStore` over a Milvus collection (see the module docstring)."""

    def __init__(self, client: Any, collection: str, meta: dict[str, Any], source: str) -> None:
        self._client = client
        self._collection = collection
        self._record = meta
        self._source = source
        self._lock = threading.RLock()
        self.options: dict[str, Any] = dict(meta.get("options", {}))
        self.meta = {
            k: v
            for k, v in meta.items()
            if k
            not in (
                "format",
                "version",
                "backend",
                "milvus",
                "kind",
                "dim",
                "count",
                "metric",
                "options",
            )  # fmt: skip
        }

    @classmethod
    def open(cls, directory: str | Path, uri: str | None = None) -> MilvusGallery:
        from vmfml.index.gallery import read_meta

        directory = Path(directory)
        record = read_meta(directory)
        recorded = record["milvus"]["uri"]
        if uri is None:
            uri = recorded if "://" in recorded else str(directory / recorded)
        client = _client(uri)
        collection = record["milvus"]["collection"]
        if not client.has_collection(collection):
            raise ValueError(f"{directory}: Milvus at {uri} holds no collection {collection}")
        for name in (collection, f"{collection}_state"):
            client.load_collection(name)  # a reopened database starts with them released
        return cls(client, collection, record, str(directory))

    # ---- writing -----------------------------------------------------------------------------

    def add(
        self, vectors: np.ndarray | torch.Tensor, items: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        x, checked = checked_additions(vectors, items, self.dim)
        with self._lock:
            first = self._next_id()
            ids = list(range(first, first + len(x)))
            # The counter first: a crash between the two leaves unused ids, never reused ones.
            self._client.upsert(
                f"{self._collection}_state",
                [{"id": 0, "next_id": first + len(x), "vector": [0.0, 0.0]}],
            )
            self._client.insert(self._collection, _rows(ids, x, checked))
            self._client.flush(self._collection)
            return ids

    def _next_id(self) -> int:
        rows = self._client.get(f"{self._collection}_state", ids=[0], output_fields=["next_id"])
        return int(rows[0]["next_id"])

    def remove(self, ids: Sequence[int]) -> list[int]:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        with self._lock:
            found = {int(r["id"]) for r in self._client.get(self._collection, ids=wanted)}
            missing = [i for i in wanted if i not in found]
            if missing:
                shown = ", ".join(map(str, missing[:10]))
                raise ValueError(
                    f"nothing removed: no item with id {shown} in the gallery (never given out, "
                    "or removed already)"
                )
            self._client.delete(self._collection, ids=wanted)
            self._client.flush(self._collection)
            return wanted

    # ---- reading -----------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> tuple[np.ndarray, np.ndarray]:
        hits = self.hits(queries, k, where)
        scores = np.full((len(hits), k), -np.inf, dtype=np.float32)
        ids = np.full((len(hits), k), -1, dtype=np.int64)
        for q, row in enumerate(hits):
            for j, hit in enumerate(row):
                scores[q, j], ids[q, j] = hit["score"], hit["id"]
        return scores, ids

    def hits(
        self, queries: np.ndarray | torch.Tensor, k: int, where: Where = None
    ) -> list[list[Hit]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = _as_float32(queries, "queries")
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(
                f"queries have dimension {q.shape[-1]} but the index holds "
                f"{self.dim}-dimensional embeddings"
            )
        expression = milvus_expression(parse_where(where))
        params: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if "nprobe" in self.options:
            params["params"]["nprobe"] = int(self.options["nprobe"])
        if "ef_search" in self.options:
            params["params"]["ef"] = max(int(self.options["ef_search"]), int(k))
        with self._lock:
            try:
                found = self._client.search(
                    self._collection,
                    data=q.tolist(),
                    limit=int(k),
                    filter=expression,
                    output_fields=FIELDS,
                    search_params=params,
                )
            except Exception as err:
                if "torch_replacement_search" in str(err):
                    raise RuntimeError(FAISS_PATCHED) from err
                raise
        return [
            [
                Hit(
                    id=int(h["id"]),
                    path=h["entity"].get("path"),
                    label=h["entity"].get("label"),
                    meta=dict(h["entity"].get("meta") or {}),
                    score=float(h["distance"]),
                )
                for h in row
            ]
            for row in found
        ]

    def get(self, item_id: int) -> Item | None:
        with self._lock:
            rows = self._client.get(self._collection, ids=[int(item_id)], output_fields=FIELDS)
        return _item(rows[0]) if rows else None

    def reconstruct(self, item_id: int) -> np.ndarray:
        with self._lock:
            rows = self._client.get(self._collection, ids=[int(item_id)], output_fields=["vector"])
        if not rows:
            raise IndexError(f"no item with id {item_id} in the gallery {self._source}")
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def set_search_params(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        for name, value, kinds in (
            ("nprobe", nprobe, ("ivf", "ivfpq")),
            ("ef_search", ef_search, ("hnsw",)),
        ):
            if value is None:
                continue
            if self.kind not in kinds:
                raise ValueError(
                    f"{name} applies to {' and '.join(kinds)} indexes; this one is {self.kind}"
                )
            self.options[name] = int(value)
        if refine_factor is not None:
            raise ValueError("refine_factor applies to faiss ivfpq indexes, not Milvus ones")

    def close(self) -> None:
        with self._lock:
            self._client.close()

    # ---- properties --------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            rows = self._client.query(self._collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    @property
    def items(self) -> list[Item]:
        """Every item in id order (read whole: for listing, not for galleries of millions)."""
        with self._lock:
            out: list[Item] = []
            iterator = self._client.query_iterator(
                self._collection, batch_size=1000, filter="id >= 0", output_fields=FIELDS
            )
            while batch := iterator.next():
                out.extend(_item(r) for r in batch)
            iterator.close()
        return sorted(out, key=lambda it: it["id"])

    @property
    def dim(self) -> int:
        return int(self._record["dim"])

    @property
    def kind(self) -> str:
        return str(self._record["kind"])

    def __repr__(self) -> str:
        return f"MilvusGallery({self._source}, collection={self._collection}, kind={self.kind})"


def _item(row: dict[str, Any]) -> Item:
    return Item(
        id=int(row["id"]),
        path=row.get("path"),
        label=row.get("label"),
        meta=dict(row.get("meta") or {}),
    )
