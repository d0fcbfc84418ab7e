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
