"""Searcher: each entry point against brute force over the index's own vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import Folders, brute_force, clustered_unit_vectors
from PIL import Image

from vmfml.cli import main
from vmfml.index import (
    EmbeddingFile,
    Searcher,
    SearchIndex,
    load_embedding_file,
    save_embedding_file,
)


@pytest.fixture()
def searcher(tmp_path: Path, folders: Folders) -> Searcher:
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(folders.checkpoint),
                "--data",
                str(folders.gallery),
                "--out",
                str(tmp_path / "g.npz"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "index",
                "--embeddings",
                str(tmp_path / "g.npz"),
                "--out",
                str(tmp_path / "idx"),
                "--kind",
                "ivf",
                "--nlist",
                "2",
                "--nprobe",
                "2",
            ]
        )
        == 0
    )
    return Searcher.from_index(tmp_path / "idx", batch_size=7)


def gallery_vectors(searcher: Searcher) -> np.ndarray:
    return np.stack([searcher.index.reconstruct(i) for i in range(len(searcher.index))])


def test_search_id_excludes_the_item(searcher: Searcher) -> None:
    x = gallery_vectors(searcher)
    for i in (0, 17, len(x) - 1):
        hits = searcher.search_id(i, k=6)
        _, ids = brute_force(x, x[i : i + 1], 7)
        assert [h["id"] for h in hits] == [j for j in ids[0].tolist() if j != i][:6]
        assert all(h["id"] != i for h in hits)
        item = searcher.index.items[hits[0]["id"]]
        assert (hits[0]["path"], hits[0]["label"]) == (item["path"], item["label"])
    with pytest.raises(IndexError, match="no item with id 60 in the gallery"):
        searcher.search_id(60)


def test_search_vector_normalizes_and_matches_brute_force(searcher: Searcher) -> None:
    x = gallery_vectors(searcher)
    v = x[3] + 0.3 * x[40]
    hits = searcher.search_vector(5.0 * v, k=4)
    scores, ids = brute_force(x, (v / np.linalg.norm(v))[None], 4)
    assert [h["id"] for h in hits] == ids[0].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], scores[0], atol=1e-5)
    assert set(hits[0]) == {"id", "path", "label", "meta", "score"}
    with pytest.raises(ValueError, match="finite and non-zero"):
        searcher.search_vector(np.zeros(x.shape[1]))


def test_images_paths_and_pil_agree(searcher: Searcher, folders: Folders) -> None:
    paths = sorted(folders.queries.rglob("*.png"))
    batched = searcher.search_images(paths, k=3)  # batch_size 7: two forward passes
    single = [searcher.search_image(Image.open(p), k=3) for p in paths]
    assert [[h["id"] for h in r] for r in batched] == [[h["id"] for h in r] for r in single]
    with pytest.raises(ValueError, match="takes a list of images"):
        searcher.search_images(paths[0], k=3)  # type: ignore[arg-type]


def expand(x: np.ndarray, q: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """aqe / alpha-qe by hand, float64: q plus its exact top-n rows of x weighted by
    max(cos, 0) ** alpha, normalized (metrics/rerank.py's definition)."""
    scores, ids = brute_force(x, q, n)
    weights = np.clip(scores, 0, None) ** alpha
    out = q + np.einsum("qn,qnd->qd", weights, x[ids])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_query_expansion_of_images_and_items_matches_brute_force(
    searcher: Searcher, folders: Folders
) -> None:
    from vmfml.index.rerank import search_rerank

    x = gallery_vectors(searcher).astype(np.float64)
    paths = sorted(folders.queries.rglob("*.png"))
    q = searcher.embed_images(paths).numpy().astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for method, alpha in (("aqe", 0.0), ("alpha-qe", 3.0)):
        hits = searcher.search_images(paths, 5, rerank=search_rerank(method, 3, 3.0))
        expanded = expand(x, q, 3, alpha)
        scores, _ = brute_force(x, expanded, 5)
        ids = np.array([[h["id"] for h in r] for r in hits])
        # The untrained model's scores lie close together: each hit must be a true top-5 item
        # (its exact score the reference's at its rank), ties within float32 error aside.
        np.testing.assert_allclose([[h["score"] for h in r] for r in hits], scores, atol=1e-5)
        np.testing.assert_allclose(
            np.take_along_axis(expanded @ x.T, ids, axis=1), scores, atol=1e-5
        )
        assert (ids != brute_force(x, q, 5)[1]).any()  # the expansion changed some list
    # A gallery item is neither its own neighbour in the expansion nor a hit.
    for i in (0, 17, 59):
        others = np.delete(np.arange(len(x)), i)
        expanded = expand(x[others], x[i : i + 1], 2, 3.0)
        scores, _ = brute_force(x[others], expanded, 6)
        hits = searcher.search_id(i, 6, rerank=search_rerank("alpha-qe", 2, 3.0))
        ids = [h["id"] for h in hits]
        assert i not in ids
        np.testing.assert_allclose((expanded @ x[ids].T)[0], scores[0], atol=1e-5)


def test_bad_rerank_settings_are_refused_in_one_line() -> None:
    from vmfml.index.rerank import SEARCH_METHODS, search_rerank

    with pytest.raises(ValueError, match="unknown re-ranking 'dba' for a search; valid options"):
        search_rerank("dba")
    with pytest.raises(ValueError, match=r"n must be an integer in \[0, 100\], got 101"):
        search_rerank("aqe", 101)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 100\], got nan"):
        search_rerank("alpha-qe", 2, float("nan"))
    assert search_rerank("alpha-qe").describe() == {"method": "alpha-qe", "n": 2, "alpha": 3.0}
    parser = __import__("argparse").ArgumentParser()
    from vmfml.index.cli_common import add_rerank_arguments

    add_rerank_arguments(parser)
    choices = next(a.choices for a in parser._actions if a.dest == "rerank")
    assert tuple(choices) == SEARCH_METHODS


def test_embedding_file_round_trip(tmp_path: Path) -> None:
    x = clustered_unit_vectors(50, 8, clusters=3, seed=0)
    labels = np.arange(50) % 3
    labels[7] = -1  # an unknown label
    path = save_embedding_file(
        tmp_path / "e", x, labels, ["a", "b", "c"], [f"p{i}" for i in range(50)], {"note": "x"}
    )
    assert path.name == "e.npz"
    loaded = load_embedding_file(path)
    assert isinstance(loaded, EmbeddingFile) and isinstance(loaded.embeddings, np.memmap)
    np.testing.assert_array_equal(loaded.embeddings, x)
    assert loaded.label_names()[:3] == ["a", "b", "c"] and loaded.label_names()[7] is None
    assert loaded.meta["note"] == "x" and loaded.meta["count"] == 50 and loaded.meta["dim"] == 8
    index = SearchIndex.build(loaded.embeddings, loaded.items())
    assert index.items[7] == {"id": 7, "path": "p7", "label": None, "meta": {}}
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a vmfml embedding file: it lacks"):
        load_embedding_file(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="embedding file not found"):
        load_embedding_file(tmp_path / "none.npz")
