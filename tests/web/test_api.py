"""The HTTP API over a real small index, through FastAPI's TestClient (no network).

Search results are checked against brute force in float64 over embeddings computed
independently of the index (`Gallery.reference`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vmfml.web import ServeSettings, create_app
from vmfml.web.images import ThumbnailCache, encode_thumbnail

LOCAL = "http://127.0.0.1"  # the app accepts loopback Host headers only
TOL = 1e-4  # float32 index and model vs the float64 reference


def check_against_brute_force(
    hits: list[dict], reference: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None
) -> None:
    """The hits are the k best items by the float64 dot product, best first, with their scores.

    Near-ties may swap under float32, so the check is on scores: each hit's score is its true
    score, scores descend, and no item left out beats the k-th hit by more than TOL.
    """
    q = query / np.linalg.norm(query)
    true = reference @ q
    if exclude is not None:
        true[exclude] = -np.inf
    assert len(hits) == k
    ids = [h["id"] for h in hits]
    assert len(set(ids)) == k
    served = np.array([h["score"] for h in hits])
    np.testing.assert_allclose(served, true[ids], atol=TOL)
    assert np.all(np.diff(served) <= TOL)
    kth_best = np.sort(true)[::-1][k - 1]
    assert served[-1] >= kth_best - TOL


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


# ---- reading the index ------------------------------------------------------------------------


def test_health_reports_the_index(client: TestClient, gallery) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["count"] == len(gallery.paths) == 60
    assert body["dimension"] == gallery.reference.shape[1] == 32
    assert body["model"] == "small_cnn"
    assert body["limits"]["max_k"] == 50 and body["limits"]["default_k"] == 5


def test_items_listing_pages_through_the_gallery(client: TestClient, gallery) -> None:
    r = client.get("/api/items", params={"offset": 10, "limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 60 and body["offset"] == 10
    assert [it["id"] for it in body["items"]] == [10, 11, 12, 13, 14]
    assert [it["label"] for it in body["items"]] == gallery.labels[10:15]
    # Paths are shown relative to the gallery, never as the server's absolute paths.
    assert [it["path"] for it in body["items"]] == [
        p.relative_to(gallery.root).as_posix() for p in gallery.paths[10:15]
    ]
    assert body["items"][0]["thumbnail"] == "/api/thumbnail/10"
    assert (
        client.get("/api/items", params={"offset": 58, "limit": 5}).json()["items"][-1]["id"] == 59
    )
    assert client.get("/api/items", params={"offset": 60}).json()["items"] == []


def test_items_sample_is_random_distinct_and_repeatable(client: TestClient) -> None:
    a = client.get("/api/items/sample", params={"n": 12, "seed": 3}).json()["items"]
    b = client.get("/api/items/sample", params={"n": 12, "seed": 3}).json()["items"]
    c = client.get("/api/items/sample", params={"n": 12, "seed": 4}).json()["items"]
    ids = [it["id"] for it in a]
    assert ids == [it["id"] for it in b]
    assert ids != [it["id"] for it in c]
    assert len(set(ids)) == 12 and all(0 <= i < 60 for i in ids)
    # Not the first rows: a gallery sorted by class would show one class only.
    assert ids != list(range(12))
    everything = client.get("/api/items/sample", params={"n": 1000}).json()["items"]
    assert sorted(it["id"] for it in everything) == list(range(60))


def test_one_item(client: TestClient, gallery) -> None:
    body = client.get("/api/items/7").json()
    assert body["id"] == 7 and body["label"] == gallery.labels[7]


# ---- searching --------------------------------------------------------------------------------


@pytest.mark.parametrize("i", [0, 33])
def test_search_vector_matches_brute_force(client: TestClient, gallery, i: int) -> None:
    query = gallery.reference[i]
    r = client.post("/api/search/vector", json={"vector": query.tolist(), "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 7 and body["query"] == {"type": "vector"}
    hits = body["results"]
    assert hits[0]["id"] == i and hits[0]["score"] == pytest.approx(1.0, abs=TOL)
    assert hits[0]["label"] == gallery.labels[i]
    check_against_brute_force(hits, gallery.reference, query, 7)


def test_search_vector_normalizes_the_query(client: TestClient, gallery) -> None:
    query = np.random.default_rng(0).standard_normal(32) * 3.7
    hits = client.post("/api/search/vector", json={"vector": query.tolist()}).json()["results"]
    assert len(hits) == 5  # default_k of the fixture's settings
    check_against_brute_force(hits, gallery.reference, query, 5)
    assert all(-1 - TOL <= h["score"] <= 1 + TOL for h in hits)


@pytest.mark.parametrize("i", [4, 41])
def test_search_item_excludes_itself_and_matches_brute_force(
    client: TestClient, gallery, i: int
) -> None:
    r = client.get(f"/api/search/item/{i}", params={"k": 9})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["type"] == "item" and body["query"]["id"] == i
    assert i not in [h["id"] for h in body["results"]]
    check_against_brute_force(
        body["results"], gallery.reference, gallery.reference[i], 9, exclude=i
    )


def test_search_image_finds_the_uploaded_gallery_image(client: TestClient, gallery) -> None:
    i = 23
    r = client.post(
        "/api/search/image",
        files={"file": ("query.png", png_bytes(gallery.paths[i]), "image/png")},
        data={"k": "6"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"type": "image", "filename": "query.png", "width": 28, "height": 28}
    hits = body["results"]
    assert hits[0]["id"] == i and hits[0]["score"] == pytest.approx(1.0, abs=TOL)
    check_against_brute_force(hits, gallery.reference, gallery.reference[i], 6)


def test_search_image_accepts_other_formats_and_modes(client: TestClient, gallery) -> None:
    # The same pixels as an RGB JPEG-free BMP: grey -> RGB -> grey is exact, so the image is found.
    i = 50
    buffer = io.BytesIO()
    Image.fromarray(gallery.pixels[i]).convert("RGB").save(buffer, format="BMP")
    r = client.post("/api/search/image", files={"file": ("q.bmp", buffer.getvalue(), "image/bmp")})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == i


def test_k_larger_than_the_gallery_returns_everything(searcher, gallery) -> None:
    with TestClient(create_app(searcher, ServeSettings(max_k=100)), base_url=LOCAL) as c:
        by_item = c.get("/api/search/item/0", params={"k": 100}).json()["results"]
        by_vector = c.post(
            "/api/search/vector", json={"vector": gallery.reference[0].tolist(), "k": 100}
        )
    assert sorted(h["id"] for h in by_item) == list(range(1, 60))
    assert sorted(h["id"] for h in by_vector.json()["results"]) == list(range(60))


# ---- thumbnails -------------------------------------------------------------------------------


def test_thumbnail_is_the_gallery_image_and_is_cached(client: TestClient, gallery) -> None:
    r = client.get("/api/thumbnail/12")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    # A 28x28 image is not enlarged (the page scales it): the PNG holds exactly the gallery pixels.
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), gallery.pixels[12])
    cache = client.app.state.thumbnails  # type: ignore[attr-defined]
    assert cache.get((12, 160)) is not None
    etag = r.headers["etag"]
    again = client.get("/api/thumbnail/12", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    small = client.get("/api/thumbnail/12", params={"size": 16})
    assert Image.open(io.BytesIO(small.content)).size == (16, 16)


def test_encode_thumbnail_shrinks_photos_to_jpeg_and_keeps_alpha_in_png() -> None:
    y, x = np.mgrid[0:300, 0:400]
    photo = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    data, media = encode_thumbnail(photo, 160)
    assert media == "image/jpeg"
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == "JPEG" and decoded.size == (160, 120)
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    data, media = encode_thumbnail(rgba, 100)
    decoded = Image.open(io.BytesIO(data))
    assert media == "image/png" and decoded.mode == "RGBA" and decoded.size == (100, 75)
    assert np.asarray(decoded)[0, 0, 3] == 128


def test_thumbnail_cache_evicts_least_recently_used_past_its_byte_budget() -> None:
    cache = ThumbnailCache(max_bytes=10)
    cache.put((0, 1), (b"aaaa", "image/png", "e0"))
    cache.put((1, 1), (b"bbbb", "image/png", "e1"))
    assert cache.get((0, 1)) is not None  # 0 is now the most recently used
    cache.put((2, 1), (b"cccc", "image/png", "e2"))
    assert cache.get((1, 1)) is None and cache.get((0, 1)) is not None and len(cache) == 2
    cache.put((3, 1), (b"x" * 11, "image/png", "big"))  # larger than the budget: not kept
    assert cache.get((3, 1)) is None


class _StubIndex:
    """Items whose stored paths try to leave the gallery folder."""

    def __init__(self, paths: list[str], root: Path) -> None:
        self.items = [{"id": i, "path": p, "label": "x"} for i, p in enumerate(paths)]
        self.meta = {"dimension": 4, "gallery_root": str(root)}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int) -> dict | None:
        return self.items[i] if 0 <= i < len(self.items) else None


class _StubSearcher:
    model = None

    def __init__(self, index: _StubIndex) -> None:
        self.index = index


def test_thumbnail_refuses_files_outside_the_gallery(tmp_path: Path) -> None:
    root = tmp_path / "gallery"
    (root / "cls").mkdir(parents=True)
    Image.new("L", (8, 8), 200).save(root / "cls" / "ok.png")
    secret = tmp_path / "secret.png"
    Image.new("L", (8, 8), 0).save(secret)
    (root / "cls" / "link.png").symlink_to(secret)
    paths = [
        "cls/ok.png",
        "../secret.png",
        str(secret),
        "cls/link.png",
        "cls/../../secret.png",
        "cls/missing.png",
        str(root / "cls" / "ok.png"),
    ]
    app = create_app(_StubSearcher(_StubIndex(paths, root)), ServeSettings())  # type: ignore[arg-type]
    with TestClient(app, base_url=LOCAL) as c:
        codes = [c.get(f"/api/thumbnail/{i}").status_code for i in range(len(paths))]
        assert codes == [200, 403, 403, 403, 403, 404, 200]
        assert "outside the gallery" in c.get("/api/thumbnail/1").json()["detail"]
        # The absolute path of an item outside the gallery is not disclosed either.
        assert c.get("/api/items/2").json()["path"] == "secret.png"
        assert c.get("/api/items/6").json()["path"] == "cls/ok.png"
        # Traversal in the URL itself never reaches a file.
        assert c.get("/api/thumbnail/..%2F..%2Fsecret.png").status_code in (404, 422)
        assert c.get("/static/../../secret.png").status_code == 404
        assert c.get("/static/..%2F..%2Fsecret.png").status_code == 404


def test_thumbnail_without_a_gallery_root_says_how_to_give_one(tmp_path: Path) -> None:
    index = _StubIndex(["a.png"], tmp_path)
    index.meta["gallery_root"] = None
    app = create_app(_StubSearcher(index), ServeSettings())  # type: ignore[arg-type]
    with TestClient(app, base_url=LOCAL) as c:
        r = c.get("/api/thumbnail/0")
    assert r.status_code == 404 and "--gallery-root" in r.json()["detail"]


# ---- the page and the docs --------------------------------------------------------------------


def test_page_and_static_files_need_nothing_from_the_internet(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in r.text and "/static/style.css" in r.text
    # The browser itself refuses anything from elsewhere.
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name, kind in [
        ("app.js", "javascript"),
        ("style.css", "text/css"),
        ("index.html", "text/html"),
    ]:
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and kind in s.headers["content-type"]
        assert "http://" not in s.text and "https://" not in s.text and "//cdn" not in s.text


def test_openapi_schema_and_offline_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in [
        "/api/health",
        "/api/items",
        "/api/items/sample",
        "/api/items/{item_id}",
        "/api/thumbnail/{item_id}",
        "/api/search/image",
        "/api/search/item/{item_id}",
        "/api/search/vector",
    ]:
        assert path in schema["paths"], path
    upload = schema["paths"]["/api/search/image"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/search/vector" in docs.text
    assert "https://" not in docs.text and "http://" not in docs.text
    assert client.get("/redoc").status_code == 404


# ---- hostile input: each refused with a clear 4xx, and the server keeps serving --------------


def detail(r) -> str:  # noqa: ANN001
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


def test_upload_that_is_not_an_image_is_415(client: TestClient) -> None:
    r = client.post(
        "/api/search/image", files={"file": ("notes.txt", b"hello, not pixels", "text/plain")}
    )
    assert r.status_code == 415
    assert "notes.txt" in detail(r) and "not an image" in detail(r)
    empty = client.post("/api/search/image", files={"file": ("empty.png", b"", "image/png")})
    assert empty.status_code == 415
    assert client.get("/api/health").status_code == 200


def test_truncated_image_is_400(client: TestClient, gallery) -> None:
    data = png_bytes(gallery.paths[0])
    r = client.post(
        "/api/search/image", files={"file": ("cut.png", data[: len(data) // 2], "image/png")}
    )
    assert r.status_code == 400 and "damaged or truncated" in detail(r)
    assert client.get("/api/health").status_code == 200


def test_upload_over_the_size_limit_is_413(searcher, gallery) -> None:
    settings = ServeSettings(max_upload_mb=0.25)
    with TestClient(create_app(searcher, settings), base_url=LOCAL) as c:
        big = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
        r = c.post("/api/search/image", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "too large" in detail(r)
        # A small upload on the same server still works.
        ok = c.post(
            "/api/search/image", files={"file": ("q.png", png_bytes(gallery.paths[1]), "image/png")}
        )
        assert ok.status_code == 200 and ok.json()["results"][0]["id"] == 1


def _asgi_post(
    app, path: str, chunks: int, chunk_size: int, declare_length: bool
) -> tuple[int, dict, int]:  # noqa: ANN001
    """POST `chunks` body chunks straight into the ASGI app; return (status, json, chunks read)."""
    import anyio

    pulled = 0
    sent: list[dict] = []
    boundary = "b0undary"
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
    ]
    if declare_length:
        headers.append((b"content-length", str(chunks * chunk_size).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'.encode()

    async def receive() -> dict:
        nonlocal pulled
        if pulled >= chunks:
            return {"type": "http.disconnect"}
        body = head if pulled == 0 else b"\0" * chunk_size
        pulled += 1
        return {"type": "http.request", "body": body, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def test_upload_limit_is_checked_while_streaming(searcher) -> None:
    """A 32 MiB body against a 64 KiB limit: refused after reading about the limit, not all of it."""
    app = create_app(searcher, ServeSettings(max_upload_mb=1 / 16))
    chunk = 16 << 10
    chunks = 2048  # 32 MiB
    status, body, pulled = _asgi_post(app, "/api/search/image", chunks, chunk, declare_length=False)
    assert status == 413 and "files are limited to 0.0625 MiB (65536 bytes)" in body["detail"]
    limit = (64 << 10) + (64 << 10)  # the file limit plus the multipart allowance
    assert pulled <= limit // chunk + 2
    # A declared Content-Length over the limit is refused before reading any body.
    status, body, pulled = _asgi_post(app, "/api/search/image", chunks, chunk, declare_length=True)
    assert status == 413 and pulled == 0


def test_json_bodies_have_their_own_small_limit(client: TestClient) -> None:
    r = client.post(
        "/api/search/vector",
        content=b"[" + b"0.1," * 400_000 + b"0.1]",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "the limit is 1 MiB (1048576 bytes)" in detail(r)


def test_images_with_too_many_pixels_are_refused_before_decoding(searcher, gallery) -> None:
    with TestClient(create_app(searcher, ServeSettings(max_image_pixels=500)), base_url=LOCAL) as c:
        r = c.post(
            "/api/search/image", files={"file": ("q.png", png_bytes(gallery.paths[0]), "image/png")}
        )
    assert r.status_code == 413 and "28x28 = 784 pixels" in detail(r) and "500" in detail(r)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height grey pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(10_000, 5_000), (100_000, 100_000)])
def test_decompression_bombs_are_413(client: TestClient, size: tuple[int, int]) -> None:
    # 50 Mpx is under PIL's own warning threshold but over the server's 16 Mpx limit; 10 Gpx trips
    # PIL's DecompressionBombError at open. Neither is decoded (that would take GBs).
    r = client.post(
        "/api/search/image", files={"file": ("bomb.png", _png_header_only(*size), "image/png")}
    )
    assert r.status_code == 413 and "pixels" in detail(r)
    assert client.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"vector": [0.1] * 31}, "31 values, the index expects 32"),
        ({"vector": [0.1] * 33, "k": 3}, "33 values, the index expects 32"),
        ({"vector": []}, "0 values"),
        ({"vector": [0.0] * 32}, "zero length"),
        ({"vector": ["a"] * 32}, "vector.0"),
        ({"k": 3}, "vector: Field required"),
        ({"vector": [0.1] * 32, "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"vector": [0.1] * 32, "k": 51}, "k: Input should be less than or equal to 50"),
        ({"vector": [0.1] * 32, "k": 2.5}, "k:"),
        ({"vector": [0.1] * 32, "kk": 3}, "kk: Extra inputs are not permitted"),
        ([0.1] * 32, "request body"),
    ],
)
def test_bad_vector_queries_are_422(client: TestClient, body: object, needle: str) -> None:
    r = client.post("/api/search/vector", json=body)
    assert r.status_code == 422, r.text
    assert needle in detail(r)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ('{"vector": [NaN' + ", 0.1" * 31 + "]}", "NaN or infinite values (at positions [0])"),
        (
            '{"vector": [0.1, Infinity' + ", 0.1" * 30 + "]}",
            "NaN or infinite values (at positions [1])",
        ),
        ('{"vector": [1e400' + ", 0.1" * 31 + "]}", "NaN or infinite"),
        ('{"vector": [0.1, 0.2', "malformed JSON"),
        ("not json at all", "malformed JSON"),
    ],
)
def test_non_finite_and_malformed_json_are_422(client: TestClient, raw: str, needle: str) -> None:
    r = client.post("/api/search/vector", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert needle in detail(r)
    assert client.get("/api/health").status_code == 200


@pytest.mark.parametrize("k", ["0", "51", "-3", "abc", "1.5"])
def test_k_out_of_range_is_422_everywhere(client: TestClient, gallery, k: str) -> None:
    by_item = client.get("/api/search/item/0", params={"k": k})
    assert by_item.status_code == 422 and detail(by_item).startswith("k:")
    by_image = client.post(
        "/api/search/image",
        files={"file": ("q.png", png_bytes(gallery.paths[0]), "image/png")},
        data={"k": k},
    )
    assert by_image.status_code == 422 and detail(by_image).startswith("k:")


@pytest.mark.parametrize("path", ["/api/search/item/{}", "/api/thumbnail/{}", "/api/items/{}"])
def test_unknown_ids_are_404_and_non_integers_422(client: TestClient, path: str) -> None:
    for bad in (60, 10**6, -1):
        r = client.get(path.format(bad))
        assert r.status_code == 404 and detail(r) == (
            f"unknown item id {bad}: the gallery holds no item with this id (never given, "
            "or removed)"
        )
    r = client.get(path.format("abc"))
    assert r.status_code == 422 and "item_id" in detail(r)


def test_image_search_without_a_file_or_as_json_is_422(client: TestClient) -> None:
    assert client.post("/api/search/image", data={"k": "3"}).status_code == 422
    r = client.post("/api/search/image", json={"vector": [1, 2]})
    assert r.status_code == 422 and "file" in detail(r)


# ---- settings and the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"max_upload_mb": 0}, "max_upload_mb"),
        ({"max_k": 0}, "max_k"),
        ({"default_k": 20, "max_k": 10}, "default_k"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
        ({"thumbnail_size": 4}, "thumbnail_size"),
    ],
)
def test_settings_refuse_bad_values(options: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        ServeSettings(**options)


def test_cli_help_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from vmfml.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--index", "--host", "--port", "--max-upload-mb", "--max-k"):
        assert option in out
    assert main(["serve", "--index", str(tmp_path / "nowhere")]) == 2
    assert "index folder not found" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be in [0, 65535]" in capsys.readouterr().err
    assert main(["serve", "--index", str(tmp_path), "--max-k", "0"]) == 2
    assert "max_k must be >= 1" in capsys.readouterr().err
