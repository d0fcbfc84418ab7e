"""The checks at the server's boundary, through FastAPI's TestClient: Host header, Origin, API key,
decode slots, exact JSON types, query parameters, the upload's format; and `vmfml serve`'s own
refusals (non-loopback without a key, a port in use, a missing gallery folder)."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import EpsImagePlugin, Image

from vmfml.web import ServeSettings, create_app

LOCAL = "http://127.0.0.1"
KEY = "k3y-with-some-length-0123456789"


def upload(gallery, i: int = 0) -> dict:  # noqa: ANN001
    return {"file": ("q.png", gallery.paths[i].read_bytes(), "image/png")}


# ---- Host header (DNS rebinding) --------------------------------------------------------------


def test_a_foreign_host_header_is_400(searcher) -> None:
    app = create_app(searcher, ServeSettings())
    with TestClient(app, base_url="http://evil.example") as c:
        assert c.get("/api/health").status_code == 400
        assert c.get("/").status_code == 400
    for base in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/api/health").status_code == 200, base
    more = create_app(searcher, ServeSettings(allowed_hosts=("127.0.0.1", "search.lan")))
    with TestClient(more, base_url="http://search.lan:8000") as c:
        assert c.get("/api/health").status_code == 200


# ---- Origin (cross-site posts) ----------------------------------------------------------------


def test_a_foreign_origin_cannot_post(client: TestClient, gallery) -> None:
    body = {"vector": gallery.reference[3].tolist(), "k": 2}
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1"):
        r = client.post("/api/search/vector", json=body, headers={"Origin": origin})
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], origin
        r = client.post("/api/search/image", files=upload(gallery), headers={"Origin": origin})
        assert r.status_code == 403, origin
    # Its own origin, or none (curl, scripts), may post; a foreign origin may still read.
    assert (
        client.post("/api/search/vector", json=body, headers={"Origin": LOCAL}).status_code == 200
    )
    assert client.post("/api/search/vector", json=body).status_code == 200
    assert client.post("/api/search/image", files=upload(gallery)).status_code == 200
    read = client.get("/api/items/1", headers={"Origin": "http://evil.example"})
    assert read.status_code == 200


# ---- API key ----------------------------------------------------------------------------------


def test_with_a_key_every_api_route_but_health_needs_it(searcher, gallery) -> None:
    app = create_app(searcher, ServeSettings(api_key=KEY))
    assert KEY not in repr(ServeSettings(api_key=KEY))
    good = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/").status_code == 200  # the page itself, which then asks for the key
        for method, path, kwargs in [
            ("GET", "/api/items", {}),
            ("GET", "/api/items/sample", {}),
            ("GET", "/api/items/3", {}),
            ("GET", "/api/thumbnail/3", {}),
            ("GET", "/api/search/item/3", {}),
            ("POST", "/api/search/vector", {"json": {"vector": [0.1] * 32}}),
            ("POST", "/api/search/image", {"files": upload(gallery)}),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                r = c.request(method, path, headers=headers, **kwargs)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer" in r.json()["detail"]
            assert c.request(method, path, headers=good, **kwargs).status_code == 200, path


def test_serve_reads_the_key_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmfml.web.commands import _read_api_key

    monkeypatch.delenv("VMFML_API_KEY", raising=False)
    assert _read_api_key(None) is None
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n")
    assert _read_api_key(str(key_file)) == KEY
    monkeypatch.setenv("VMFML_API_KEY", f" {KEY}2 ")
    assert _read_api_key(None) == f"{KEY}2"
    with pytest.raises(ValueError, match="not both"):
        _read_api_key(str(key_file))
    monkeypatch.setenv("VMFML_API_KEY", "")
    with pytest.raises(ValueError, match="empty"):
        _read_api_key(None)
    (tmp_path / "empty").write_text("\n")
    monkeypatch.delenv("VMFML_API_KEY")
    with pytest.raises(ValueError, match="is empty"):
        _read_api_key(str(tmp_path / "empty"))


def test_serve_refuses_a_non_loopback_address_without_a_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vmfml.cli import main

    monkeypatch.delenv("VMFML_API_KEY", raising=False)
    nowhere = str(tmp_path / "nowhere")
    assert main(["serve", "--index", nowhere, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 is reachable from other machines: give an API key" in err
    # With a key (file or environment) or --no-auth, the start goes on (to the missing index).
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    assert main(["serve", "--index", nowhere, "--host", "0.0.0.0", "--no-auth"]) == 2
    assert "index folder not found" in capsys.readouterr().err
    assert (
        main(["serve", "--index", nowhere, "--host", "0.0.0.0", "--api-key-file", str(key_file)])
        == 2
    )
    assert "index folder not found" in capsys.readouterr().err
    monkeypatch.setenv("VMFML_API_KEY", KEY)
    assert main(["serve", "--index", nowhere, "--host", "0.0.0.0"]) == 2
    assert "index folder not found" in capsys.readouterr().err
    assert main(["serve", "--index", nowhere, "--no-auth"]) == 2
    assert "--no-auth and an API key contradict" in capsys.readouterr().err


# ---- decode slots -----------------------------------------------------------------------------


class _HeldSearcher:
    """The real searcher, whose image searches wait until the test lets them go."""

    def __init__(self, searcher) -> None:  # noqa: ANN001
        self._searcher = searcher
        self.index = searcher.index
        self.model = searcher.model
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def search_image(self, image, k):  # noqa: ANN001, ANN201
        self.entered.release()
        assert self.release.wait(30)
        return self._searcher.search_image(image, k)

    def search_id(self, i, k):  # noqa: ANN001, ANN201
        return self._searcher.search_id(i, k)

    def search_vector(self, v, k):  # noqa: ANN001, ANN201
        return self._searcher.search_vector(v, k)


def test_with_every_decode_slot_busy_an_upload_gets_503_and_retry_after(searcher, gallery) -> None:
    held = _HeldSearcher(searcher)
    settings = ServeSettings(decode_slots=2, decode_wait_s=0.5)
    with TestClient(create_app(held, settings), base_url=LOCAL) as c:  # type: ignore[arg-type]
        answers: list[int] = []
        first = [
            threading.Thread(
                target=lambda: answers.append(
                    c.post("/api/search/image", files=upload(gallery)).status_code
                )
            )
            for _ in range(2)
        ]
        for t in first:
            t.start()
        assert held.entered.acquire(timeout=30) and held.entered.acquire(timeout=30)
        busy = c.post("/api/search/image", files=upload(gallery))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy decoding other images (2 at a time)" in busy.json()["detail"]
        assert c.get("/api/search/item/1").status_code == 200  # searches without decoding go on
        held.release.set()
        for t in first:
            t.join(30)
        assert answers == [200, 200]
        assert c.post("/api/search/image", files=upload(gallery)).status_code == 200


# ---- what an upload may be --------------------------------------------------------------------


def test_an_eps_upload_is_415_and_never_decoded(client: TestClient, monkeypatch) -> None:
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(1))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\nshowpage\n"
    for name in ("q.eps", "q.png"):
        r = client.post("/api/search/image", files={"file": (name, eps, "image/png")})
        assert r.status_code == 415 and "supported format (JPEG, PNG" in r.json()["detail"]
    assert opened == []


def test_a_large_jpeg_upload_is_decoded_reduced(searcher) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (90, 30, 200)).save(buffer, format="JPEG")
    with TestClient(
        create_app(searcher, ServeSettings(max_image_pixels=40_000)), base_url=LOCAL
    ) as c:
        r = c.post(
            "/api/search/image", files={"file": ("big.jpg", buffer.getvalue(), "image/jpeg")}
        )
    assert r.status_code == 200, r.text
    assert (r.json()["query"]["width"], r.json()["query"]["height"]) == (200, 150)


# ---- exact JSON types and query parameters ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"k": True}, "k: Input should be a valid integer"),
        ({"k": "5"}, "k: Input should be a valid integer"),
        ({"k": 5.0}, "k: Input should be a valid integer"),
        ({"vector": [True] * 32}, "vector.0: Input should be a valid number"),
        ({"vector": ["0.1"] * 32}, "vector.0: Input should be a valid number"),
    ],
)
def test_json_types_are_exact(client: TestClient, gallery, body: dict, needle: str) -> None:
    r = client.post("/api/search/vector", json={"vector": gallery.reference[0].tolist(), **body})
    assert r.status_code == 422 and needle in r.json()["detail"]


def test_huge_and_tiny_vectors_keep_their_direction(client: TestClient, gallery) -> None:
    direction = gallery.reference[7] / np.abs(gallery.reference[7]).max()
    expected = client.post("/api/search/vector", json={"vector": direction.tolist()}).json()
    for scale in (1e308, 1e-300, 5e-324 / np.abs(direction).min()):
        r = client.post("/api/search/vector", json={"vector": (direction * scale).tolist()})
        assert r.status_code == 200, (scale, r.text)
        assert [h["id"] for h in r.json()["results"]] == [h["id"] for h in expected["results"]]


def test_image_search_honours_k_in_the_query(client: TestClient, gallery) -> None:
    r = client.post("/api/search/image", params={"k": 3}, files=upload(gallery))
    assert r.status_code == 200 and r.json()["k"] == 3 and len(r.json()["results"]) == 3
    same = client.post("/api/search/image", params={"k": 3}, data={"k": "3"}, files=upload(gallery))
    assert len(same.json()["results"]) == 3
    both = client.post("/api/search/image", params={"k": 3}, data={"k": "4"}, files=upload(gallery))
    assert both.status_code == 422 and "given twice" in both.json()["detail"]
    bad = client.post("/api/search/image", params={"k": 0}, files=upload(gallery))
    assert bad.status_code == 422 and bad.json()["detail"].startswith("k:")


@pytest.mark.parametrize(
    ("method", "path", "takes"),
    [
        ("GET", "/api/items?offset=2&offst=3", "limit, offset"),
        ("GET", "/api/items/sample?n=2&sed=1", "n, seed"),
        ("GET", "/api/items/1?k=3", "no query parameters"),
        ("GET", "/api/search/item/1?k=2&nprobe=9", "k"),
        ("GET", "/api/thumbnail/1?sz=32", "size"),
        ("GET", "/api/health?verbose=1", "no query parameters"),
        ("POST", "/api/search/vector?k=3", "no query parameters"),
    ],
)
def test_unknown_query_parameters_are_422(
    client: TestClient, method: str, path: str, takes: str
) -> None:
    kwargs = {"json": {"vector": [0.1] * 32}} if method == "POST" else {}
    r = client.request(method, path, **kwargs)
    assert r.status_code == 422, r.text
    assert "unknown query parameter(s)" in r.json()["detail"] and takes in r.json()["detail"]


# ---- `vmfml serve`'s command line -------------------------------------------------------------


def test_serve_refuses_bad_settings_in_one_line(
    capsys: pytest.CaptureFixture[str], gallery, tmp_path: Path
) -> None:
    from vmfml.cli import main

    index = str(gallery.index_dir)
    for value in ("inf", "nan", "-1"):
        with pytest.raises(SystemExit) as exit_:
            main(["serve", "--index", index, "--max-upload-mb", value])
        assert exit_.value.code == 2
        assert "--max-upload-mb: expected a finite number > 0" in capsys.readouterr().err
    assert main(["serve", "--index", index, "--gallery-root", str(tmp_path / "nowhere")]) == 2
    assert "--gallery-root" in capsys.readouterr().err
    with pytest.raises(ValueError, match="finite"):
        ServeSettings(max_upload_mb=float("inf"))
    with pytest.raises(FileNotFoundError, match="gallery folder not found"):
        create_app(_searcher_of(index), ServeSettings(gallery_root=tmp_path / "nowhere"))


def _searcher_of(index: str):  # noqa: ANN202
    from vmfml.index.searcher import Searcher

    return Searcher.from_index(index)


def test_a_port_in_use_is_one_line_and_no_url(capsys: pytest.CaptureFixture[str], gallery) -> None:
    from vmfml.cli import main

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["serve", "--index", str(gallery.index_dir), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"vmfml serve: error: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "http://" not in err and "Traceback" not in err


def test_the_body_deadline_ends_with_the_body() -> None:
    """The deadline covers the body only: a response that later waits on `receive` for a
    disconnect (Starlette's streaming responses do) is not cut off."""
    import anyio
    from fastapi import HTTPException

    from vmfml.web.middleware import BodyTimeoutMiddleware

    async def client_receive_fast() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        assert (await receive())["body"] == b"{}"
        await anyio.sleep(0.4)  # past the deadline
        await receive()  # waiting for a disconnect: no 408 now

    async def nothing(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
    anyio.run(BodyTimeoutMiddleware(app, seconds=0.2), scope, client_receive_fast, nothing)

    async def client_receive_slow() -> dict:
        await anyio.sleep(5)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def reads_body(scope, receive, send) -> None:  # noqa: ANN001
        await receive()

    with pytest.raises(HTTPException) as refused:
        anyio.run(
            BodyTimeoutMiddleware(reads_body, seconds=0.2), scope, client_receive_slow, nothing
        )
    assert refused.value.status_code == 408


def test_the_hosts_answered_follow_host_and_allowed_hosts() -> None:
    from vmfml.web.commands import allowed_hosts

    loopback = ("127.0.0.1", "localhost", "::1", "[::1]")
    assert allowed_hosts("127.0.0.1", "") == loopback
    assert allowed_hosts("0.0.0.0", "") == loopback  # a wildcard names no host: say which
    assert allowed_hosts("192.168.1.5", "") == (*loopback, "192.168.1.5")
    assert allowed_hosts("fd00::5", "") == (*loopback, "[fd00::5]")
    assert allowed_hosts("0.0.0.0", "Search.LAN, 10.0.0.5,") == (
        *loopback,
        "search.lan",
        "10.0.0.5",
    )


def test_the_listening_socket_gives_connections_without_nagle() -> None:
    """uvicorn serves on vmfml's own socket through asyncio, which sets TCP_NODELAY only on
    sockets whose proto says TCP. With Nagle on, every response waited for the client's delayed
    ACK (about 40 ms a request, whatever the work)."""
    import asyncio
    import socket

    from vmfml.web.commands import _listen

    listener = _listen("127.0.0.1", 0)
    port = listener.getsockname()[1]

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Protocol, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
