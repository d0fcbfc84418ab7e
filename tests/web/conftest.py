"""A real small index for the web tests: 60 Fashion-MNIST test images written as PNG files, an
untrained small CNN saved as a checkpoint, embedded and indexed with `vmfml.index`, exactly as
`vmfml embed` + `vmfml index` would; plus the reference embeddings, computed independently."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PER_CLASS = 6
# The app accepts only loopback Host headers (TestClient sends "testserver" unless told).
LOCAL = "http://127.0.0.1"


@dataclass
class Gallery:
    """The gallery on disk and what the tests compare the server against."""

    root: Path  # gallery/<class>/<n>.png
    index_dir: Path
    checkpoint: Path
    paths: list[Path]  # row i of the index
    labels: list[str]
    pixels: np.ndarray  # uint8 [N, 28, 28], what each PNG holds
    reference: np.ndarray  # float64 [N, D]: the model applied directly to `pixels`


def _reference_embeddings(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The model on [N, 1, 28, 28] pixels normalized by hand from its preprocessing record:
    independent of the index's transform pipeline."""
    pre: dict = dict(model.preprocessing)  # type: ignore[arg-type]
    assert tuple(pre["input_size"]) == (1, 28, 28)
    x = torch.from_numpy(pixels).float().div(255.0).unsqueeze(1)
    x = (x - pre["mean"][0]) / pre["std"][0]
    with torch.inference_mode():
        return model.eval()(x).double().numpy()


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    from vmfml.data.fashion_mnist import fashion_mnist
    from vmfml.data.image_folder import image_folder
    from vmfml.index.embeddings import embed_folder_to_file, load_embedding_file
    from vmfml.index.search_index import SearchIndex
    from vmfml.models import create_model
    from vmfml.train.checkpoint import save_model_checkpoint

    try:
        data = fashion_mnist("test")
    except (FileNotFoundError, RuntimeError) as err:
        pytest.skip(
            f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {err}"
        )
    base = tmp_path_factory.mktemp("web")
    root = base / "gallery"
    labels_all = data.labels.numpy()
    for c, name in enumerate(data.class_names):
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        for n, i in enumerate(np.flatnonzero(labels_all == c)[:PER_CLASS]):
            image, _ = data[int(i)]
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{n}.png")

    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=32, depth=2, width=0.25)
    checkpoint = base / "model.pt"
    save_model_checkpoint(checkpoint, model)

    dataset = image_folder(root, mode="L", progress=False)
    emb = load_embedding_file(
        embed_folder_to_file(
            base / "gallery.npz",
            model,
            dataset,
            checkpoint=checkpoint,
            data_root=root,
            progress=False,
        )
    )
    index_dir = base / "index"
    SearchIndex.build(
        np.asarray(emb.embeddings),
        emb.items(),
        meta={"model": emb.meta["model"], "gallery_root": str(root)},
    ).save(index_dir)

    paths = [Path(p) for p in emb.paths]
    pixels = np.stack([np.asarray(Image.open(p)) for p in paths])
    return Gallery(
        root=root,
        index_dir=index_dir,
        checkpoint=checkpoint,
        paths=paths,
        labels=[str(x) for x in emb.label_names()],
        pixels=pixels,
        reference=_reference_embeddings(model, pixels),
    )


@pytest.fixture(scope="session")
def searcher(gallery: Gallery):  # noqa: ANN201 - a vmfml.index.Searcher
    from vmfml.index.searcher import Searcher

    return Searcher.from_index(gallery.index_dir)


@pytest.fixture()
def client(searcher) -> Iterator:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from vmfml.web import ServeSettings, create_app

    with TestClient(
        create_app(searcher, ServeSettings(max_k=50, default_k=5)), base_url=LOCAL
    ) as c:
        yield c


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(
    gallery: Gallery, *options: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`vmfml serve` over the gallery's index in a subprocess on a free loopback port, with
    `options` added (and `env` added to the environment); yields its base URL."""
    with server_process(gallery, *options, env=env) as (_, base):
        yield base


@contextmanager
def server_process(
    gallery: Gallery, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`serve_process`, yielding the process too (a test may kill it); stopped at the end
    unless it has exited already."""
    import httpx

    port = free_port()
    command = [
        sys.executable, "-m", "vmfml.cli", "serve", "--index", str(gallery.index_dir),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options,
    ]  # fmt: skip
    log = gallery.index_dir.parent / f"serve-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"vmfml serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vmfml serve did not answer within 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield process, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def start_server(gallery: Gallery) -> Callable[..., AbstractContextManager[str]]:
    """`serve_process` over the gallery, for a test that needs a server of its own settings."""
    return functools.partial(serve_process, gallery)


@pytest.fixture(scope="session")
def serve_index() -> Callable[..., AbstractContextManager[str]]:
    """`serve_process` itself, for a test that serves a `Gallery` of its own (an index copy)."""
    return serve_process


@pytest.fixture(scope="session")
def serve_index_process() -> Callable[..., AbstractContextManager[tuple[subprocess.Popen, str]]]:
    """`server_process` itself: a server of a `Gallery` of its own that the test may kill."""
    return server_process


@pytest.fixture(scope="session")
def live_server(gallery: Gallery) -> Iterator[str]:
    """`vmfml serve` in a subprocess on a free loopback port; yields its base URL."""
    with serve_process(gallery, "--max-upload-mb", "1") as base:
        yield base
