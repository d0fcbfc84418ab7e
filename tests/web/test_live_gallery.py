"""The server over a live gallery (issue 22): every route addresses items by their stable id, sees
removals made while it runs, and with --writable adds and removes items over HTTP.

Each test works on its own copy of the conftest index, so the session's index stays intact.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vmfml.cli import main
from vmfml.index.opener import open_gallery
from vmfml.index.searcher import Searcher
from vmfml.web import ServeSettings, create_app

LOCAL = "http://127.0.0.1"
TOL = 1e-4


@pytest.fixture()
def folder(gallery, tmp_path: Path) -> Path:  # noqa: ANN001
    copy = tmp_path / "index"
    shutil.copytree(gallery.index_dir, copy)
    return copy


def make_client(folder: Path, **settings: object) -> TestClient:
    searcher = Searcher.from_index(folder)
    app = create_app(searcher, ServeSettings(max_k=100, default_k=5, **settings))  # type: ignore[arg-type]
    return TestClient(app, base_url=LOCAL)


@pytest.fixture()
def writable(folder: Path) -> Iterator[TestClient]:
    with make_client(folder, writable=True) as c:
        yield c


def relative(gallery, i: int) -> str:  # noqa: ANN001
    return gallery.paths[i].relative_to(gallery.root).as_posix()


def unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).tolist()


# ---- stable ids ------------------------------------------------------------------------------


def test_every_route_answers_by_stable_id_after_removals_while_it_runs(
    folder: Path,
    gallery,  # noqa: ANN001
) -> None:
    with make_client(folder) as c:
        assert c.get("/api/health").json()["count"] == 60
        assert c.get("/api/thumbnail/3").status_code == 200  # cached before the removal
        # Removed while the server holds the gallery: by another store, and by the CLI.
        other = open_gallery(folder)
        assert other.remove([3]) == [3]
        other.close()
        assert main(["index", "remove", "--index", str(folder), "10"]) == 0
        removed = {3, 10}
        live = [i for i in range(60) if i not in removed]

        assert c.get("/api/health").json()["count"] == 58
        for path in ("/api/items/{}", "/api/thumbnail/{}", "/api/search/item/{}"):
            for i in removed:
                r = c.get(path.format(i))
                assert r.status_code == 404, path
                assert r.json()["detail"].startswith(f"unknown item id {i}:")
        # A later id answers with its own item, not the one now at its position.
        for i in (11, 59):
            item = c.get(f"/api/items/{i}").json()
            assert item["id"] == i and item["path"] == relative(gallery, i)
            assert item["label"] == gallery.labels[i]
        thumb = Image.open(io.BytesIO(c.get("/api/thumbnail/11?size=28").content))
        np.testing.assert_array_equal(np.asarray(thumb.convert("L")), gallery.pixels[11])

        listing = c.get("/api/items", params={"limit": 1000}).json()
        assert listing["total"] == 58 and [it["id"] for it in listing["items"]] == live
        assert [it["path"] for it in listing["items"]] == [relative(gallery, i) for i in live]
        page = c.get("/api/items", params={"offset": 3, "limit": 2}).json()
        assert [it["id"] for it in page["items"]] == [4, 5]
        sample = c.get("/api/items/sample", params={"n": 1000, "seed": 1}).json()
        assert sample["total"] == 58 and sorted(it["id"] for it in sample["items"]) == live

        # Searches never return a removed item, and rank by the item's own embedding.
        hits = c.get("/api/search/item/11", params={"k": 100}).json()["results"]
        assert sorted(h["id"] for h in hits) == [i for i in live if i != 11]
        true = gallery.reference @ (gallery.reference[11] / np.linalg.norm(gallery.reference[11]))
        best = max((i for i in live if i != 11), key=lambda i: true[i])
        assert abs(hits[0]["score"] - true[best]) < TOL
        by_vector = c.post(
            "/api/search/vector", json={"vector": gallery.reference[3].tolist(), "k": 100}
        ).json()["results"]
        assert len(by_vector) == 58 and removed.isdisjoint(h["id"] for h in by_vector)


# ---- writes ----------------------------------------------------------------------------------


def test_add_by_vector_is_found_first_by_the_next_search(writable: TestClient) -> None:
    v = unit(np.random.default_rng(0).standard_normal(32))
    r = writable.post(
        "/api/items",
        json={"vector": v, "label": "shoe", "path": "shop7/a.png", "metadata": {"camera": 3}},
    )
    assert r.status_code == 201 and r.json() == {"id": 60}  # the next id, never a reused one
    hits = writable.post("/api/search/vector", json={"vector": v, "k": 3}).json()["results"]
    assert hits[0]["id"] == 60 and abs(hits[0]["score"] - 1) < TOL
    assert hits[0]["label"] == "shoe" and hits[0]["path"] == "shop7/a.png"
    assert writable.get("/api/items/60").json()["label"] == "shoe"
    assert writable.get("/api/health").json()["count"] == 61
    # The vector is normalized here: a scaled copy lands on the same direction.
    scaled = writable.post("/api/items", json={"vector": [10 * x for x in v]})
    assert scaled.status_code == 201 and scaled.json() == {"id": 61}
    top = writable.post("/api/search/vector", json={"vector": v, "k": 2}).json()["results"]
    assert {h["id"] for h in top} == {60, 61} and all(abs(h["score"] - 1) < TOL for h in top)


def test_add_by_image_embeds_it_with_the_index_model(
    writable: TestClient,
    folder: Path,
    gallery,  # noqa: ANN001
) -> None:
    r = writable.post(
        "/api/items",
        files={"file": ("q.png", gallery.paths[5].read_bytes(), "image/png")},
        data={"label": "added", "path": "new/q.png", "metadata": '{"shop": 7, "ok": true}'},
    )
    assert r.status_code == 201, r.text
    new = r.json()["id"]
    assert new == 60
    store = open_gallery(folder)  # what is on disk, read by another store
    stored = store.reconstruct(new)
    assert store.get(new) == {
        "id": 60, "path": "new/q.png", "label": "added", "meta": {"shop": 7, "ok": True},
    }  # fmt: skip
    store.close()
    ref = gallery.reference[5] / np.linalg.norm(gallery.reference[5])
    np.testing.assert_allclose(stored, ref, atol=TOL)
    hits = writable.get("/api/search/item/5", params={"k": 1}).json()["results"]
    assert hits[0]["id"] == new


def test_delete_then_404_and_search_no_longer_returns_it(
    writable: TestClient,
    gallery,  # noqa: ANN001
) -> None:
    v = gallery.reference[7].tolist()
    assert (
        writable.post("/api/search/vector", json={"vector": v, "k": 1}).json()["results"][0]["id"]
        == 7
    )
    r = writable.delete("/api/items/7")
    assert r.status_code == 200 and r.json() == {"removed": 7}
    assert writable.get("/api/items/7").status_code == 404
    hits = writable.post("/api/search/vector", json={"vector": v, "k": 100}).json()["results"]
    assert 7 not in {h["id"] for h in hits} and len(hits) == 59
    assert writable.get("/api/health").json()["count"] == 59
    for i in (7, 60, 10**6):
        again = writable.delete(f"/api/items/{i}")
        assert again.status_code == 404 and f"unknown item id {i}" in again.json()["detail"]
    # The removed id is never given again.
    added = writable.post("/api/items", json={"vector": v})
    assert added.json() == {"id": 60}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"vector": [1.0] * 31}, "31 values, the index expects 32"),
        ({"vector": [0.0] * 32}, "zero length"),
        ({"vector": [1.0] * 32, "label": 5}, "label"),
        ({"vector": [1.0] * 32, "metadata": {"a": [1]}}, "metadata"),
        ({"vector": [1.0] * 32, "id": 3}, "id"),
        ({"vector": ["1"] * 32}, "vector"),
        ({"label": "x"}, "vector"),
    ],
)
def test_bad_items_are_422_and_nothing_is_added(
    writable: TestClient, body: dict, needle: str
) -> None:
    r = writable.post("/api/items", json=body)
    assert r.status_code == 422 and needle in r.json()["detail"], r.text
    assert writable.get("/api/health").json()["count"] == 60


def test_non_finite_values_and_other_bodies_are_refused(writable: TestClient, gallery) -> None:  # noqa: ANN001
    nan = '{"vector": [NaN' + ", 1" * 31 + "]}"
    r = writable.post("/api/items", content=nan, headers={"content-type": "application/json"})
    assert r.status_code == 422
    meta = '{"vector": [1' + ", 1" * 31 + '], "metadata": {"x": Infinity}}'
    r = writable.post("/api/items", content=meta, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "metadata.x" in r.json()["detail"]
    r = writable.post("/api/items", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    files = {"file": ("q.png", gallery.paths[0].read_bytes(), "image/png")}
    r = writable.post("/api/items", files=files, data={"metadata": "[1]"})
    assert r.status_code == 422 and "metadata" in r.json()["detail"]
    r = writable.post("/api/items", files=files, data={"colour": "red"})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    r = writable.post("/api/items", files={"file": ("t.txt", b"not an image", "text/plain")})
    assert r.status_code == 415
    assert writable.get("/api/health").json()["count"] == 60


def test_writes_are_refused_unless_writable(folder: Path) -> None:
    with make_client(folder) as c:
        assert c.get("/api/health").json()["writable"] is False
        r = c.post("/api/items", json={"vector": [1.0] * 32})
        assert r.status_code == 403 and "--writable" in r.json()["detail"]
        r = c.delete("/api/items/0")
        assert r.status_code == 403 and "--writable" in r.json()["detail"]
        assert c.get("/api/items/0").status_code == 200
        assert c.get("/api/health").json()["count"] == 60


def test_upload_limit_covers_adding_an_image(folder: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(
        buffer, "PNG"
    )
    with make_client(folder, writable=True, max_upload_mb=0.01) as c:
        r = c.post("/api/items", files={"file": ("big.png", buffer.getvalue(), "image/png")})
        assert r.status_code == 413 and "upload too large" in r.json()["detail"]
        assert c.get("/api/health").json()["count"] == 60


def test_writes_from_a_foreign_origin_are_403(writable: TestClient) -> None:
    evil = {"origin": "http://evil.example"}
    r = writable.post("/api/items", json={"vector": [1.0] * 32}, headers=evil)
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert writable.delete("/api/items/0", headers=evil).status_code == 403
    assert writable.get("/api/items/0").status_code == 200
    assert writable.get("/api/health").json()["count"] == 60
    same = writable.post("/api/items", json={"vector": [1.0] * 32}, headers={"origin": LOCAL})
    assert same.status_code == 201


def test_writes_need_the_api_key_when_one_is_set(folder: Path) -> None:
    with make_client(folder, writable=True, api_key="sesame") as c:
        assert c.post("/api/items", json={"vector": [1.0] * 32}).status_code == 401
        assert c.delete("/api/items/0").status_code == 401
        key = {"authorization": "Bearer sesame"}
        r = c.post("/api/items", json={"vector": [1.0] * 32}, headers=key)
        assert r.status_code == 201
        assert c.delete("/api/items/0", headers=key).status_code == 200
        assert c.get("/api/health").json()["count"] == 60


# ---- filters ---------------------------------------------------------------------------------


def test_vector_and_image_search_take_a_where_filter(
    writable: TestClient,
    gallery,  # noqa: ANN001
) -> None:
    label = gallery.labels[20]
    v = gallery.reference[0].tolist()  # of another class than item 20
    hits = writable.post(
        "/api/search/vector", json={"vector": v, "k": 100, "where": {"label": label}}
    ).json()["results"]
    wanted = {i for i in range(60) if gallery.labels[i] == label}
    assert {h["id"] for h in hits} == wanted and 0 not in wanted
    prefix = f"{gallery.paths[20].parent}/"  # the path as the index stores it
    by_prefix = writable.post(
        "/api/search/vector", json={"vector": v, "k": 100, "where": {"path_prefix": prefix}}
    ).json()["results"]
    assert (
        {h["id"] for h in by_prefix}
        == {i for i in range(60) if str(gallery.paths[i]).startswith(prefix)}
        == wanted
    )
    added = writable.post(
        "/api/items", json={"vector": unit(-gallery.reference[0]), "metadata": {"camera": 3}}
    ).json()["id"]
    only = writable.post(
        "/api/search/vector", json={"vector": v, "k": 5, "where": {"meta": {"camera": 3}}}
    ).json()["results"]
    assert [h["id"] for h in only] == [added]  # the farthest item, the only one that passes
    wrong_type = writable.post(
        "/api/search/vector", json={"vector": v, "k": 5, "where": {"meta": {"camera": "3"}}}
    ).json()["results"]
    assert wrong_type == []
    files = {"file": ("q.png", gallery.paths[0].read_bytes(), "image/png")}
    by_image = writable.post(
        "/api/search/image", files=files, data={"k": "100", "where": f'{{"label": "{label}"}}'}
    ).json()["results"]
    assert {h["id"] for h in by_image} == wanted


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ({"colour": "red"}, "colour"),
        ({"label": 3}, "label"),
        ({"label": ""}, "label"),
        ({"meta": {"a b": 1}}, "bad name"),
        ({"meta": {"x": [1]}}, "meta"),
        ("label=shoe", "where"),
    ],
)
def test_bad_filters_are_422(writable: TestClient, gallery, where: object, needle: str) -> None:  # noqa: ANN001
    r = writable.post("/api/search/vector", json={"vector": [1.0] * 32, "where": where})
    assert r.status_code == 422 and needle in r.json()["detail"], r.text
    files = {"file": ("q.png", gallery.paths[0].read_bytes(), "image/png")}
    r = writable.post("/api/search/image", files=files, data={"where": "{not json"})
    assert r.status_code == 422 and "where" in r.json()["detail"], r.text


def test_a_json_item_keeps_the_small_json_limit(writable: TestClient) -> None:
    """/api/items takes uploads, but only a multipart body gets the upload limit."""
    r = writable.post(
        "/api/items",
        content=b'{"vector": [' + b"0.1," * 400_000 + b"0.1]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "the limit is 1 MiB" in r.json()["detail"]
    assert writable.get("/api/health").json()["count"] == 60


def test_the_api_schema_describes_the_write_routes(writable: TestClient) -> None:
    schema = writable.get("/openapi.json").json()
    paths = schema["paths"]
    body = paths["/api/items"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "vector" in body["application/json"]["schema"]["required"]
    assert "delete" in paths["/api/items/{item_id}"]
    vector_query = schema["components"]["schemas"]["VectorQuery"]
    assert (
        "where" in vector_query["properties"] and "WhereFilter" in schema["components"]["schemas"]
    )
