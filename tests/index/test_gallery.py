"""The live gallery: adds and removes without a rebuild, stable ids, durability, filters.

The reference for every search is brute force over the items that should be live (and pass the
filter), in float64; a write is checked from a second `Gallery` or a second process, not only
from the one that wrote it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from index_helpers import brute_force, clustered_unit_vectors

from vmfml.cli import main
from vmfml.index import Gallery, SearchIndex, open_gallery, parse_where
from vmfml.index.embeddings import save_embedding_file

D = 16
V1_FOLDER = Path(__file__).parent / "data" / "v1-flat"


def unit(n: int, seed: int) -> np.ndarray:
    return clustered_unit_vectors(n, D, clusters=6, seed=seed)


def build_folder(folder: Path, n: int = 200, kind: str = "flat", **options: object) -> np.ndarray:
    x = unit(n, seed=0)
    items = [
        {"path": f"shop{i % 4}/{i}.png", "label": ["shoe", "bag", "hat"][i % 3]} for i in range(n)
    ]
    SearchIndex.build(x, items, {"gallery_root": "/g"}, kind=kind, **options).save(folder)
    return x


def reference(
    vectors: dict[int, np.ndarray], queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over {id: vector}: (scores, ids), ids being the item ids."""
    ids = np.array(sorted(vectors))
    scores, rows = brute_force(np.stack([vectors[i] for i in ids]), queries, min(k, len(ids)))
    return scores, ids[rows]


def assert_same_ranking(got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]):
    scores, ids = got
    ref_scores, ref_ids = ref
    k = ref_ids.shape[1]
    np.testing.assert_allclose(scores[:, :k], ref_scores, atol=1e-5)
    gaps = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-5  # ids agree off near-ties
    assert gaps.sum() > len(gaps) // 2
    np.testing.assert_array_equal(ids[gaps, :k], ref_ids[gaps])


def test_adds_and_removes_search_like_a_fresh_build(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    x = build_folder(folder)
    live = {i: x[i] for i in range(len(x))}
    writer, reader = Gallery(folder), Gallery(folder)
    new = unit(60, seed=1)
    ids = writer.add(new[:40], [{"path": f"new/{j}.png", "label": "sock"} for j in range(40)])
    assert ids == list(range(200, 240))
    live.update(zip(ids, new[:40], strict=True))
    assert writer.remove([3, 17, 205, 239]) == [3, 17, 205, 239]
    for i in (3, 17, 205, 239):
        del live[i]
    more = writer.add(new[40:])
    assert more == list(range(240, 260))  # 239 was removed, and is not given out again
    live.update(zip(more, new[40:], strict=True))
    queries = np.concatenate([unit(30, seed=2), x[[3, 17]], new[[5, 39]]])
    for gallery in (writer, reader, Gallery(folder)):  # the writer, a reader, a fresh open
        assert len(gallery) == len(live)
        assert_same_ranking(gallery.search(queries, 10), reference(live, queries, 10))
        assert gallery.get(3) is None and gallery.get(239) is None
        assert gallery.get(206) == {"id": 206, "path": "new/6.png", "label": "sock", "meta": {}}
        assert [it["id"] for it in gallery.items] == sorted(live)
    # A fresh build over the same items gives the same ranking (ids mapped).
    rebuilt = SearchIndex.build(np.stack([live[i] for i in sorted(live)]), ids=sorted(live))
    assert_same_ranking(rebuilt.search(queries, 10), reference(live, queries, 10))
    # Compacting keeps the ids and the answers; the log starts empty; ids keep rising.
    writer.compact()
    assert reader.pending_writes == 0 and len(reader) == len(live)
    assert_same_ranking(reader.search(queries, 10), reference(live, queries, 10))
    assert reader.add(unit(1, seed=3)) == [260]


def test_unknown_and_removed_ids_are_refused_whole(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    build_folder(folder, n=50)
    gallery = Gallery(folder)
    gallery.remove([4])
    for bad, message in (([5, 50], "no item with id 50"), ([5, 4], "id 4 removed already")):
        with pytest.raises(ValueError, match=message):
            gallery.remove(bad)
    assert gallery.get(5) is not None and len(gallery) == 49  # nothing of the batch removed
    with pytest.raises(ValueError, match="row 1 has norm 2"):
        gallery.add(np.stack([unit(1, 0)[0], 2 * unit(1, 1)[0]]))
    with pytest.raises(ValueError, match="unknown item fields \\['id'\\]"):
        gallery.add(unit(1, 0), [{"id": 3, "path": "x"}])
    with pytest.raises(ValueError, match="an item's meta must map names to strings"):
        gallery.add(unit(1, 0), [{"meta": {"camera": [1, 2]}}])
    assert len(gallery) == 49 and gallery.pending_writes == 1


def test_a_format_1_folder_loads_and_takes_writes(tmp_path: Path) -> None:
    """Written by vmfml before format 2 (tests/index/data/v1-flat, kept as it was)."""
    folder = tmp_path / "v1"
    shutil.copytree(V1_FOLDER, folder)
    x = np.load(V1_FOLDER.parent / "v1-flat-vectors.npy")
    assert json.loads((folder / "meta.json").read_text())["version"] == 1
    gallery = open_gallery(folder)
    assert len(gallery) == 24 and gallery.get(5) == {
        "id": 5, "path": "shop1/5.png", "label": "hat", "meta": {}
    }  # fmt: skip
    assert gallery.search(x[:4], 1)[1][:, 0].tolist() == [0, 1, 2, 3]
    assert gallery.add(unit(2, 5)[:, :8] / np.linalg.norm(unit(2, 5)[:, :8], axis=1)[:, None]) == [
        24,
        25,
    ]
    gallery.remove([0])
    assert Gallery(folder).search(x[:2], 1)[1][:, 0].tolist() != [0, 1]
    assert len(Gallery(folder)) == 25


def test_a_running_gallery_sees_the_clis_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "idx"
    build_folder(folder, n=40)
    held = open_gallery(folder)  # as `vmfml serve` holds it
    new = unit(3, seed=9)
    emb = save_embedding_file(
        tmp_path / "new.npz", new, [0, 1, 0], ["boot", "cap"], ["a.png", "b.png", "c.png"], {}
    )
    assert main(["index", "add", "--index", str(folder), str(emb), "--meta", "camera=3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"added": [40, 41, 42]}
    scores, ids = held.search(new, 1)
    assert ids[:, 0].tolist() == [40, 41, 42] and np.allclose(scores, 1, atol=1e-5)
    assert held.get(41) == {"id": 41, "path": "b.png", "label": "cap", "meta": {"camera": 3}}
    assert main(["index", "remove", "--index", str(folder), "41", "7"]) == 0
    assert held.get(41) is None and held.get(7) is None and len(held) == 41
    assert main(["index", "remove", "--index", str(folder), "41"]) == 2
    assert "nothing removed: id 41 removed already" in capsys.readouterr().err
    # A rebuild over a folder holding writes would drop them: refused, named.
    x_emb = save_embedding_file(tmp_path / "x.npz", unit(40, 0), [0] * 40, ["a"], ["p"] * 40, {})
    assert main(["index", "--embeddings", str(x_emb), "--out", str(folder)]) == 2
    assert "holds 3 items added and 2 removed since it was built" in capsys.readouterr().err
    assert main(["index", "compact", "--index", str(folder)]) == 0
    assert held.get(41) is None and held.get(42)["meta"] == {"camera": 3}  # type: ignore[index]
    assert held.pending_writes == 0 and len(held) == 41


# A child process that streams writes and prints each one once it is acknowledged.
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from vmfml.index import Gallery
    folder, tag, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    gallery = Gallery(folder)
    previous = None
    for b in range(batches):
        x = np.random.default_rng([b, ord(tag[0])]).standard_normal((5, 16))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = gallery.add(x, [{"path": f"{tag}{b}/{j}"} for j in range(5)])
        # One string per line: with PYTHONUNBUFFERED, print would write its pieces one by one,
        # and a kill could cut a line after "add".
        print(" ".join(map(str, ["add", b, *ids])), flush=True)
        if previous is not None and b % 3 == 0:
            gallery.remove([previous[0]])
            print(f"remove {previous[0]}", flush=True)
        previous = ids
    """
)


def batch_vectors(tag: str, b: int) -> np.ndarray:
    x = np.random.default_rng([b, ord(tag[0])]).standard_normal((5, 16))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def start_writer(folder: Path, tag: str, batches: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), tag, str(batches)],
        stdout=subprocess.PIPE,
        text=True,
    )


def check_acknowledged(gallery: Gallery, tag: str, lines: list[str]) -> tuple[set[int], int]:
    """Every acknowledged add is there whole (item and vector), every acknowledged removal
    gone; returns (ids acknowledged, batches acknowledged)."""
    expected: dict[int, tuple[int, int]] = {}  # id -> (batch, row)
    removed: set[int] = set()
    in_flight_removal = None  # a removal the writer may have made but not acknowledged
    for line in lines:
        word, *numbers = line.split()
        if word == "add":
            b, ids = int(numbers[0]), [int(i) for i in numbers[1:]]
            in_flight_removal = None
            if b % 3 == 0 and b > 0:  # WRITER removes the previous batch's first id next
                in_flight_removal = min(i for i, (bb, _) in expected.items() if bb == b - 1)
            expected.update({i: (b, j) for j, i in enumerate(ids)})
        else:
            removed.add(int(numbers[0]))
            in_flight_removal = None
    for i in removed:
        assert gallery.get(i) is None
    for i, (b, j) in expected.items():
        if i in removed or i == in_flight_removal:
            continue
        item = gallery.get(i)
        assert item is not None and item["path"] == f"{tag}{b}/{j}"
        scores, found = gallery.search(batch_vectors(tag, b)[j : j + 1], 1)
        assert found[0, 0] == i and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    batches = 1 + max((b for b, _ in expected.values()), default=-1)
    return set(expected), batches


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("after_acks", [1, 7, 16])
def test_a_writer_killed_midway_loses_nothing_acknowledged(tmp_path: Path, after_acks: int) -> None:
    folder = tmp_path / "idx"
    build_folder(folder, n=30)
    child = start_writer(folder, "k", 1000)
    assert child.stdout is not None
    lines = [child.stdout.readline() for _ in range(after_acks)]
    time.sleep(0.003 * after_acks)  # the kill lands at different points of the next write
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # Acknowledged before the kill, still buffered; a line the kill cut short (no newline) was
    # not acknowledged.
    lines += child.stdout.read().splitlines(keepends=True)
    lines = [ln for ln in lines if ln.endswith("\n")]
    gallery = Gallery(folder)
    acked, batches = check_acknowledged(gallery, "k", [ln for ln in lines if ln.strip()])
    # The write in flight is there whole or not at all.
    paths = {it["path"] for it in gallery.items}
    in_flight = {f"k{batches}/{j}" for j in range(5)}
    assert in_flight <= paths or not in_flight & paths
    assert len(gallery) == 30 + len({p for p in paths if p.startswith("k")})
    conn = sqlite3.connect(folder / "updates.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_two_writing_processes_never_corrupt_the_gallery(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    build_folder(folder, n=30)
    writers = {tag: start_writer(folder, tag, 25) for tag in ("a", "b")}
    outputs = {tag: w.communicate(timeout=600)[0].splitlines() for tag, w in writers.items()}
    assert all(w.returncode == 0 for w in writers.values())
    gallery = Gallery(folder)
    acked_a, _ = check_acknowledged(gallery, "a", outputs["a"])
    acked_b, _ = check_acknowledged(gallery, "b", outputs["b"])
    assert len(acked_a) == len(acked_b) == 125 and not acked_a & acked_b
    assert acked_a | acked_b == set(range(30, 280))  # no id skipped, none given twice
    removals = sum(ln.startswith("remove") for out in outputs.values() for ln in out)
    assert len(gallery) == 30 + 250 - removals


def test_filters_are_exact_on_flat(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    x = build_folder(folder)
    gallery = Gallery(folder)
    new = unit(20, seed=4)
    ids = gallery.add(
        new, [{"path": f"shop7/{j}", "label": "shoe", "meta": {"camera": j % 3}} for j in range(20)]
    )
    gallery.remove([0, ids[0]])
    vectors = {i: x[i] for i in range(1, 200)} | dict(zip(ids[1:], new[1:], strict=True))
    items = {it["id"]: it for it in gallery.items}
    queries = unit(12, seed=5)
    for where, k in (
        ("label=shoe", 10),
        (["label=shoe", "path^=shop7/"], 10),
        (["label=shoe", "meta.camera=2"], 10),  # 6 matches: min(k, matches) hits
        ("path^=shop3/", 5),
        ('meta.camera="2"', 3),  # a string never equals the number 2
    ):
        clauses = parse_where(where)
        matching = {
            i: v
            for i, v in vectors.items()
            if all(
                c.matches(items[i]["path"], items[i]["label"], items[i]["meta"]) for c in clauses
            )
        }
        scores, found = gallery.search(queries, k, where=where)
        hits = min(k, len(matching))
        assert (found[:, :hits] >= 0).all() and (found[:, hits:] == -1).all()
        if matching:
            assert_same_ranking((scores, found), reference(matching, queries, k))
        else:
            assert where == 'meta.camera="2"'


@pytest.mark.parametrize(
    "kind,options",
    [("hnsw", {"ef_search": 64}), ("ivf", {"nlist": 8, "nprobe": 4}), ("ivfpq", {"nlist": 4})],
)
def test_filters_on_approximate_kinds(
    tmp_path: Path, kind: str, options: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmfml.index import search_index

    folder = tmp_path / "idx"
    x = build_folder(folder, n=600, kind=kind, **options)
    gallery = Gallery(folder)
    gallery.remove(list(range(0, 600, 5)))
    where = ["label=bag", "path^=shop1/"]
    queries = unit(20, seed=6)
    matching = {i: x[i] for i in range(600) if i % 3 == 1 and i % 4 == 1 and i % 5}
    # A filter that leaves few rows: brute force over their stored vectors, exact.
    assert_same_ranking(gallery.search(queries, 10, where), reference(matching, queries, 10))
    # Through the faiss ID selector (forced here): every hit matches.
    monkeypatch.setattr(search_index, "EXACT_FILTER_ROWS", 0)
    scores, found = gallery.search(queries, 10, where)
    hit_ids = found[found >= 0]
    assert len(hit_ids) > 100  # most queries find their 10
    assert set(hit_ids.tolist()) <= set(matching)


@pytest.mark.parametrize(
    "where,message",
    [
        ("label", "expected FIELD=VALUE or FIELD\\^=VALUE"),
        ("colour=red", "FIELD one of label, path, meta.NAME"),
        ("label=", "the value is empty"),
        ("meta.=3", "expected FIELD=VALUE"),
        ("meta.camera^=3", "\\^= \\(starts with\\) takes a string value"),
        ("meta.tags=[1]", "a meta value must be a string, number or true/false"),
    ],
)
def test_bad_filters_are_refused_by_name(where: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_where(where)


def test_cli_search_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "idx"
    x = build_folder(folder, n=60)
    queries = save_embedding_file(tmp_path / "q.npz", x[:4], [0] * 4, ["shoe"], ["q"] * 4, {})
    args = ["search", "--index", str(folder), str(queries), "-k", "3", "--format", "json"]
    assert main([*args, "--where", "label=bag", "--where", "path^=shop1/"]) == 0
    hits = [h for q in json.loads(capsys.readouterr().out)["queries"] for h in q["hits"]]
    assert len(hits) == 12 and all(
        h["label"] == "bag" and h["path"].startswith("shop1/") for h in hits
    )
    assert main([*args, "--where", "label~bag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vmfml search: error: bad filter 'label~bag'") and err.count("\n") == 1


def test_threads_share_one_gallery(tmp_path: Path) -> None:
    """As a web server's request threads would: writes and searches at once, none lost."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "idx"
    build_folder(folder, n=50)
    gallery = Gallery(folder)

    def work(t: int) -> list[int]:
        ids = []
        for b in range(10):
            x = unit(3, seed=100 * t + b)
            ids += gallery.add(x, [{"path": f"t{t}/{b}/{j}"} for j in range(3)])
            assert gallery.search(x, 1)[1][:, 0].tolist() == ids[-3:]
        return ids

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    assert sorted(i for ids in results for i in ids) == list(range(50, 170))
    assert len(Gallery(folder)) == 170


def test_a_write_that_waited_through_a_rebuild_lands_in_the_new_folder(tmp_path: Path) -> None:
    """The race: a writer checked the folder, then waited for the write lock while another
    process compacted it. Under the lock it finds meta.json changed and writes into the new
    folder's log, never into the replaced one, which nobody reads."""
    from vmfml.index.write_log import FolderReplaced

    folder = tmp_path / "idx"
    build_folder(folder, n=40)
    writer = Gallery(folder)
    writer.add(unit(1, seed=1))  # its log is open
    old_log = writer._log
    assert old_log is not None
    Gallery(folder).compact()  # another process rebuilds the folder meanwhile
    with pytest.raises(FolderReplaced):
        old_log.add(unit(1, seed=2), [{"path": "lost?"}])  # the replaced log refuses the write
    writer._refresh = lambda: None  # type: ignore[method-assign]  # as if checked before the swap
    (new_id,) = writer.add(unit(1, seed=2), [{"path": "kept"}])
    assert new_id == 41
    assert Gallery(folder).get(41) == {"id": 41, "path": "kept", "label": None, "meta": {}}


def test_cli_builds_and_searches_an_ivfpq_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = unit(300, seed=8)
    emb = save_embedding_file(tmp_path / "g.npz", x, [0] * 300, ["a"], ["p"] * 300, {})
    folder = tmp_path / "pq"
    build = ["index", "--embeddings", str(emb), "--out", str(folder), "--kind", "ivfpq"]
    assert main([*build, "--nlist", "4", "--pq-bytes", "4", "--refine-factor", "2"]) == 0
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["options"]["pq_bytes"] == 4 and meta["options"]["refine_factor"] == 2
    assert (folder / "vectors.f32").stat().st_size == x.nbytes
    capsys.readouterr()
    search = ["search", "--index", str(folder), str(emb), "-k", "1", "--format", "json"]
    assert main([*search, "--refine-factor", "16", "--nprobe", "4"]) == 0
    hits = [q["hits"][0] for q in json.loads(capsys.readouterr().out)["queries"]]
    assert [h["id"] for h in hits] == list(range(300))  # re-ranked exactly: each finds itself
    assert main([*build, "--m", "8"]) == 2
    assert "--m not valid with --kind ivfpq" in capsys.readouterr().err


def test_the_log_is_read_by_seq_through_its_index_also_in_a_log_written_before_it(
    tmp_path: Path,
) -> None:
    """After each write the gallery reads the log's new rows (seq > the last applied): through
    the seq indexes, not a scan of every row logged; a log made before the indexes gets them."""
    from vmfml.index.write_log import SEQ_INDEXES, TAIL

    folder = tmp_path / "idx"
    build_folder(folder, n=30)
    gallery = Gallery(folder)
    ids = gallery.add(unit(5, seed=3), [{"path": f"a/{j}"} for j in range(5)])
    gallery.remove([ids[0], 2])
    gallery.close()
    conn = sqlite3.connect(folder / "updates.sqlite")
    for name in SEQ_INDEXES:
        conn.execute(f"DROP INDEX {name}")
    conn.commit()
    conn.close()

    gallery = Gallery(folder)
    assert len(gallery) == 33 and gallery.get(ids[0]) is None and gallery.get(2) is None
    assert [it["path"] for it in gallery.items if it["id"] >= 30] == [f"a/{j}" for j in range(1, 5)]
    assert gallery.add(unit(2, seed=4)) == [35, 36]
    gallery.remove([ids[1]])
    assert len(Gallery(folder)) == 34
    conn = sqlite3.connect(folder / "updates.sqlite")
    for table, query in TAIL.items():
        plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", (3,)))
        assert f"INDEX {table}_seq (seq>?)" in plan, plan
    conn.close()
    gallery.close()


def test_the_filter_masks_kept_are_bounded(tmp_path: Path) -> None:
    """Filter clauses come from requests: a stream of distinct ones must not keep a mask each."""
    from vmfml.index.gallery import MAX_CACHED_MASKS

    folder = tmp_path / "idx"
    x = build_folder(folder)
    gallery = Gallery(folder)
    queries = unit(3, seed=5)
    for j in range(3 * MAX_CACHED_MASKS):
        gallery.search(queries, 5, where=f"path^=shop{j}/")
        assert len(gallery._masks) <= MAX_CACHED_MASKS
    # An evicted clause is recomputed, and still exact.
    matching = {i: x[i] for i in range(200) if i % 4 == 0}  # path^=shop0/
    assert_same_ranking(
        gallery.search(queries, 10, "path^=shop0/"), reference(matching, queries, 10)
    )


def test_searches_run_side_by_side_and_a_write_waits_for_them(tmp_path: Path) -> None:
    """Two searches are inside faiss at once (a barrier they and the test must all reach); a
    write started meanwhile waits until both are done, and the next search sees it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "idx"
    x = build_folder(folder, n=50)
    gallery = Gallery(folder)
    inside = threading.Barrier(3, timeout=20)
    go = threading.Event()
    search = gallery._index.search
    events: list[str] = []

    def both_inside(*args: object, **kwargs: object) -> object:
        inside.wait()  # BrokenBarrierError if the other search could not get in
        go.wait(20)
        events.append("searched")
        return search(*args, **kwargs)  # type: ignore[arg-type]

    def write() -> list[int]:
        ids = gallery.add(unit(1, seed=7), [{"path": "late"}])
        events.append("wrote")
        return ids

    gallery._index.search = both_inside  # type: ignore[method-assign]
    with ThreadPoolExecutor(3) as pool:
        found = [pool.submit(gallery.search, x[i : i + 1], 1) for i in range(2)]
        inside.wait()  # both searches hold the read lock now
        wrote = pool.submit(write)
        time.sleep(0.3)
        assert not wrote.done()  # the write waits for the searches
        go.set()
        assert [f.result()[1][0, 0] for f in found] == [0, 1]
        (new_id,) = wrote.result()
    assert events == ["searched", "searched", "wrote"]
    gallery._index.search = search  # type: ignore[method-assign]
    assert gallery.search(unit(1, seed=7), 1)[1][0, 0] == new_id
