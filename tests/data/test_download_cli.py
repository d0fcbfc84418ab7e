"""`--download` on the command line: Fashion-MNIST fetched from a web server on 127.0.0.1 (its
address given by $VMFML_FASHION_MNIST_URL, as a mirror would be), serving the Debian package's
files (whose checksums stand in for the official ones: Debian recompressed them)."""

from __future__ import annotations

import functools
import hashlib
import importlib
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vmfml.data.registry import download_dataset

# The module (vmfml.data re-exports a function of the same name).
fm = importlib.import_module("vmfml.data.fashion_mnist")

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture()
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A local mirror of the four files; yields the list of paths requested from it."""
    if not all((DEBIAN / name).is_file() for names in fm.FILES.values() for name in names):
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    requested: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(DEBIAN))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(fm.URL_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    md5 = {
        name: hashlib.md5((DEBIAN / name).read_bytes()).hexdigest()
        for names in fm.FILES.values()
        for name in names
    }
    monkeypatch.setattr(fm, "MD5", md5)
    try:
        yield requested
    finally:
        server.shutdown()
        server.server_close()


def test_download_url_is_the_mirror_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fm.URL_ENV, raising=False)
    assert fm.download_url() == fm.URL
    monkeypatch.setenv(fm.URL_ENV, "http://127.0.0.1:9/files")
    assert fm.download_url() == "http://127.0.0.1:9/files/"


def test_sets_without_a_downloader_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="animal-mnist has no downloader.*scripts/setup.sh"):
        download_dataset("animal-mnist")
    with pytest.raises(ValueError, match="leave --download out"):
        download_dataset(str(tmp_path))


@pytest.mark.slow
def test_train_download_fetches_fashion_mnist_then_trains(
    tmp_path: Path, mirror: list[str], run_cli: Callable[..., Any]
) -> None:
    root = tmp_path / "data"
    settings = [
        *("--data", "fashion-mnist", "--data-root", root, "--train-subset", 300),
        *("--epochs", 1, "--val-fraction", 0, "--plots", "false", "--progress", "false"),
        *("--eval-ks", 1, "--out-dir", tmp_path / "run"),
    ]
    # Without --download: the message names the option of this command line, not Python's.
    missing = run_cli("train", *settings)
    assert missing.code == 2
    assert "pass --download to vmfml train" in missing.err and "download=True" in missing.err
    assert mirror == []

    done = run_cli("train", "--download", *settings)
    assert done.code == 0, done.err
    assert sorted(mirror) == sorted(f"/{n}" for names in fm.FILES.values() for n in names)
    assert f"downloaded fashion-mnist into {root}" in done.out
    assert "recall@1" in done.out and (tmp_path / "run" / "metrics.json").is_file()

    # The files are there now: another --download fetches nothing.
    assert download_dataset("fashion-mnist", root) is None
    assert len(mirror) == 4
