"""The boundary checks of a real `vmfml serve` process (uvicorn on a free 127.0.0.1 port): the key
read from --api-key-file, the Host header, a body sent too slowly, and the resident memory of a
burst of large uploads (the scaled-down check of benchmarks/bench_serve_burst.py)."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

KEY = "a-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
PIXELS = 2000 * 2000  # the server's --max-image-pixels, and the burst's image
SLOTS = 2
COPIES = 7  # full-size copies of the 3-byte RGB image one search holds (bench_serve_burst.py)
ALLOWANCE_MIB = 48  # request handling, thread stacks, allocator slack
MIB = 1 << 20


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rgb_index(folder: Path) -> Path:
    """500 random unit vectors and an untrained RGB small CNN (64x64 input, D = 16)."""
    import torch

    from vmfml.index import SearchIndex, model_info
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=16, depth=2, width=0.25, in_chans=3, input_size=64)
    save_model_checkpoint(folder / "model.pt", model)
    items = [{"path": None, "label": str(i % 5)} for i in range(500)]
    meta = {"model": model_info(model, folder / "model.pt"), "gallery_root": None}
    SearchIndex.build(x, items, meta=meta).save(folder / "index")
    return folder / "index"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of `vmfml serve` with a key file, a 2 s body timeout and 2 decode slots."""
    folder = tmp_path_factory.mktemp("guarded")
    index = _rgb_index(folder)
    (folder / "key").write_text(KEY + "\n")
    port = free_port()
    command = [
        sys.executable, "-m", "vmfml.cli", "serve", "--index", str(index), "--host", "127.0.0.1",
        "--port", str(port), "--api-key-file", str(folder / "key"), "--body-timeout", "2",
        "--max-image-pixels", str(PIXELS), "--decode-slots", str(SLOTS),
        "--allowed-hosts", "search.test", "--log-level", "warning",
    ]  # fmt: skip
    log = folder / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"vmfml serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vmfml serve did not answer within 90 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_key_from_a_file_and_the_host_header(guarded_server: tuple[str, int]) -> None:
    base, _ = guarded_server
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/items").status_code == 401
        assert c.get("/api/items", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/items", headers=AUTH).status_code == 200
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 400
        assert c.get("/api/health", headers={"Host": "search.test:80"}).status_code == 200


def test_a_body_sent_too_slowly_is_cut_off(guarded_server: tuple[str, int]) -> None:
    base, _ = guarded_server
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(
            b"POST /api/search/vector HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"vector": [0.1, '
        )
        t0 = time.monotonic()
        answer = b""
        while chunk := s.recv(4096):  # the server answers, then closes the connection
            answer += chunk
        waited = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 2 s" in answer
    assert 1.5 < waited < 15
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/api/health").status_code == 200


def _memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_a_burst_of_large_uploads_stays_within_the_decode_slots(
    guarded_server: tuple[str, int],
) -> None:
    base, pid = guarded_server
    side = int(PIXELS**0.5)
    y, x = np.mgrid[0:side, 0:side]
    rgb = np.stack([x % 256, y % 256, ((x + y) // 8) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    big = buffer.getvalue()
    with httpx.Client(base_url=base, timeout=60, headers=AUTH) as c:
        small = io.BytesIO()
        Image.fromarray(rgb[:64, :64]).save(small, format="PNG")
        for _ in range(3):
            c.post("/api/search/image", files={"file": ("s.png", small.getvalue(), "image/png")})
    time.sleep(1.0)
    idle = _memory_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def upload() -> None:
        barrier.wait()
        with httpx.Client(base_url=base, timeout=120, headers=AUTH) as c:
            r = c.post("/api/search/image", files={"file": ("big.png", big, "image/png")})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=upload) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    peak = _memory_kib(pid, "VmHWM")
    time.sleep(2.0)
    after = _memory_kib(pid, "VmRSS")
    assert len(statuses) == 10 and set(statuses) <= {200, 503} and statuses.count(200) >= SLOTS
    bound_mib = SLOTS * PIXELS * 3 * COPIES / MIB + ALLOWANCE_MIB
    # 10 decodes at once would take about 10 x 19 bytes a pixel: 725 MiB here.
    assert (peak - idle) / 1024 <= bound_mib, (peak - idle) / 1024
    assert (after - idle) / 1024 <= ALLOWANCE_MIB, (after - idle) / 1024
