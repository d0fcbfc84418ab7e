"""Rebuilding an index in place is crash-consistent: killed at any step, `vmfml index --out
EXISTING` leaves the old index or the new one, whole; a folder of mixed files is refused.

The kill is real: a forked child saves the new index and sends itself SIGKILL just before (or
after) its n-th file-system step (a rename, an exchange, a file write, a removal), for every n,
so no cleanup code runs; the parent then reads the folder as `vmfml search` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from vmfml import files
from vmfml.cli import main
from vmfml.files import temp_entries
from vmfml.index import SearchIndex
from vmfml.index.embeddings import save_embedding_file

N, D = 60, 8
CLASSES = ["a", "b", "c"]


def unit_rows(seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((N, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(seed: int) -> SearchIndex:
    """An index whose items say which build they belong to (path b<seed>/<i>.png)."""
    items = [{"path": f"b{seed}/{i}.png", "label": CLASSES[i % 3]} for i in range(N)]
    return SearchIndex.build(unit_rows(seed), items, {"build": seed}, kind="flat")


def version_of(folder: Path) -> int:
    """Which build the folder holds, after checking that every part agrees with it."""
    index = SearchIndex.load(folder)
    seed = int(index.meta["build"])
    assert {p.split("/")[0] for p in index.items.paths} == {f"b{seed}"}
    expected = unit_rows(seed)
    np.testing.assert_allclose(
        np.stack([index.reconstruct(i) for i in range(N)]), expected, atol=1e-6
    )
    _, ids = index.search(expected[:5], k=1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    return seed


def killed_at(step: int, action: Callable[[], object], fallback: bool) -> bool:
    """Run `action` in a forked child that SIGKILLs itself at its `step`-th file-system step
    (steps are counted before each call and once more after the last); True if it was killed,
    False if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = [0]

            def tick() -> None:
                if count[0] == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                count[0] += 1

            def wrap(fn: Callable) -> Callable:
                def inner(*args, **kwargs):  # type: ignore[no-untyped-def]
                    tick()
                    out = fn(*args, **kwargs)
                    tick()
                    return out

                return inner

            os.rename = wrap(os.rename)
            os.replace = wrap(os.replace)
            shutil.rmtree = wrap(shutil.rmtree)
            faiss.write_index = wrap(faiss.write_index)
            Path.write_text = wrap(Path.write_text)  # type: ignore[method-assign]
            files.exchange = (lambda a, b: False) if fallback else wrap(files.exchange)
            action()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the save failed without being killed"
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_a_rebuild_killed_at_any_step_leaves_one_whole_index(
    tmp_path: Path, fallback: bool
) -> None:
    if not fallback and not files.exchange(*_two_folders(tmp_path)):
        pytest.skip("this file system cannot exchange two folders atomically")
    pristine = tmp_path / "old"
    build(1).save(pristine)
    new = build(2)
    out = tmp_path / "idx"
    seen: set[object] = set()
    step = 0
    while True:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(pristine, out)
        was_killed = killed_at(step, lambda: new.save(out), fallback)
        try:
            seen.add(version_of(out))
        except FileNotFoundError as err:
            # Only without the exchange, between the two renames: nothing there, never a mix;
            # and the message says where the complete index is.
            assert fallback and "a rebuild was interrupted" in str(err), err
            seen.add("missing")
        if not was_killed:
            assert version_of(out) == 2
            break
        step += 1
    assert step > 5  # the kill really hit every step, not just the first
    assert {1, 2} <= seen
    # The next save removes what the killed runs left beside the folder.
    build(3).save(out)
    assert temp_entries(out) == [] and version_of(out) == 3


def _two_folders(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir()
    b.mkdir()
    return a, b


def embedding_file(path: Path, seed: int) -> Path:
    """One gallery (same paths and labels), embedded by "model" `seed`."""
    return save_embedding_file(
        path,
        unit_rows(seed),
        [i % 3 for i in range(N)],
        CLASSES,
        [f"/gallery/{CLASSES[i % 3]}/{i}.png" for i in range(N)],
        {"model": {"embed_dim": D, "fingerprint": f"model-{seed}"}},
    )


def search(index: Path, queries: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`vmfml search --format json` of an embedding file: (exit status, stdout or stderr)."""
    code = main(["search", "--index", str(index), str(queries), "-k", "1", "--format", "json"])
    out, err = capsys.readouterr()
    return code, out if code == 0 else err


def test_cli_rebuild_failing_at_the_swap_keeps_the_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = embedding_file(tmp_path / "old.npz", 1), embedding_file(tmp_path / "new.npz", 2)
    out = tmp_path / "idx"
    assert main(["index", "--embeddings", str(old), "--out", str(out), "--no-progress"]) == 0
    code, answer = search(out, old, capsys)
    assert code == 0 and json.loads(answer)["precision@1"] == 1.0
    # Every file of the new index is written, then the step that puts it in place fails.
    for broken in ("exchange", "rename"):
        with monkeypatch.context() as patch:
            if broken == "exchange":
                patch.setattr(files, "exchange", _raise_oserror)
            else:
                patch.setattr(files, "exchange", lambda a, b: False)
                # the first rename moves the old folder aside, the second (failing) the new in
                patch.setattr(os, "rename", _failing_at(1, os.rename))
            with pytest.raises(OSError, match="injected"):
                main(["index", "--embeddings", str(new), "--out", str(out), "--no-progress"])
        capsys.readouterr()
        # The old index answers, whole: its own embeddings find themselves.
        code, answer = search(out, old, capsys)
        assert code == 0, answer
        assert json.loads(answer)["precision@1"] == 1.0
        assert json.loads((out / "meta.json").read_text())["model"]["fingerprint"] == "model-1"
        assert temp_entries(out) == []
    assert main(["index", "--embeddings", str(new), "--out", str(out), "--no-progress"]) == 0
    code, answer = search(out, new, capsys)
    assert code == 0 and json.loads(answer)["precision@1"] == 1.0


def _raise_oserror(a: object, b: object) -> bool:
    raise OSError("injected failure")


def _failing_at(n: int, rename: Callable[[str, str], None]) -> Callable[[str, str], None]:
    """`rename` whose n-th call (from 0) raises instead."""
    calls = iter(range(1000))

    def fake(a: str, b: str) -> None:
        if next(calls) == n:
            _raise_oserror(a, b)
        rename(a, b)

    return fake


def test_a_folder_of_mixed_builds_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an in-place rebuild killed between its renames used to leave: index.faiss of the new
    model beside meta.json of the old (same count and dimension). Answering from it gave wrong
    neighbours without a word; now it is refused by name."""
    old, new = embedding_file(tmp_path / "old.npz", 1), embedding_file(tmp_path / "new.npz", 2)
    for name, source in (("a", old), ("b", new)):
        assert main(["index", "--embeddings", str(source), "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    shutil.copyfile(tmp_path / "b" / "index.faiss", tmp_path / "a" / "index.faiss")
    code, err = search(tmp_path / "a", old, capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "mixes files of different index builds: index.faiss" in err
    # items.json changed in place (its size is the same) is caught by its digest.
    build(1).save(tmp_path / "c")
    items = json.loads((tmp_path / "c" / "items.json").read_text())
    items["labels"][0] = "b" if items["labels"][0] == "a" else "a"
    (tmp_path / "c" / "items.json").write_text(json.dumps(items))
    with pytest.raises(ValueError, match="mixes files .* items.json .*sha256 differ"):
        SearchIndex.load(tmp_path / "c")


def test_an_index_without_file_records_still_loads(tmp_path: Path) -> None:
    """Folders written before meta.json recorded its files keep working."""
    build(1).save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    del meta["files"]
    (tmp_path / "idx" / "meta.json").write_text(json.dumps(meta))
    assert version_of(tmp_path / "idx") == 1


def test_index_out_must_be_a_new_folder_or_an_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = embedding_file(tmp_path / "g.npz", 1)
    other = tmp_path / "papers"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["index", "--embeddings", str(emb), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "holds files that are not part of an index (notes.txt)" in err
    assert (other / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["index", "--embeddings", str(emb), "--out", str(afile)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    # An empty folder is fine, and a link to an index folder is followed (the link stays).
    (tmp_path / "empty").mkdir()
    assert main(["index", "--embeddings", str(emb), "--out", str(tmp_path / "empty")]) == 0
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    assert main(["index", "--embeddings", str(emb), "--out", str(tmp_path / "link")]) == 0
    assert (tmp_path / "link").is_symlink() and len(SearchIndex.load(tmp_path / "link")) == N


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_killed_runs_are_removed_and_a_live_runs_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = embedding_file(tmp_path / "g.npz", 1)
    out = tmp_path / "idx"
    assert main(["index", "--embeddings", str(emb), "--out", str(out)]) == 0
    host = files._host_tag()
    stale_dir = tmp_path / f".idx.{host}-{dead_pid()}-abc123.tmp"  # a killed run's new folder
    (stale_dir / "sub").mkdir(parents=True)
    (stale_dir / "index.faiss").write_bytes(b"partial")
    live_dir = tmp_path / f".idx.{host}-{os.getppid()}-def456.tmp"  # a running process's
    live_dir.mkdir()
    other_host = tmp_path / f".idx.00000000-{dead_pid()}-ghi789.tmp"  # another machine's
    other_host.mkdir()
    # what the older file-by-file save left inside the index folder
    (out / ".items.json.x1y2z3.tmp").write_text("{")
    assert main(["index", "--embeddings", str(emb), "--out", str(out)]) == 0
    assert not stale_dir.exists() and live_dir.exists() and other_host.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "index.faiss",
        "items.json",
        "meta.json",
        "updates.sqlite",
    ]
    # a missing index with an interrupted rebuild beside it: the message says so
    shutil.rmtree(out)
    build(1).save(live_dir)
    assert main(["search", "--index", str(out), str(emb)]) == 2
    assert "a rebuild was interrupted" in capsys.readouterr().err
