"""Bad files and destinations get one line naming them (exit status 2), before any work: a data
error in a loader worker, a garbage embedding file, a grid or embedding file that cannot be
written where asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from index_helpers import Folders

from vmfml.cli import main
from vmfml.index import load_embedding_file


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "it/s]" not in line and line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "Caught" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["embed", "index"])
def test_a_bad_image_read_by_a_worker_process_is_named_in_one_line(
    tmp_path: Path, folders: Folders, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As found: with workers, "Caught ValueError in DataLoader worker process 0. Original
    Traceback ..." (30 lines)."""
    bad = folders.gallery / "coat" / "zz-broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / ("g.npz" if command == "embed" else "idx")
    args = [command, "--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    assert main([*args, "--out", str(out), "--workers", "2", "--no-progress"]) == 2
    assert one_line_error(capsys).startswith(f"vmfml {command}: error: cannot read image {bad}: ")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_negative_workers_are_refused(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["embed", "--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "g.npz"), "--workers", "-1"])
    assert "argument --workers: expected an integer >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"garbage bytes, not a zip", b"PK\x03\x04 truncated", b""])
def test_a_garbage_embedding_file_is_named(
    tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """As found: "This file contains pickled (object) data..." without the file's name."""
    garbage = tmp_path / "gallery.npz"
    garbage.write_bytes(content)
    with pytest.raises(ValueError, match=str(garbage)):
        load_embedding_file(garbage)
    np.save(garbage.with_suffix(".npy"), np.zeros(3))
    garbage.with_suffix(".npy").rename(garbage)  # an .npy under an .npz name
    with pytest.raises(ValueError, match=f"{garbage} is not a vmfml embedding file"):
        load_embedding_file(garbage)
    garbage.write_bytes(content)
    assert main(["index", "--embeddings", str(garbage), "--out", str(tmp_path / "idx")]) == 2
    assert str(garbage) in one_line_error(capsys)
    assert not (tmp_path / "idx").exists()


def test_grid_into_a_missing_folder_is_refused_before_searching(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    """As found: `search --grid /nonexistent/g.png` created /nonexistent/."""
    index = tmp_path / "idx"
    args = ["--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    assert main(["index", *args, "--out", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    grid = tmp_path / "nonexistent" / "g.png"
    search = ["search", "--index", str(index), str(folders.queries)]
    assert main([*search, "--grid", str(grid)]) == 2
    line = one_line_error(capsys)
    assert f"--grid {grid}: the folder {grid.parent} does not exist" in line
    assert not grid.parent.exists()
    assert capsys.readouterr().out == ""  # refused before any search
    (tmp_path / "adir").mkdir()
    assert main([*search, "--grid", str(tmp_path / "adir")]) == 2
    assert "is a folder" in one_line_error(capsys)
    assert main([*search, "--grid", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_embed_out_an_existing_folder_is_refused_before_embedding(
    tmp_path: Path, folders: Folders, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["embed", "--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    (tmp_path / "out").mkdir()
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "is a folder" in one_line_error(capsys)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.usefixtures("model_never_loaded")
@pytest.mark.parametrize("where", ["a locked folder", "below a file"])
def test_an_embed_out_that_cannot_be_written_is_refused_before_embedding(
    tmp_path: Path,
    folders: Folders,
    capsys: pytest.CaptureFixture[str],
    unwritable: Callable[[Path], Path],
    where: str,
) -> None:
    """Issue 21: an unwritable out folder was found after all images were embedded."""
    if where == "a locked folder":
        out = unwritable(tmp_path / "locked") / "g.npz"
    else:
        (tmp_path / "notes.txt").write_text("a file")
        out = tmp_path / "notes.txt" / "g.npz"

    args = ["embed", "--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"vmfml embed: error: --out {out}: ")
    if where == "a locked folder":
        assert f"cannot create files in the folder {out.parent} (Permission denied)" in line
    else:
        assert f"{out.parent} is a file, not a folder" in line


def test_a_grid_that_cannot_be_written_is_refused_before_searching(
    tmp_path: Path,
    folders: Folders,
    capsys: pytest.CaptureFixture[str],
    unwritable: Callable[[Path], Path],
) -> None:
    index = tmp_path / "idx"
    args = ["--checkpoint", str(folders.checkpoint), "--data", str(folders.gallery)]
    assert main(["index", *args, "--out", str(index), "--no-progress"]) == 0
    capsys.readouterr()
    locked = unwritable(tmp_path / "locked")
    grid = locked / "g.png"
    assert main(["search", "--index", str(index), str(folders.queries), "--grid", str(grid)]) == 2
    line = one_line_error(capsys)
    assert f"--grid {grid}: cannot create files in the folder {locked}" in line
    assert capsys.readouterr().out == ""  # refused before any search
