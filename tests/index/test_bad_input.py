"""Bad input gets one clear message naming the problem: unreadable images, odd query images,
another model's embeddings, missing index folders and checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import CLASSES, GALLERY_PER_CLASS, Folders, make_checkpoint, reference_embeddings
from PIL import Image

from vmfml.cli import main
from vmfml.index import Searcher, SearchIndex, load_embedding_file


def build_index(folders: Folders, out: Path) -> Path:
    assert (
        main(
            [
                "index",
                "--checkpoint",
                str(folders.checkpoint),
                "--data",
                str(folders.gallery),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def test_unreadable_gallery_image_is_named_or_skipped(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = folders.gallery / "dress" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    args = [
        "embed",
        "--checkpoint",
        str(folders.checkpoint),
        "--data",
        str(folders.gallery),
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "a.npz")]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "a.npz").exists()
    with pytest.warns(UserWarning, match="broken.png"):
        assert main([*args, "--out", str(tmp_path / "b.npz"), "--on-error", "skip"]) == 0
    emb = load_embedding_file(tmp_path / "b.npz")
    assert len(emb) == len(CLASSES) * GALLERY_PER_CLASS
    assert str(bad) not in emb.paths


def test_query_of_other_size_and_channels_is_converted(tmp_path: Path, folders: Folders) -> None:
    searcher = Searcher.from_index(build_index(folders, tmp_path / "idx"))
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


def test_unusable_query_file_is_refused_by_name(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_index(folders, tmp_path / "idx")
    bad = folders.queries / "coat" / "zz_corrupt.png"
    bad.write_bytes(b"not a png at all")
    searcher = Searcher.from_index(index)
    with pytest.raises(ValueError, match="cannot read image .*zz_corrupt.png"):
        searcher.search_image(bad)
    capsys.readouterr()
    assert main(["search", "--index", str(index), str(bad)]) == 2
    assert "zz_corrupt.png" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="zz_corrupt.png"):
        assert (
            main(
                [
                    "search",
                    "--index",
                    str(index),
                    str(folders.queries),
                    "--on-error",
                    "skip",
                    "--format",
                    "json",
                ]
            )
            == 0
        )
    assert "zz_corrupt" not in capsys.readouterr().out


def test_index_of_another_model_is_refused(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_index(folders, tmp_path / "idx")
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
    assert (
        main(
            [
                "embed",
                "--checkpoint",
                str(other),
                "--data",
                str(folders.queries),
                "--out",
                str(tmp_path / "q.npz"),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", "--index", str(index), str(tmp_path / "q.npz")]) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and "other.pt" in err
    # Raw vectors of the wrong dimension.
    searcher = Searcher.from_index(index)
    with pytest.raises(ValueError, match="dimension 8 but the index holds 16-dimensional"):
        searcher.search_vector(np.ones(8))


def test_missing_index_folder_and_checkpoint(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    query = next(folders.queries.rglob("*.png"))
    assert main(["search", "--index", str(tmp_path / "nowhere"), str(query)]) == 2
    assert f"index folder not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err
    index = build_index(folders, tmp_path / "idx")
    moved = tmp_path / "moved.pt"
    folders.checkpoint.rename(moved)
    capsys.readouterr()
    assert main(["search", "--index", str(index), str(query)]) == 2
    assert "checkpoint recorded by the index" in capsys.readouterr().err
    assert main(["search", "--index", str(index), str(query), "--checkpoint", str(moved)]) == 0


def test_cli_option_errors(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "--out", str(tmp_path / "i")]) == 2
    assert "no gallery" in capsys.readouterr().err
    assert (
        main(
            [
                "index",
                "--checkpoint",
                str(folders.checkpoint),
                "--data",
                str(folders.gallery),
                "--out",
                str(tmp_path / "i"),
                "--nprobe",
                "3",
            ]
        )
        == 2
    )
    assert "--nprobe not valid with --kind flat" in capsys.readouterr().err
    index = build_index(folders, tmp_path / "idx")
    capsys.readouterr()
    assert main(["search", "--index", str(index), str(folders.queries), "--ef-search", "5"]) == 2
    assert "ef_search applies to hnsw indexes; this one is flat" in capsys.readouterr().err
    assert main(["search", "--index", str(index), str(tmp_path / "missing.png")]) == 2
    assert "query not found" in capsys.readouterr().err
    assert SearchIndex.load(index).kind == "flat"
