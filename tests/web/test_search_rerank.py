"""Query expansion (aqe, alpha-qe) through the HTTP API, against brute force in float64 over the
gallery's reference embeddings (`Gallery.reference`, computed independently of the index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vmfml.cli import main
from vmfml.web import ServeSettings, create_app

LOCAL = "http://127.0.0.1"
TOL = 1e-4  # float32 index and model vs the float64 reference


def expanded(reference: np.ndarray, query: np.ndarray, n: int, alpha: float, exclude=None):  # noqa: ANN001, ANN201
    """aqe (alpha 0) / alpha-qe by hand: the query plus its top-n reference rows, each weighted
    by max(cos, 0) ** alpha, normalized; also the margin between the n-th and (n+1)-th
    neighbour, which must exceed float32 noise for the server to pick the same neighbours."""
    q = query / np.linalg.norm(query)
    sims = reference @ q
    if exclude is not None:
        sims[exclude] = -np.inf
    order = np.argsort(-sims, kind="stable")
    out = q + sum(max(sims[j], 0.0) ** alpha * reference[j] for j in order[:n])
    return out / np.linalg.norm(out), sims[order[n - 1]] - sims[order[n]]


def check_hits(hits: list[dict], reference: np.ndarray, query: np.ndarray, k: int, exclude=None):  # noqa: ANN001, ANN201
    """The hits are the k best items for the (expanded) query by float64 dot products."""
    true = reference @ query
    if exclude is not None:
        true[exclude] = -np.inf
    ids = [h["id"] for h in hits]
    assert len(ids) == len(set(ids)) == k
    served = np.array([h["score"] for h in hits])
    np.testing.assert_allclose(served, true[ids], atol=TOL)
    assert served[-1] >= np.sort(true)[::-1][k - 1] - TOL


def test_vector_search_with_query_expansion_matches_brute_force(
    client: TestClient, gallery
) -> None:
    ref = gallery.reference / np.linalg.norm(gallery.reference, axis=1, keepdims=True)
    query = np.random.default_rng(1).standard_normal(32)
    plain = client.post("/api/search/vector", json={"vector": query.tolist(), "k": 8}).json()
    assert plain["rerank"] == {"method": "none"}
    for method, n, alpha in (("aqe", 3, 0.0), ("alpha-qe", 4, 3.0)):
        body = {"vector": query.tolist(), "k": 8, "rerank": method, "rerank_n": n}
        if method == "alpha-qe":
            body["rerank_alpha"] = alpha
        r = client.post("/api/search/vector", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["rerank"] == {"method": method, "n": n, **({"alpha": alpha} if alpha else {})}
        target, margin = expanded(ref, query, n, alpha)
        assert margin > TOL  # the same neighbours, float32 or float64
        check_hits(answer["results"], ref, target, 8)
        # scores are cosines to the expanded query, not to the plain one
        served = np.array([h["score"] for h in answer["results"]])
        assert np.abs(served - [h["score"] for h in plain["results"]]).max() > 10 * TOL


def test_image_and_item_search_take_rerank_in_the_query(client: TestClient, gallery) -> None:
    ref = gallery.reference / np.linalg.norm(gallery.reference, axis=1, keepdims=True)
    i = 23
    r = client.post(
        "/api/search/image",
        params={"rerank": "alpha-qe", "rerank_n": 2, "k": 6},
        files={"file": ("q.png", gallery.paths[i].read_bytes(), "image/png")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["rerank"] == {"method": "alpha-qe", "n": 2, "alpha": 3.0}
    target, margin = expanded(ref, ref[i], 2, 3.0)
    assert margin > TOL
    check_hits(r.json()["results"], ref, target, 6)
    # An item is neither its own neighbour in the expansion nor a hit. The first item whose
    # 3rd and 4th neighbours are apart by more than float32 noise:
    j = next(j for j in range(len(ref)) if expanded(ref, ref[j], 3, 0.0, exclude=j)[1] > TOL)
    r = client.get(f"/api/search/item/{j}", params={"k": 6, "rerank": "aqe", "rerank_n": 3})
    assert r.status_code == 200, r.text
    check_hits(r.json()["results"], ref, expanded(ref, ref[j], 3, 0.0, exclude=j)[0], 6, exclude=j)


def test_the_servers_default_applies_unless_a_request_chooses(searcher, gallery) -> None:
    ref = gallery.reference / np.linalg.norm(gallery.reference, axis=1, keepdims=True)
    query = np.random.default_rng(2).standard_normal(32)
    settings = ServeSettings(rerank="aqe", rerank_n=3, default_k=5)
    with TestClient(create_app(searcher, settings), base_url=LOCAL) as c:
        assert c.get("/api/health").json()["rerank"] == {"method": "aqe", "n": 3}
        default = c.post("/api/search/vector", json={"vector": query.tolist()}).json()
        assert default["rerank"] == {"method": "aqe", "n": 3}
        target, margin = expanded(ref, query, 3, 0.0)
        assert margin > TOL
        check_hits(default["results"], ref, target, 5)
        none = c.post("/api/search/vector", json={"vector": query.tolist(), "rerank": "none"})
        assert none.json()["rerank"] == {"method": "none"}
        check_hits(none.json()["results"], ref, query / np.linalg.norm(query), 5)
        # n alone changes the server's method's n
        two = c.post("/api/search/vector", json={"vector": query.tolist(), "rerank_n": 2})
        assert two.json()["rerank"] == {"method": "aqe", "n": 2}
    with pytest.raises(ValueError, match="unknown re-ranking 'dba' for a search"):
        ServeSettings(rerank="dba")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"rerank": "dba"}, "rerank: Input should be 'none', 'aqe' or 'alpha-qe'"),
        ({"rerank": "aqe", "rerank_n": 101}, "rerank_n: Input should be less than or equal to 100"),
        ({"rerank": "aqe", "rerank_n": -1}, "rerank_n: Input should be greater than or equal to 0"),
        ({"rerank": "alpha-qe", "rerank_alpha": 1000}, "rerank_alpha: Input should be less than"),
        ({"rerank_n": 3}, "rerank_n and rerank_alpha apply to rerank aqe and alpha-qe"),
    ],
)
def test_bad_rerank_requests_are_422_naming_the_field(
    client: TestClient, gallery, request_: dict, message: str
) -> None:
    vector = gallery.reference[0].tolist()
    r = client.post("/api/search/vector", json={"vector": vector, **request_})
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    r = client.get("/api/search/item/0", params=request_)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    r = client.post(
        "/api/search/image",
        params=request_,
        files={"file": ("q.png", gallery.paths[0].read_bytes(), "image/png")},
    )
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    # JSON types are exact: a string is not a number
    r = client.post("/api/search/vector", json={"vector": vector, "rerank_n": "2"})
    assert r.status_code == 422 and "rerank_n" in r.json()["detail"]


def test_serve_refuses_bad_rerank_flags_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = str(tmp_path / "no-index")
    with pytest.raises(SystemExit):
        main(["serve", "--index", nowhere, "--rerank", "k-reciprocal"])
    assert "argument --rerank: invalid choice: 'k-reciprocal'" in capsys.readouterr().err
    assert main(["serve", "--index", nowhere, "--rerank", "aqe", "--rerank-n", "500"]) == 2
    assert "re-ranking n must be an integer in [0, 100], got 500" in capsys.readouterr().err


def test_serve_rerank_flags_set_the_servers_default(start_server, gallery) -> None:  # noqa: ANN001
    import httpx

    ref = gallery.reference / np.linalg.norm(gallery.reference, axis=1, keepdims=True)
    query = np.random.default_rng(3).standard_normal(32)
    with start_server("--rerank", "alpha-qe", "--rerank-n", "3", "--rerank-alpha", "1") as base:
        setting = {"method": "alpha-qe", "n": 3, "alpha": 1.0}
        assert httpx.get(f"{base}/api/health").json()["rerank"] == setting
        body = {"vector": query.tolist(), "k": 5}
        answer = httpx.post(f"{base}/api/search/vector", json=body).json()
    assert answer["rerank"] == setting
    target, margin = expanded(ref, query, 3, 1.0)
    assert margin > TOL
    check_hits(answer["results"], ref, target, 5)
