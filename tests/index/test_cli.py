"""embed -> index -> search through `vmfml.cli.main`, checked against hand-computed embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from index_helpers import (
    CLASSES,
    GALLERY_PER_CLASS,
    QUERIES_PER_CLASS,
    Folders,
    brute_force,
    embed_gallery,
    index_gallery,
    reference_embeddings,
)
from PIL import Image

from vmfml.index import SearchIndex, load_embedding_file
from vmfml.index.grid import CORRECT, WRONG, cell_origin, grid_size


def index_embeddings(run_cli, embeddings: Path, out: Path, *options: str) -> Path:
    """`vmfml index` of an embedding file into the folder `out`."""
    assert run_cli("index", "--embeddings", embeddings, "--out", out, *options).code == 0
    return out


def search_json(run_cli, index: Path, queries: Path, k: int, *options: str) -> dict:
    """`vmfml search --format json`: the parsed answer."""
    code, out, err = run_cli(
        "search", "--index", index, queries, "-k", k, "--format", "json", *options
    )
    assert code == 0, err
    return json.loads(out)


def test_embed_writes_the_models_embeddings(tmp_path: Path, folders: Folders, run_cli) -> None:
    emb = load_embedding_file(embed_gallery(run_cli, folders, tmp_path / "gallery.npz"))
    n = len(CLASSES) * GALLERY_PER_CLASS
    assert emb.embeddings.shape == (n, 16) and emb.embeddings.dtype == np.float32
    assert isinstance(emb.embeddings, np.memmap)  # read in place, not loaded whole
    assert emb.class_names == sorted(CLASSES)
    assert [emb.class_names[i] for i in emb.labels] == [Path(p).parent.name for p in emb.paths]
    pixels = np.stack([folders.gallery_pixels[str(Path(p).resolve())] for p in emb.paths])
    np.testing.assert_allclose(
        emb.embeddings, reference_embeddings(folders.model, pixels), atol=1e-5
    )
    model = emb.meta["model"]
    assert model["checkpoint"] == str(folders.checkpoint.resolve())
    assert model["config"]["name"] == "small_cnn" and model["embed_dim"] == 16
    assert model["preprocessing"]["input_size"] == [1, 28, 28]
    assert emb.meta["data_root"] == str(folders.gallery.resolve())
    assert emb.meta["count"] == n


def test_index_and_search_equal_brute_force(tmp_path: Path, folders: Folders, run_cli) -> None:
    gallery = load_embedding_file(embed_gallery(run_cli, folders, tmp_path / "gallery.npz"))
    index = SearchIndex.load(index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "idx"))
    assert index.meta["model"]["fingerprint"] == gallery.meta["model"]["fingerprint"]
    assert index.meta["gallery_root"] == str(folders.gallery.resolve())
    assert [it["label"] for it in index.items] == gallery.label_names()

    k = 4
    out = search_json(run_cli, tmp_path / "idx", folders.queries, k)
    queries = out["queries"]
    assert len(queries) == len(CLASSES) * QUERIES_PER_CLASS
    assert [q["label"] for q in queries] == [Path(q["query"]).parent.name for q in queries]
    pixels = np.stack([folders.query_pixels[str(Path(q["query"]).resolve())] for q in queries])
    ref_scores, ref_ids = brute_force(
        np.asarray(gallery.embeddings), reference_embeddings(folders.model, pixels), k
    )
    got_ids = np.array([[h["id"] for h in q["hits"]] for q in queries])
    got_scores = np.array([[h["score"] for h in q["hits"]] for q in queries])
    np.testing.assert_allclose(got_scores, ref_scores, atol=1e-5)
    np.testing.assert_array_equal(got_ids, ref_ids)
    for q in queries:
        for h in q["hits"]:
            assert (
                h["path"] == gallery.paths[h["id"]] and h["label"] == gallery.label_names()[h["id"]]
            )
    p1 = np.mean([q["hits"][0]["label"] == q["label"] for q in queries])
    assert out["precision@1"] == pytest.approx(p1)


def test_index_straight_from_images_and_table_output(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    embed_gallery(run_cli, folders, tmp_path / "gallery.npz")
    index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "a")
    index_gallery(run_cli, folders, tmp_path / "b")
    a, b = SearchIndex.load(tmp_path / "a"), SearchIndex.load(tmp_path / "b")
    assert list(a.items) == list(b.items)
    assert a.meta["model"] == b.meta["model"]
    np.testing.assert_array_equal(
        a.index.reconstruct_n(0, len(a)), b.index.reconstruct_n(0, len(b))
    )
    assert not list(tmp_path.glob(".vmfml-*"))  # the scratch embedding file is gone
    query = sorted((folders.queries / "trouser").iterdir())[0]
    code, out, _ = run_cli("search", "--index", tmp_path / "b", query, "-k", 3)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"query 1/1: {query}"
    assert len(lines) == 2 + 3  # header, column names, 3 hits


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_through_the_cli(
    tmp_path: Path, folders: Folders, kind: str, run_cli
) -> None:
    embed_gallery(run_cli, folders, tmp_path / "gallery.npz")
    opts = ["--nlist", "4", "--nprobe", "4"] if kind == "ivf" else ["--m", "8", "--ef-search", "80"]
    index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "idx", "--kind", kind, *opts)
    index = SearchIndex.load(tmp_path / "idx")
    assert index.kind == kind
    # nprobe = nlist and a large ef on 60 items: both are exact here, so equal the flat answer.
    approx = search_json(run_cli, tmp_path / "idx", folders.queries, 5)
    index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "flat")
    exact = search_json(run_cli, tmp_path / "flat", folders.queries, 5)
    assert [[h["id"] for h in q["hits"]] for q in approx["queries"]] == [
        [h["id"] for h in q["hits"]] for q in exact["queries"]
    ]


def test_search_with_an_embedding_file_as_queries(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    embed_gallery(run_cli, folders, tmp_path / "gallery.npz")
    index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "idx")
    # The gallery searched against itself: every item's nearest neighbour is itself.
    out = search_json(run_cli, tmp_path / "idx", tmp_path / "gallery.npz", 1)
    assert [q["hits"][0]["path"] for q in out["queries"]] == [q["query"] for q in out["queries"]]
    assert out["precision@1"] == 1.0


def test_grid_png(tmp_path: Path, folders: Folders, run_cli) -> None:
    embed_gallery(run_cli, folders, tmp_path / "gallery.npz")
    index_embeddings(run_cli, tmp_path / "gallery.npz", tmp_path / "idx")
    grid = tmp_path / "grid.png"
    k, thumb = 3, 40
    search_json(
        run_cli, tmp_path / "idx", folders.queries, k, "--grid", str(grid), "--thumb", str(thumb)
    )
    n_queries = len(CLASSES) * QUERIES_PER_CLASS
    image = Image.open(grid)
    assert image.format == "PNG" and image.size == grid_size(n_queries, k, thumb)
    # Each hit's frame is green when its label is the query's, red otherwise.
    from vmfml.index import Searcher

    searcher = Searcher.from_index(tmp_path / "idx")
    queries = sorted(folders.queries.rglob("*.png"))
    results = searcher.search_images(queries, k)
    rgb = image.convert("RGB")
    colours = set()
    for row, (query, hits) in enumerate(zip(queries, results, strict=True)):
        for col, hit in enumerate(hits, start=1):
            x, y = cell_origin(row, col, thumb)
            expected = CORRECT if hit["label"] == query.parent.name else WRONG
            assert rgb.getpixel((x + 1, y + 1)) == expected
            colours.add(expected)
    assert colours == {CORRECT, WRONG}  # an untrained model gets some right and some wrong


def test_index_add_stores_images_inside_the_gallery_folder_relative_to_it(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    """Added images under the gallery folder are stored like the built ones (relative), so a
    path^= filter and the server's thumbnails reach them; images elsewhere stay absolute."""
    import shutil

    idx = index_gallery(run_cli, folders, tmp_path / "idx")
    new = folders.gallery / "new" / CLASSES[0]
    shutil.copytree(folders.queries / CLASSES[0], new)
    added = run_cli("index", "add", "--index", idx, new, folders.queries / CLASSES[1])
    assert added.code == 0, added.err
    assert f"{QUERIES_PER_CLASS} of {2 * QUERIES_PER_CLASS} images lie outside" in added.err
    out = search_json(run_cli, idx, new, 1, "--where", "path^=new/")
    for q in out["queries"]:
        hit = q["hits"][0]
        assert hit["path"] == f"new/{CLASSES[0]}/{Path(q['query']).name}"
        assert hit["score"] == pytest.approx(1.0, abs=1e-5)
    far = search_json(run_cli, idx, folders.queries / CLASSES[1], 1)
    assert all(Path(q["hits"][0]["path"]).is_absolute() for q in far["queries"])


def test_index_add_embeds_images_with_the_indexs_model(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    idx = index_gallery(run_cli, folders, tmp_path / "idx")
    n = len(CLASSES) * GALLERY_PER_CLASS
    added = run_cli("index", "add", "--index", idx, folders.queries)
    assert added.code == 0, added.err
    ids = json.loads(added.out)["added"]
    assert ids == list(range(n, n + len(CLASSES) * QUERIES_PER_CLASS))
    # Each added query image is now its own nearest neighbour, labelled by its subfolder, with
    # the embedding computed by hand from its pixels.
    out = search_json(run_cli, idx, folders.queries, 1)
    for q in out["queries"]:
        hit = q["hits"][0]
        assert hit["id"] in ids and hit["path"] == str(Path(q["query"]).resolve())
        assert hit["label"] == q["label"] and hit["score"] == pytest.approx(1.0, abs=1e-5)
    index = SearchIndex.load(idx)  # the built part alone: the adds live in the write log
    assert len(index) == n
    paths = [hit["path"] for q in out["queries"] for hit in q["hits"]]
    pixels = np.stack([folders.query_pixels[p] for p in paths])
    from vmfml.index import open_gallery

    gallery = open_gallery(idx)
    stored = np.stack([gallery.reconstruct(q["hits"][0]["id"]) for q in out["queries"]])
    np.testing.assert_allclose(stored, reference_embeddings(folders.model, pixels), atol=1e-5)
