"""`vmfml serve --writable` killed (SIGKILL) during a stream of HTTP adds and removes, then
restarted on the same folder (issue 22): every write that got its 2xx is there (an add with its
fields and vector, a removal gone), a write that did not is whole or absent, no id is given
twice, and an exact search equals brute force over the items that survived."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from vmfml.index.opener import open_gallery

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]

CLIENTS = 2  # concurrent writers, so that more than one write can be in flight at the kill
BUILT = 60  # the conftest index's items, ids 0..59
DIM = 32  # their dimension
TOL = 1e-4  # the index's float32 embeddings against the float64 reference


@dataclasses.dataclass
class Write:
    """One request of a client's stream, and what came back (status None: no answer)."""

    client: int
    target: int | None = None  # the id a removal names
    vector: np.ndarray | None = None  # float64, as sent: an add
    item: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: int | None = None
    id: int | None = None  # the id an add was given

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def stream(base: str, client: int, writes: list[Write]) -> None:
    """Adds two items, then removes one (alternately one of the built items this client owns
    and one of its own acknowledged adds), until the server stops answering."""
    rng = np.random.default_rng(client)
    built = list(range(client, BUILT, CLIENTS))
    own: list[int] = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for j in range(5000):
            if j % 3 == 2:
                write = Write(client, target=built.pop(0) if j % 2 and built else own.pop(0))
            else:
                write = Write(
                    client,
                    vector=rng.standard_normal(DIM),
                    item={
                        "label": f"L{j % 4}",
                        "path": f"c{client}/{j}.png",
                        "meta": {"j": j, "client": client, "even": j % 2 == 0, "x": j / 8},
                    },
                )
            writes.append(write)
            try:
                r = send(c, write)
            except httpx.TransportError:  # killed: this write is in flight, or never sent
                return
            write.status = r.status_code
            if write.vector is not None and r.status_code == 201:
                write.id = int(r.json()["id"])
                own.append(write.id)
            if not write.acked:
                return


def send(c: httpx.Client, write: Write) -> httpx.Response:
    if write.vector is None:
        return c.delete(f"/api/items/{write.target}")
    body = {
        "vector": write.vector.tolist(),  # not unit: the server normalizes it
        "label": write.item["label"],
        "path": write.item["path"],
        "metadata": write.item["meta"],
    }
    return c.post("/api/items", json=body)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("after_acks", [1, 12, 40])
def test_a_server_killed_midway_loses_no_acknowledged_write(
    serve_index_process,
    gallery,
    tmp_path: Path,
    after_acks: int,  # noqa: ANN001
) -> None:
    assert gallery.reference.shape[1] == DIM
    copy = dataclasses.replace(gallery, index_dir=tmp_path / "index")
    shutil.copytree(gallery.index_dir, copy.index_dir)

    writes: list[Write] = []
    with serve_index_process(copy, "--writable") as (process, base):
        clients = [threading.Thread(target=stream, args=(base, i, writes)) for i in range(CLIENTS)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 120
        while sum(w.acked for w in writes) < after_acks and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.002 * after_acks)  # the kill lands at different points of the next writes
        process.send_signal(signal.SIGKILL)
        process.wait()
        for t in clients:
            t.join(timeout=120)
    assert all(w.status in (None, 200, 201) for w in writes), [w.status for w in writes]
    acked = [w for w in writes if w.acked]
    assert len(acked) >= after_acks
    # At most one write of each client was sent without an answer.
    in_flight = [w for w in writes if not w.acked]
    assert len(in_flight) <= CLIENTS

    added = {w.id: w for w in acked if w.vector is not None}
    removed = {w.target for w in acked if w.target is not None}
    maybe_removed = {w.target for w in in_flight if w.target is not None}
    maybe_added = {w.item["path"]: w for w in in_flight if w.vector is not None}
    vectors = {i: unit(gallery.reference[i]) for i in range(BUILT)}
    vectors |= {i: unit(w.vector) for i, w in added.items()}  # type: ignore[arg-type]

    with serve_index_process(copy, "--writable") as (_, base):
        store = open_gallery(copy.index_dir)  # what is on disk, read by another process
        present = {int(it["id"]) for it in store.items}
        must = (set(range(BUILT)) | set(added)) - removed - maybe_removed
        assert must <= present
        assert not present & removed
        # Anything else present is an in-flight write, whole: a built or added item whose
        # removal got no answer, or an add that got no answer, with all its fields and vector.
        for i in sorted(present - must):
            if i in maybe_removed:
                continue
            assert i >= BUILT and i not in added, i
            item = store.get(i)
            assert item is not None and item["path"] in maybe_added, item
            write = maybe_added.pop(item["path"])
            assert {k: item[k] for k in ("label", "path", "meta")} == write.item  # type: ignore[literal-required]
            vectors[i] = unit(write.vector)  # type: ignore[arg-type]
        for i in present:
            np.testing.assert_allclose(store.reconstruct(i), vectors[i], atol=TOL)
        for i, w in added.items():
            if i in present:
                item = store.get(i)
                assert item is not None
                assert {k: item[k] for k in ("label", "path", "meta")} == w.item  # type: ignore[literal-required]
        store.close()

        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/api/health").json()["count"] == len(present)
            for i in removed:
                assert c.get(f"/api/items/{i}").status_code == 404
            for i in sorted(set(added) & present)[:10]:
                assert c.get(f"/api/items/{i}").json()["path"] == added[i].item["path"]
            # The next ids come after every id ever given, acknowledged or not.
            extra = np.random.default_rng(9).standard_normal((2, DIM))
            fresh = [c.post("/api/items", json={"vector": v.tolist()}) for v in extra]
            assert [r.status_code for r in fresh] == [201, 201]
            new_ids = [int(r.json()["id"]) for r in fresh]
            assert new_ids[0] > max(present | set(added) | removed) and new_ids[1] > new_ids[0]
            vectors |= {i: unit(v) for i, v in zip(new_ids, extra, strict=True)}
            survivors = sorted(present | set(new_ids))

            # Exact search over HTTP equals brute force over the surviving items.
            matrix = np.stack([vectors[i] for i in survivors])
            queries = np.random.default_rng(7).standard_normal((6, DIM))
            for q in queries:
                body = {"vector": q.tolist(), "k": 10}
                hits = c.post("/api/search/vector", json=body).json()["results"]
                true = matrix @ unit(q)
                best = np.sort(true)[::-1][:10]
                assert len(hits) == 10
                np.testing.assert_allclose([h["score"] for h in hits], best, atol=TOL)
                for h in hits:  # each hit is a survivor, scored by its own vector
                    assert abs(true[survivors.index(h["id"])] - h["score"]) < TOL

    conn = sqlite3.connect(copy.index_dir / "updates.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
