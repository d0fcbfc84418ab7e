"""Memory of `vmfml serve` under a burst of large uploads: bounded by the decode slots.

Starts `vmfml serve` in a subprocess on 127.0.0.1 over a small index (an untrained RGB small CNN),
then sends --clients concurrent uploads of one PNG of --pixels pixels (the server's
--max-image-pixels: the largest image it decodes) to /api/search/image, each from its own thread
and connection. It reports the server's resident memory while idle (after one small search), its
peak during the burst (VmHWM, reset before the burst through /proc/PID/clear_refs) and what is
left a few seconds after, beside the bound the decode slots promise:

    slots x pixels x 3 bytes x COPIES

COPIES counts the full-size copies one image search holds at its peak, in units of the 3-byte RGB
image: Pillow's decoded RGB image (4 bytes a pixel), the uint8 tensor made from it (3) and the
float32 tensor the model's transform makes before resizing (12): 19 bytes, 6.33 copies; the
bound rounds it up to 7. A request that finds no free slot within 5 s gets 503 (counted).
Every request is bounded by a timeout and the whole burst by --max-seconds.

    python benchmarks/bench_serve_burst.py                      # 30 x a 4000x4000 PNG, 2 slots
    python benchmarks/bench_serve_burst.py --pixels 4000000 --clients 10
"""

from __future__ import annotations

import argparse
import io
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

HOST = "127.0.0.1"
COPIES = 7  # full-size copies of the 3-byte image one search holds at its peak (19/3, rounded up)
MIB = 1 << 20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixels", type=int, default=16_000_000, help="image and server pixel limit")
    p.add_argument("--clients", type=int, default=30, help="concurrent uploads")
    p.add_argument("--slots", type=int, default=2, help="the server's --decode-slots")
    p.add_argument("--max-seconds", type=float, default=300.0, help="time cap of the burst")
    return p.parse_args()


def build_index(folder: Path) -> Path:
    """1,000 random unit vectors and an untrained RGB small CNN (64x64 input, D = 64)."""
    import torch

    from vmfml.index import SearchIndex, model_info
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 64), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=64, depth=2, width=0.25, in_chans=3, input_size=64)
    checkpoint = folder / "model.pt"
    save_model_checkpoint(checkpoint, model)
    items = [{"path": None, "label": f"class_{i % 10}"} for i in range(1000)]
    meta = {"model": model_info(model, checkpoint), "gallery_root": None}
    SearchIndex.build(x, items, meta=meta).save(folder / "index")
    return folder / "index"


def png_of(pixels: int) -> tuple[bytes, int, int]:
    """An RGB PNG of about `pixels` pixels (at most): smooth colours, so it compresses well."""
    from PIL import Image

    side = math.isqrt(pixels)
    y, x = np.mgrid[0:side, 0:side]
    rgb = np.stack([x % 256, y % 256, ((x + y) // 8) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue(), side, side


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(index: Path, port: int, pixels: int, slots: int, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "vmfml.cli", "serve", "--index", str(index), "--host", HOST,
        "--port", str(port), "--max-image-pixels", str(pixels), "--decode-slots", str(slots),
        "--log-level", "warning",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vmfml serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"vmfml serve did not answer within 120 s:\n{log.read_text()}")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def burst(base: str, png: bytes, clients: int, max_seconds: float) -> tuple[Counter, float]:
    """`clients` uploads at once, each from its own thread and connection: (statuses, seconds)."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)
    deadline = time.monotonic() + max_seconds

    def one() -> None:
        start.wait()
        timeout = max(1.0, deadline - time.monotonic())
        try:
            with httpx.Client(base_url=base, timeout=timeout) as c:
                r = c.post("/api/search/image", files={"file": ("big.png", png, "image/png")})
                status: int | str = r.status_code
        except httpx.HTTPError as err:
            status = type(err).__name__
        with lock:
            statuses[status] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.monotonic() - t0


def main() -> None:
    args = parse_args()
    png, width, height = png_of(args.pixels)
    with tempfile.TemporaryDirectory() as tmp:
        index = build_index(Path(tmp))
        port = free_port()
        server = start_server(index, port, args.pixels, args.slots, Path(tmp) / "serve.log")
        base = f"http://{HOST}:{port}"
        try:
            small, _, _ = png_of(64 * 64)
            with httpx.Client(base_url=base, timeout=60) as c:
                for _ in range(3):
                    c.post("/api/search/image", files={"file": ("s.png", small, "image/png")})
            time.sleep(1.0)
            idle = memory_kib(server.pid)["VmRSS"]
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            statuses, seconds = burst(base, png, args.clients, args.max_seconds)
            peak = memory_kib(server.pid)["VmHWM"]
            time.sleep(3.0)
            after = memory_kib(server.pid)["VmRSS"]
        finally:
            server.terminate()
            server.wait(timeout=30)
    bound = args.slots * width * height * 3 * COPIES / MIB
    print(
        f"vmfml serve --decode-slots {args.slots} --max-image-pixels {args.pixels}: "
        f"{args.clients} concurrent uploads of a {width}x{height} RGB PNG "
        f"({len(png) / MIB:.1f} MiB) in {seconds:.1f} s"
    )
    print(f"  answers: {dict(sorted(statuses.items(), key=str))}")
    print(f"  idle resident memory       {idle / 1024:8.0f} MiB")
    print(f"  peak during the burst      {peak / 1024:8.0f} MiB (VmHWM)")
    print(f"  peak - idle                {(peak - idle) / 1024:8.0f} MiB")
    print(
        f"  bound: slots x pixels x 3 B x {COPIES} copies = {bound:8.0f} MiB "
        f"({'within' if (peak - idle) / 1024 <= bound else 'OVER'})"
    )
    print(f"  3 s after the burst        {after / 1024:8.0f} MiB ({(after - idle) / 1024:+.0f})")
    print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
