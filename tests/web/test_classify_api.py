"""POST /api/classify: the classifier's answer for an uploaded image, as the library gives it for
the same embedding; the server's guards apply to it as to every upload."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

LOCAL = "http://127.0.0.1"  # the app accepts loopback Host headers only
# Two of the ten Fashion-MNIST classes stay out of the classifier: its "unknown" ones.
UNSEEN = ("Sandal", "Bag")


def fit_gallery_classifier(gallery, path: Path) -> Path:  # noqa: ANN001
    """A classifier of the gallery's model over its eight other classes, written to `path`; it
    keeps half of the known images (the model is untrained), so both answers occur."""
    from vmfml.openset import OpenSetClassifier

    keep = [i for i, name in enumerate(gallery.labels) if name not in UNSEEN]
    names = sorted({gallery.labels[i] for i in keep})
    emb = torch.nn.functional.normalize(torch.from_numpy(gallery.reference[keep]).float(), dim=1)
    labels = torch.tensor([names.index(gallery.labels[i]) for i in keep])
    OpenSetClassifier.fit(names, (emb, labels), score="max_cosine", keep_rate=0.5).save(path)
    return path


@pytest.fixture(scope="module")
def classifier_file(gallery, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    return fit_gallery_classifier(gallery, tmp_path_factory.mktemp("clf") / "classifier.pt")


@pytest.fixture()
def classifying_client(searcher, classifier_file: Path) -> Iterator:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from vmfml.openset import OpenSetClassifier
    from vmfml.web import ServeSettings, create_app

    app = create_app(searcher, ServeSettings(), OpenSetClassifier.load(classifier_file))
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def test_classify_answers_what_the_library_answers(
    classifying_client,
    searcher,
    gallery,
    classifier_file: Path,  # noqa: ANN001
) -> None:
    from PIL import Image

    from vmfml.openset import OpenSetClassifier

    classifier = OpenSetClassifier.load(classifier_file)
    health = classifying_client.get("/api/health").json()
    assert health["classifier"] == {"classes": 8, "score": "max_cosine", "keep_rate": 0.5}
    for i in (0, 17, 30, 45):
        with open(gallery.paths[i], "rb") as f:
            answer = classifying_client.post(
                "/api/classify?k=2", files={"file": ("q.png", f, "image/png")}
            )
        assert answer.status_code == 200, answer.text
        data = answer.json()
        expected = classifier.predict(
            searcher.embed_images([Image.open(gallery.paths[i])]), top_k=2
        )
        best = classifier.class_names[int(expected.label[0])]
        assert data["class"] == best and len(data["top"]) == 2
        assert data["probability"] == pytest.approx(float(expected.probability[0]), abs=1e-9)
        assert data["score"] == pytest.approx(float(expected.score[0]), abs=1e-9)
        assert data["known"] == (not bool(expected.unknown[0]))
        assert data["label"] == (best if data["known"] else "unknown")
        assert data["threshold"] == pytest.approx(classifier.threshold)


def test_classify_is_guarded_like_every_upload(classifying_client, client) -> None:  # noqa: ANN001
    eps = io.BytesIO(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    refused = classifying_client.post("/api/classify", files={"file": ("x.eps", eps, "image/png")})
    assert refused.status_code == 415
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png, format="PNG")
    foreign = classifying_client.post(
        "/api/classify",
        files={"file": ("x.png", png.getvalue(), "image/png")},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    bad_k = classifying_client.post(
        "/api/classify?k=9", files={"file": ("x.png", png.getvalue(), "image/png")}
    )
    assert bad_k.status_code == 422
    none = client.post("/api/classify", files={"file": ("x.png", png.getvalue(), "image/png")})
    assert none.status_code == 404 and "no classifier" in none.json()["detail"]
    assert client.get("/api/health").json()["classifier"] is None
