"""SearchIndex against brute-force float64 search; approximate kinds by recall; persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from index_helpers import brute_force, clustered_unit_vectors

from vmfml.index import SearchIndex


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x = clustered_unit_vectors(3000, 32, clusters=40, seed=0)
    q = clustered_unit_vectors(200, 32, clusters=40, seed=1)
    return x, q


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k found in the approximate top-k."""
    return float(
        np.mean(
            [
                len(set(a) & set(b)) / len(b)
                for a, b in zip(ids.tolist(), exact.tolist(), strict=True)
            ]
        )
    )


def test_flat_equals_brute_force(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    index = SearchIndex.build(x, kind="flat", chunk_rows=700)  # several add chunks
    scores, ids = index.search(q, k=10)
    ref_scores, ref_ids = brute_force(x, q, 10)
    assert scores.shape == ids.shape == (200, 10)
    assert ids.dtype == np.int64
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # Ids agree wherever the float64 scores are not near-ties.
    gaps = np.abs(np.diff(ref_scores, axis=1)).min(axis=1) > 1e-5
    assert gaps.sum() > 150
    np.testing.assert_array_equal(ids[gaps], ref_ids[gaps])


def test_ivf_recall_rises_with_nprobe_and_is_exact_when_probing_all(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    x, q = data
    _, exact = brute_force(x, q, 10)
    index = SearchIndex.build(x, kind="ivf", nlist=32, nprobe=1)
    assert index.options == {"nlist": 32, "nprobe": 1, "train_size": 2048}
    recalls = []
    for nprobe in (1, 4, 32):
        index.set_search_params(nprobe=nprobe)
        recalls.append(recall_at(index.search(q, 10)[1], exact))
    assert recalls[0] < recalls[1] <= recalls[2]
    assert recalls[1] > 0.7
    assert recalls[2] == 1.0  # scanning every cell is exhaustive search


def test_hnsw_recall(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    _, exact = brute_force(x, q, 10)
    index = SearchIndex.build(x, kind="hnsw", m=16, ef_search=128)
    assert recall_at(index.search(q, 10)[1], exact) > 0.95
    index.set_search_params(ef_search=10)
    assert index.index.hnsw.efSearch == 10


def test_ivfpq_reranks_exactly_from_vectors_on_disk(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, q = data
    _, exact = brute_force(x, q, 10)
    index = SearchIndex.build(x, kind="ivfpq", nlist=16, nprobe=16, pq_bytes=8, refine_factor=8)
    assert index.options == {"nlist": 16, "nprobe": 16, "train_size": 3000, "pq_bytes": 8,
                             "opq": False, "refine_factor": 8}  # fmt: skip
    recalls = {}
    for refine in (1, 8):
        index.set_search_params(refine_factor=refine)
        recalls[refine] = recall_at(index.search(q, 10)[1], exact)
    # 8 bytes a vector lose neighbours; re-ranking 80 candidates by the float32 rows finds them.
    assert recalls[1] < 0.8 < 0.95 < recalls[8]
    scores, ids = index.search(q, 10)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, x[ids]), atol=1e-5)
    index.save(tmp_path / "pq")
    loaded = SearchIndex.load(tmp_path / "pq")
    assert isinstance(loaded._stored, np.memmap)  # file-backed pages, not the process's memory
    assert (tmp_path / "pq" / "vectors.f32").stat().st_size == x.nbytes
    np.testing.assert_array_equal(loaded.search(q, 10)[1], ids)
    np.testing.assert_array_equal(loaded.reconstruct(7), x[7])
    with pytest.raises(ValueError, match="pq_bytes=5 must divide the dimension 32; valid: 1, 2, 4"):
        SearchIndex.build(x, kind="ivfpq", pq_bytes=5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_save_load_round_trip(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    x, q = data
    x, q = x[:1000], q[:20]
    items = [{"path": f"/g/{i}.png", "label": f"c{i % 7}"} for i in range(len(x))]
    meta = {"model": {"embed_dim": 32, "fingerprint": "abc"}, "gallery_root": "/g"}
    index = (
        SearchIndex.build(x, items, meta, kind=kind, nlist=8, nprobe=3)
        if kind in ("ivf", "ivfpq")
        else SearchIndex.build(x, items, meta, kind=kind)
    )
    before = index.search(q, 7)
    index.save(tmp_path / "idx")
    loaded = SearchIndex.load(tmp_path / "idx")
    after = loaded.search(q, 7)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    assert loaded.kind == kind and len(loaded) == 1000 and loaded.dim == 32
    assert loaded.meta == meta
    assert loaded.options == index.options
    assert loaded.items[5] == {"id": 5, "path": "/g/5.png", "label": "c5", "meta": {}}
    assert loaded.items[-1]["id"] == 999
    assert [it["id"] for it in loaded.items[10:13]] == [10, 11, 12]
    saved = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert saved["count"] == 1000 and saved["dim"] == 32 and saved["kind"] == kind


def test_add_in_chunks_continues_ids(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    index = SearchIndex.build(x[:100], [{"path": f"a{i}"} for i in range(100)])
    index.add(torch.from_numpy(x[100:250]), [{"path": f"b{i}"} for i in range(150)], chunk_rows=64)
    assert len(index) == 250
    _, ids = index.search(x[[10, 200]], 1)
    assert ids[:, 0].tolist() == [10, 200]
    assert index.items[200]["path"] == "b100"


def test_k_larger_than_gallery_pads_with_minus_one() -> None:
    x = clustered_unit_vectors(3, 8, clusters=2, seed=0)
    scores, ids = SearchIndex.build(x).search(x[:1], k=5)
    assert ids[0, :3].tolist() != [-1, -1, -1] and ids[0, 3:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 3:]).all()


def test_bad_inputs(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, q = data
    with pytest.raises(
        ValueError, match="unknown index kind .annoy.; valid kinds: flat, ivf, hnsw, ivfpq"
    ):
        SearchIndex.build(x, kind="annoy")
    with pytest.raises(ValueError, match="row 1 has norm 2"):
        SearchIndex.build(np.stack([x[0], 2 * x[1]]))
    index = SearchIndex.build(x[:50])
    with pytest.raises(
        ValueError, match="queries have dimension 16 but the index holds 32-dimensional"
    ):
        index.search(q[:, :16], 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(q, 0)
    with pytest.raises(
        ValueError, match="nprobe applies to ivf and ivfpq indexes; this one is flat"
    ):
        index.set_search_params(nprobe=2)
    with pytest.raises(ValueError, match="nlist=100 cells need at least as many vectors"):
        SearchIndex.build(x[:50], kind="ivf", nlist=100)


def test_load_errors(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    with pytest.raises(FileNotFoundError, match="index folder not found: .*nowhere"):
        SearchIndex.load(tmp_path / "nowhere")
    folder = SearchIndex.build(x[:40]).save(tmp_path / "idx")
    (folder / "items.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing items.json"):
        SearchIndex.load(folder)
    folder = SearchIndex.build(x[:40]).save(tmp_path / "idx2")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "dim": 64}))
    with pytest.raises(
        ValueError, match="meta.json says dimension 64 but index.faiss holds 32-dimensional"
    ):
        SearchIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "count": 41}))
    with pytest.raises(ValueError, match="inconsistent counts"):
        SearchIndex.load(folder)


def test_items_share_one_string_per_label_after_load_and_add(tmp_path: Path) -> None:
    """A gallery of many items in few classes keeps a pointer per item, not a copy of its class
    name (at 1M items in 10,000 classes: 50 bytes an item of anonymous memory)."""
    x = clustered_unit_vectors(60, 8, clusters=3, seed=0)
    items = [{"path": f"{i}.png", "label": f"class {i % 3}"} for i in range(60)]
    SearchIndex.build(x[:40], items[:40]).save(tmp_path / "idx")
    index = SearchIndex.load(tmp_path / "idx")
    index.add(torch.from_numpy(x[40:]), items[40:])
    labels = [item["label"] for item in index.items]
    assert labels == [it["label"] for it in items]
    assert len({id(label) for label in labels}) == 3
