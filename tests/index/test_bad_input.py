"""Bad input gets one clear message naming the problem: unreadable images, odd query images,
another model's embeddings, missing index folders and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import (
    CLASSES,
    GALLERY_PER_CLASS,
    Folders,
    image_options,
    index_gallery,
    make_checkpoint,
    reference_embeddings,
)
from PIL import Image

from vmfml.index import Searcher, SearchIndex, load_embedding_file


def test_unreadable_gallery_image_is_named_or_skipped(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    bad = folders.gallery / "dress" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    args = ["embed", *image_options(folders)]
    code, _, err = run_cli(*args, "--out", tmp_path / "a.npz")
    assert code == 2
    assert str(bad) in err
    assert not (tmp_path / "a.npz").exists()
    code, _, err = run_cli(*args, "--out", tmp_path / "b.npz", "--on-error", "skip")
    assert code == 0
    # The skip is said on one line of its own.
    assert any(
        x.startswith("vmfml embed: warning: ") and "broken.png" in x for x in err.splitlines()
    )
    emb = load_embedding_file(tmp_path / "b.npz")
    assert len(emb) == len(CLASSES) * GALLERY_PER_CLASS
    assert str(bad) not in emb.paths


def test_query_of_other_size_and_channels_is_converted(
    tmp_path: Path, folders: Folders, run_cli
) -> None:
    searcher = Searcher.from_index(index_gallery(run_cli, folders, tmp_path / "idx"))
    grey_path = sorted((folders.queries / "coat").iterdir())[0]
    grey = Image.open(grey_path)
    reference = searcher.search_image(grey_path, k=5)
    # The same picture as RGB (equal channels: luma gives the grey back) and with transparency.
    rgb = Image.merge("RGB", [grey] * 3)
    rgba = rgb.convert("RGBA")
    for variant in (rgb, rgba):
        hits = searcher.search_image(variant, k=5)
        assert [h["id"] for h in hits] == [h["id"] for h in reference]
        np.testing.assert_allclose(
            [h["score"] for h in hits], [h["score"] for h in reference], atol=1e-5
        )
    # Twice the size, saved as a colour JPEG: resized by the preprocessing, still searchable.
    big = tmp_path / "big.jpg"
    rgb.resize((56, 56), Image.Resampling.BILINEAR).save(big, quality=95)
    hits = searcher.search_image(big, k=5)
    assert len(hits) == 5
    # Reference: PIL's grey conversion and antialiased resize, then the model by hand.
    pixels = np.asarray(Image.open(big).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    expected = reference_embeddings(folders.model, pixels[None])[0]
    got = searcher.embed_images([big])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=3e-3)


def test_unusable_query_file_is_refused_by_name(tmp_path: Path, folders: Folders, run_cli) -> None:
    index = index_gallery(run_cli, folders, tmp_path / "idx")
    bad = folders.queries / "coat" / "zz_corrupt.png"
    bad.write_bytes(b"not a png at all")
    searcher = Searcher.from_index(index)
    with pytest.raises(ValueError, match="cannot read image .*zz_corrupt.png"):
        searcher.search_image(bad)
    code, _, err = run_cli("search", "--index", index, bad)
    assert code == 2
    assert "zz_corrupt.png" in err
    code, out, err = run_cli(
        "search", "--index", index, folders.queries, "--on-error", "skip", "--format", "json"
    )
    assert code == 0
    lines = err.splitlines()
    assert any(x.startswith("vmfml search: warning: ") and "zz_corrupt.png" in x for x in lines)
    assert "zz_corrupt" not in out


def test_index_of_another_model_is_refused(tmp_path: Path, folders: Folders, run_cli) -> None:
    index = index_gallery(run_cli, folders, tmp_path / "idx")
    other = tmp_path / "other.pt"
    make_checkpoint(other, seed=1)  # same architecture and dimension, other weights
    with pytest.raises(
        ValueError,
        match="was built with small_cnn .*model.pt.* but the queries are embedded with small_cnn .*other.pt",
    ):
        Searcher.from_index(index, checkpoint=other)
    wider = tmp_path / "wider.pt"
    make_checkpoint(wider, seed=0, embed_dim=24)
    with pytest.raises(
        ValueError,
        match="holds 16-dimensional embeddings of small_cnn .* but the queries are 24-dimensional",
    ):
        Searcher.from_index(index, checkpoint=wider)
    # Query embeddings written by another model: refused naming both.
    queries = image_options(folders, data=folders.queries, checkpoint=other)
    assert run_cli("embed", *queries, "--out", tmp_path / "q.npz").code == 0
    code, _, err = run_cli("search", "--index", index, tmp_path / "q.npz")
    assert code == 2
    assert "model.pt" in err and "other.pt" in err
    # Raw vectors of the wrong dimension.
    searcher = Searcher.from_index(index)
    with pytest.raises(ValueError, match="dimension 8 but the index holds 16-dimensional"):
        searcher.search_vector(np.ones(8))


def test_missing_index_folder_and_checkpoint(tmp_path: Path, folders: Folders, run_cli) -> None:
    query = next(folders.queries.rglob("*.png"))
    code, _, err = run_cli("search", "--index", tmp_path / "nowhere", query)
    assert code == 2
    assert f"index folder not found: {tmp_path / 'nowhere'}" in err
    index = index_gallery(run_cli, folders, tmp_path / "idx")
    moved = tmp_path / "moved.pt"
    folders.checkpoint.rename(moved)
    code, _, err = run_cli("search", "--index", index, query)
    assert code == 2
    assert "checkpoint recorded by the index" in err
    assert run_cli("search", "--index", index, query, "--checkpoint", moved).code == 0


def test_cli_option_errors(tmp_path: Path, folders: Folders, run_cli) -> None:
    code, _, err = run_cli("index", "--out", tmp_path / "i")
    assert code == 2
    assert "no gallery" in err
    code, _, err = run_cli("index", *image_options(folders), "--out", tmp_path / "i", "--nprobe", 3)
    assert code == 2
    assert "--nprobe not valid with --kind flat" in err
    index = index_gallery(run_cli, folders, tmp_path / "idx")
    code, _, err = run_cli("search", "--index", index, folders.queries, "--ef-search", 5)
    assert code == 2
    assert "ef_search applies to hnsw indexes; this one is flat" in err
    code, _, err = run_cli("search", "--index", index, tmp_path / "missing.png")
    assert code == 2
    assert "query not found" in err
    assert SearchIndex.load(index).kind == "flat"


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 10_000), (20_000, 20_000)])
def test_a_decompression_bomb_is_refused_or_skipped_in_one_line(
    tmp_path: Path, folders: Folders, run_cli, size: tuple[int, int]
) -> None:
    """100 Mpx passes Pillow's own error threshold (it only warns); 400 Mpx raised its
    DecompressionBombError, a traceback even with --on-error skip. Both: one line, or skipped."""
    index = index_gallery(run_cli, folders, tmp_path / "idx")
    bomb = folders.queries / "coat" / "zz_bomb.png"
    bomb.write_bytes(_png_claiming(*size))
    code, _, err = run_cli("search", "--index", index, bomb)
    assert code == 2 and "Traceback" not in err
    assert f"cannot read image {bomb}: it " in err and "pixels" in err
    code, out, err = run_cli("search", "--index", index, folders.queries, "--on-error", "skip")
    assert code == 0 and "Traceback" not in err
    lines = err.splitlines()
    assert any(x.startswith("vmfml search: warning: ") and "zz_bomb.png" in x for x in lines)
    assert "zz_bomb" not in out
    gallery_bomb = folders.gallery / "dress" / "zz_bomb.png"
    gallery_bomb.write_bytes(_png_claiming(*size))
    args = ["embed", *image_options(folders), "--out", tmp_path / "g.npz", "--on-error", "skip"]
    code, _, err = run_cli(*args)
    assert code == 0 and "Traceback" not in err
    assert any(x.startswith("vmfml embed: warning: ") and "pixels" in x for x in err.splitlines())
    gallery_bomb.unlink()


def test_the_search_grid_shows_a_bomb_or_an_eps_file_as_a_grey_tile(tmp_path: Path) -> None:
    from vmfml.index.grid import _thumbnail

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(20_000, 20_000))
    eps = tmp_path / "picture.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    for path in (bomb, eps):
        tile = _thumbnail(path, 16)
        assert tile.size == (16, 16) and tile.getpixel((8, 8)) == (220, 220, 220)
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(good)
    assert _thumbnail(good, 16).getpixel((8, 8)) == (10, 200, 30)
