"""One suite over both gallery engines: the faiss folder and Milvus (Lite, embedded).

Search, live updates and filters must answer the same on both, against brute force.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_helpers import brute_force, clustered_unit_vectors

from vmfml.cli import main
from vmfml.index import GalleryStore, SearchIndex, open_gallery
from vmfml.index.embeddings import save_embedding_file

D = 16


def milvus_available() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = [
    "faiss",
    pytest.param(
        "milvus",
        marks=pytest.mark.skipif(
            not milvus_available(),
            reason="pymilvus and milvus-lite are not installed (pip install 'vmfml[milvus]')",
        ),
    ),
]


def build(
    folder: Path, backend: str, n: int = 120, kind: str = "flat", **options: Any
) -> np.ndarray:
    x = clustered_unit_vectors(n, D, clusters=5, seed=0)
    items = [
        {"path": f"shop{i % 4}/{i}.png", "label": ["shoe", "bag", "hat"][i % 3],
         "meta": {"camera": i % 5} if i % 2 else {}}
        for i in range(n)
    ]  # fmt: skip
    if backend == "faiss":
        SearchIndex.build(x, items, {"gallery_root": "/g"}, kind=kind, **options).save(folder)
    else:
        from vmfml.index.milvus_store import build_milvus_folder

        build_milvus_folder(folder, x, items, {"gallery_root": "/g"}, kind, **options)
    return x


def exact(vectors: dict[int, np.ndarray], queries: np.ndarray, k: int):
    ids = np.array(sorted(vectors))
    scores, rows = brute_force(np.stack([vectors[i] for i in ids]), queries, min(k, len(ids)))
    return scores, ids[rows]


def check(store: GalleryStore, vectors: dict[int, np.ndarray], queries: np.ndarray, k: int,
          where: Any = None) -> None:  # fmt: skip
    scores, ids = store.search(queries, k, where)
    ref_scores, ref_ids = exact(vectors, queries, k)
    hits = ref_ids.shape[1]
    assert (ids[:, hits:] == -1).all()
    np.testing.assert_allclose(scores[:, :hits], ref_scores, atol=1e-4)
    gaps = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-4
    np.testing.assert_array_equal(ids[gaps, :hits], ref_ids[gaps])


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_updates_and_filters_answer_like_brute_force(tmp_path: Path, backend: str) -> None:
    folder = tmp_path / "idx"
    x = build(folder, backend)
    store = open_gallery(folder)
    try:
        vectors = {i: x[i] for i in range(len(x))}
        new = clustered_unit_vectors(10, D, clusters=5, seed=1)
        ids = store.add(new, [{"path": f"shop7/{j}", "label": "sock", "meta": {"camera": 9}}
                              for j in range(10)])  # fmt: skip
        assert ids == list(range(120, 130))
        vectors.update(zip(ids, new, strict=True))
        assert store.remove([0, 5, 121]) == [0, 5, 121]
        for i in (0, 5, 121):
            del vectors[i]
        with pytest.raises(ValueError, match="nothing removed: .*id 5"):
            store.remove([6, 5])
        assert store.add(new[:1]) == [130]  # ids are never reused
        vectors[130] = new[0]
        assert len(store) == len(vectors)
        assert store.get(5) is None
        assert store.get(122) == {
            "id": 122,
            "path": "shop7/2",
            "label": "sock",
            "meta": {"camera": 9},
        }
        assert store.get(130) == {"id": 130, "path": None, "label": None, "meta": {}}
        assert [it["id"] for it in store.items] == sorted(vectors)
        np.testing.assert_allclose(store.reconstruct(122), new[2], atol=1e-6)
        queries = clustered_unit_vectors(8, D, clusters=5, seed=2)
        check(store, vectors, queries, 7)
        items = {it["id"]: it for it in store.items}
        for where in ("label=bag", ["path^=shop7/", "meta.camera=9"], "meta.camera=3"):
            clauses = [where] if isinstance(where, str) else where
            keep = {
                i: v for i, v in vectors.items()
                if all(_passes(items[i], c) for c in clauses)
            }  # fmt: skip
            check(store, keep, queries, 7, where)
    finally:
        store.close()


def _passes(item: dict[str, Any], clause: str) -> bool:
    from vmfml.index import parse_where

    (parsed,) = parse_where(clause)
    return parsed.matches(item["path"], item["label"], item["meta"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_approximate_kinds_filter_on_both_backends(tmp_path: Path, backend: str, kind: str) -> None:
    options = {"ivf": {"nlist": 4, "nprobe": 4}, "hnsw": {}, "ivfpq": {"nlist": 4, "nprobe": 4}}
    if backend == "milvus" and kind == "ivfpq":  # Lite refuses IVF_PQ when it loads it
        with pytest.raises(ValueError, match="Milvus Lite cannot hold an ivfpq .IVF_PQ. index"):
            build(tmp_path / "idx", backend, n=400, kind=kind, **options[kind])
        return
    build(tmp_path / "idx", backend, n=400, kind=kind, **options[kind])
    store = open_gallery(tmp_path / "idx")
    try:
        scores, ids = store.search(clustered_unit_vectors(5, D, clusters=5, seed=3), 5, "label=hat")
        found = ids[ids >= 0].tolist()
        assert len(found) >= 10 and all(i % 3 == 2 for i in found)
    finally:
        store.close()


def cli_index(tmp_path: Path, backend: str) -> tuple[np.ndarray, Path]:
    """`vmfml index --backend BACKEND` over 60 vectors of two classes, saved as
    tmp_path/g.npz: (vectors, index folder)."""
    x = clustered_unit_vectors(60, D, clusters=5, seed=0)
    labels = [i % 2 for i in range(60)]
    emb = save_embedding_file(tmp_path / "g.npz", x, labels, ["boot", "cap"],
                              [f"/g/{i}.png" for i in range(60)], {})  # fmt: skip
    folder = tmp_path / "idx"
    assert main(["index", "--embeddings", str(emb), "--out", str(folder),
                 "--backend", backend]) == 0  # fmt: skip
    return x, folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_on_both_backends(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    x, folder = cli_index(tmp_path, backend)
    new = save_embedding_file(tmp_path / "n.npz", x[:2], [1, 1], ["boot", "cap"], ["n0", "n1"], {})
    assert main(["index", "add", "--index", str(folder), str(new), "--meta", "camera=3"]) == 0
    assert main(["index", "remove", "--index", str(folder), "3"]) == 0
    capsys.readouterr()
    emb = tmp_path / "g.npz"
    assert main(["search", "--index", str(folder), str(emb), "-k", "2", "--format", "json",
                 "--where", "meta.camera=3"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert all([h["id"] for h in q["hits"]] in ([60, 61], [61, 60]) for q in answer["queries"])
    assert answer["queries"][0]["hits"][0] == {
        "id": 60, "path": "n0", "label": "cap", "meta": {"camera": 3}, "score": pytest.approx(1.0, abs=1e-4)
    }  # fmt: skip


@pytest.mark.skipif(not milvus_available(), reason="pymilvus and milvus-lite are not installed")
def test_a_second_process_on_a_lite_database_gets_one_clear_line(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    build(folder, "milvus", n=20)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import sys, time
            from vmfml.index import open_gallery
            g = open_gallery({str(folder)!r})
            print("open", flush=True)
            time.sleep(120)
            """
        )],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        second = subprocess.run(
            [sys.executable, "-m", "vmfml.cli", "index", "remove", "--index", str(folder), "1"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("vmfml index: error: the Milvus Lite database")
        assert "is open in another process" in last and "Traceback" not in second.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_process_where_faiss_torch_utils_replaced_search(tmp_path: Path) -> None:
    """pytorch-metric-learning's AccuracyCalculator imports faiss.contrib.torch_utils, which
    replaces faiss's search by one without `params`. The faiss folder must still filter exactly;
    Milvus Lite (faiss inside this process) must say why it cannot, in one line. Run in a child
    process: the patch would otherwise stay for every later test."""
    x = build(tmp_path / "faiss", "faiss")
    milvus = milvus_available()
    if milvus:
        build(tmp_path / "milvus", "milvus", kind="ivf", nlist=4, nprobe=4)
    queries = clustered_unit_vectors(6, D, clusters=5, seed=3)
    np.save(tmp_path / "q.npy", queries)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(
            f"""
            import json, sys
            import numpy as np
            import faiss.contrib.torch_utils  # the import is the patch
            from vmfml.index import open_gallery
            q = np.load({str(tmp_path / "q.npy")!r})
            scores, ids = open_gallery({str(tmp_path / "faiss")!r}).search(q, 5, "label=bag")
            out = {{"ids": ids.tolist(), "scores": scores.tolist()}}
            if {milvus}:
                try:
                    open_gallery({str(tmp_path / "milvus")!r}).search(q, 5, "label=bag")
                    out["milvus"] = "searched"
                except RuntimeError as err:
                    out["milvus"] = str(err)
            print(json.dumps(out))
            """
        )],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout.strip().splitlines()[-1])
    bags = {i: x[i] for i in range(len(x)) if i % 3 == 1}
    ref_scores, ref_ids = exact(bags, queries, 5)
    np.testing.assert_allclose(np.array(out["scores"]), ref_scores, atol=1e-5)
    np.testing.assert_array_equal(np.array(out["ids"]), ref_ids)
    if milvus:
        assert out["milvus"].startswith("Milvus Lite cannot search in this process")


def expanded_by_brute_force(
    vectors: dict[int, np.ndarray], queries: np.ndarray, n: int, alpha: float
) -> np.ndarray:
    """aqe (alpha 0) / alpha-qe in float64 numpy, as metrics/rerank.py defines them: the query
    plus its exact top-n live vectors, each weighted by max(cos, 0) ** alpha, normalized."""
    scores, ids = exact(vectors, queries.astype(np.float64), n)
    out = queries.astype(np.float64).copy()
    for r in range(len(queries)):
        for s, i in zip(scores[r], ids[r], strict=True):
            out[r] += max(s, 0.0) ** alpha * vectors[int(i)]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_expansion_searches_like_brute_force(tmp_path: Path, backend: str) -> None:
    from vmfml.index.rerank import reranked_hits, search_rerank

    folder = tmp_path / "idx"
    x = build(folder, backend, n=60)
    store = open_gallery(folder)
    try:
        assert store.remove([1, 4, 7]) == [1, 4, 7]  # removed items are never neighbours
        vectors = {i: x[i].astype(np.float64) for i in range(len(x)) if i not in (1, 4, 7)}
        items = {it["id"]: it for it in store.items}
        queries = clustered_unit_vectors(6, D, clusters=5, seed=4)
        for method, n, alpha, where in [
            ("aqe", 2, 3.0, None),  # aqe ignores alpha
            ("alpha-qe", 2, 3.0, None),
            ("alpha-qe", 5, 1.0, "label=bag"),  # neighbours and hits among the bags only
            ("aqe", 3, 0.0, "label=bag"),
        ]:
            keep = (
                vectors
                if where is None
                else {i: v for i, v in vectors.items() if _passes(items[i], where)}
            )
            expanded = expanded_by_brute_force(keep, queries, n, 0.0 if method == "aqe" else alpha)
            ref_scores, ref_ids = exact(keep, expanded, 7)
            hits = reranked_hits(store, queries, 7, where, search_rerank(method, n, alpha))
            ids = np.array([[h["id"] for h in row] for row in hits])
            scores = np.array([[h["score"] for h in row] for row in hits])
            np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
            gaps = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-4
            np.testing.assert_array_equal(ids[gaps], ref_ids[gaps])
            plain = np.array([[h["id"] for h in row] for row in store.hits(queries, 7, where)])
            assert (ids != plain).any()  # the expansion changed some ranking: the test can fail
        none = reranked_hits(store, queries, 7, None, search_rerank("none"))
        assert none == store.hits(queries, 7)
    finally:
        store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_search_rerank_on_both_backends(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    x, folder = cli_index(tmp_path, backend)
    queries = clustered_unit_vectors(5, D, clusters=5, seed=5)
    q = save_embedding_file(tmp_path / "q.npz", queries, [0] * 5, ["boot", "cap"],
                            [f"q{i}" for i in range(5)], {})  # fmt: skip
    capsys.readouterr()
    assert main(["search", "--index", str(folder), str(q), "-k", "4", "--format", "json",
                 "--where", "label=cap", "--rerank", "alpha-qe", "--rerank-n", "3"]) == 0  # fmt: skip
    answer = json.loads(capsys.readouterr().out)
    assert answer["rerank"] == {"method": "alpha-qe", "n": 3, "alpha": 3.0}
    caps = {i: x[i].astype(np.float64) for i in range(60) if i % 2}
    ref_scores, ref_ids = exact(caps, expanded_by_brute_force(caps, queries, 3, 3.0), 4)
    scores = np.array([[h["score"] for h in a["hits"]] for a in answer["queries"]])
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    gaps = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-4
    ids = np.array([[h["id"] for h in a["hits"]] for a in answer["queries"]])
    np.testing.assert_array_equal(ids[gaps], ref_ids[gaps])
    with pytest.raises(SystemExit):  # argparse: dba and k-reciprocal are evaluate's only
        main(["search", "--index", str(folder), str(q), "--rerank", "dba"])
    assert "argument --rerank: invalid choice: 'dba'" in capsys.readouterr().err
    for bad, message in [
        (["--rerank-n", "101"], "n must be an integer in [0, 100], got 101"),
        (["--rerank-alpha", "inf"], "alpha must be a number in [0, 100], got inf"),
    ]:
        assert main(["search", "--index", str(folder), str(q), "--rerank", "aqe", *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.skipif(not milvus_available(), reason="needs pymilvus and milvus-lite")
@pytest.mark.parametrize(
    "kind,options,check",
    [
        ("ivf", {"nlist": 7, "nprobe": 7}, lambda ix: faiss_ivf_nlist(ix) == 7),
        ("hnsw", {"m": 8, "ef_construction": 40}, lambda ix: ix.hnsw.nb_neighbors(1) == 8),
    ],
)
def test_milvus_lite_builds_with_the_settings_given(tmp_path: Path, kind: str, options, check):  # noqa: ANN001
    """What Milvus Lite really built, read back from the faiss index files it wrote beside its
    segments (describe_index repeats the request, whatever was built): pymilvus 3 sends each
    setting as its own key, which Lite 3.2 ignored, building IVF with 128 cells and HNSW M 16."""
    import faiss

    folder = tmp_path / kind
    build(folder, "milvus", n=3000, kind=kind, **options)
    # A segment too small for an index keeps its float32 rows (a numpy file) for brute force.
    files = [
        f
        for f in sorted((folder / "milvus.db").rglob("indexes/*.vector.*.idx"))
        if f.read_bytes()[:6] != b"\x93NUMPY"
    ]
    assert files, "Milvus Lite wrote no vector index file"
    for file in files:
        read = faiss.read_index(str(file))
        index = faiss.downcast_index(read)  # a view: `read` owns the index and must outlive it
        assert check(index), f"{file.name}: {type(index).__name__} built with other settings"


def faiss_ivf_nlist(index: Any) -> int:
    import faiss

    return int(faiss.extract_index_ivf(index).nlist)
