"""`vmfml serve` as a real uvicorn process on a loopback port, spoken to over HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_serves_searches_over_http(live_server: str, gallery) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as c:
        health = c.get("/api/health").json()
        assert health["count"] == 60 and health["limits"]["max_upload_bytes"] == 1 << 20
        hits = c.get("/api/search/item/3", params={"k": 4}).json()["results"]
        assert len(hits) == 4 and 3 not in [h["id"] for h in hits]
        r = c.post(
            "/api/search/image",
            files={"file": ("q.png", gallery.paths[8].read_bytes(), "image/png")},
        )
        assert r.json()["results"][0]["id"] == 8

        def by_vector(i: int) -> int:
            body = {"vector": gallery.reference[i].tolist(), "k": 1}
            return int(c.post("/api/search/vector", json=body).json()["results"][0]["id"])

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(by_vector, range(0, 60, 3))) == list(range(0, 60, 3))


@pytest.mark.parametrize("threads", [1, 2])
def test_searches_run_with_the_threads_asked_for(start_server, threads: int) -> None:  # noqa: ANN001
    """--threads reaches the OpenMP runtime of the searches (read in a worker thread): it must be
    in the environment before faiss and torch load. With 2 OpenMP threads on a busy 2-core
    machine a 100k flat search took 25 ms, with 1 thread 2.6 ms."""
    env = {"OMP_NUM_THREADS": "3"}  # what a user's shell may hold: --threads wins
    with start_server("--threads", str(threads), env=env) as base:
        assert httpx.get(f"{base}/api/health", timeout=30).json()["search_threads"] == threads


def _too_big(size: int) -> bytes:
    return np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()


def test_oversized_uploads_get_a_json_413_and_the_server_lives_on(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as c:
        r = c.post("/api/search/image", files={"file": ("big.png", _too_big(3 << 20), "image/png")})
        assert r.status_code == 413
        assert "files are limited to 1 MiB" in r.json()["detail"]

        # Without a Content-Length (chunked), the limit is hit while the body streams in.
        def chunks() -> Iterator[bytes]:
            head = b'--xx\r\nContent-Disposition: form-data; name="file"; filename="b.png"\r\n\r\n'
            yield head
            for _ in range(48):  # 3 MiB
                yield _too_big(64 << 10)

        r = c.post(
            "/api/search/image",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert r.status_code == 413 and "files are limited" in r.json()["detail"]
        assert c.get("/api/health").status_code == 200
        bmp = io.BytesIO()
        from PIL import Image

        Image.new("L", (28, 28), 128).save(bmp, format="BMP")
        ok = c.post("/api/search/image", files={"file": ("grey.bmp", bmp.getvalue(), "image/bmp")})
        assert ok.status_code == 200


def test_writable_server_adds_and_sees_cli_removals(
    serve_index,
    live_server: str,
    gallery,
    tmp_path,  # noqa: ANN001
) -> None:
    """`vmfml serve --writable` over a copy of the index: writes over HTTP are on disk when the
    server stops, and a `vmfml index remove` in another process shows at the next request.
    The session's server, started without --writable, refuses writes."""
    import dataclasses
    import shutil
    import subprocess
    import sys

    r = httpx.post(f"{live_server}/api/items", json={"vector": [1.0] * 32})
    assert r.status_code == 403 and "--writable" in r.json()["detail"]

    copy = dataclasses.replace(gallery, index_dir=tmp_path / "index")
    shutil.copytree(gallery.index_dir, copy.index_dir)
    with serve_index(copy, "--writable") as base:
        assert httpx.get(f"{base}/api/health").json()["writable"] is True
        added = httpx.post(f"{base}/api/items", json={"vector": [1.0] * 32, "label": "new"})
        assert added.status_code == 201 and added.json() == {"id": 60}
        cli = [sys.executable, "-m", "vmfml.cli", "index", "remove", "--index"]
        subprocess.run([*cli, str(copy.index_dir), "5"], check=True, capture_output=True)
        assert httpx.get(f"{base}/api/items/5").status_code == 404
        assert httpx.get(f"{base}/api/health").json()["count"] == 60
        assert httpx.delete(f"{base}/api/items/60").status_code == 200
    from vmfml.index.opener import open_gallery

    store = open_gallery(copy.index_dir)
    assert len(store) == 59 and store.get(60) is None and store.get(5) is None
    store.close()
