"""/docs lists the responses each operation can give (not only FastAPI's 200 and 422), shows the
schema's code spans as code, and is titled as the API of the search page."""

from __future__ import annotations

import re

from vmfml.web.api_docs import render_api_docs


def rows_of(page: str) -> dict[str, str]:
    """'METHOD path' -> that table row's HTML."""
    rows = {}
    for row in re.findall(r"<tr><td class='method'>.*?</tr>", page):
        method = re.search(r"class='method'>(\w+)<", row).group(1)  # type: ignore[union-attr]
        path = re.search(r"<td><code>([^<]+)</code></td>", row).group(1)  # type: ignore[union-attr]
        rows[f"{method} {path}"] = row
    return rows


def codes_of(row: str) -> set[str]:
    cell = row.split("class='codes'>", 1)[1]
    return set(re.findall(r"<code>(\d{3})</code>", cell))


def test_docs_list_the_errors_each_operation_can_give(client) -> None:  # noqa: ANN001
    page = client.get("/docs").text
    rows = rows_of(page)
    upload = codes_of(rows["POST /api/search/image"])
    assert {"200", "400", "413", "415", "422"} <= upload
    assert "404" not in upload
    assert {"200", "404", "422"} <= codes_of(rows["GET /api/search/item/{item_id}"])
    assert {"200", "404", "403", "304"} <= codes_of(rows["GET /api/thumbnail/{item_id}"])
    assert {"413", "422"} <= codes_of(rows["POST /api/search/vector"])
    assert codes_of(rows["GET /api/health"]) == {"200"}
    # Without an API key no operation claims 401; decoding is always rationed (503).
    assert not any("401" in codes_of(r) for r in rows.values())
    assert "503" in upload and "503" in codes_of(rows["GET /api/thumbnail/{item_id}"])
    assert "503" not in codes_of(rows["POST /api/search/vector"])
    # Every listed code says what it means.
    assert "not an image" in rows["POST /api/search/image"]


def test_docs_show_code_spans_as_code_and_a_proper_title(client) -> None:  # noqa: ANN001
    page = client.get("/docs").text
    assert "`" not in page
    assert "<code>file</code>" in page
    title = re.search(r"<title>(.*?)</title>", page).group(1)  # type: ignore[union-attr]
    h1 = re.search(r"<h1>(.*?)</h1>", page).group(1)  # type: ignore[union-attr]
    assert title == h1 == "vmfml image search: HTTP API"
    assert "API version 1." in page


def test_a_key_and_rationed_decoding_add_401_and_503_where_they_apply(client) -> None:  # noqa: ANN001
    schema = client.get("/openapi.json").json()
    rows = rows_of(render_api_docs(schema, api_key=True, decode_limit=True))
    assert "401" not in codes_of(rows["GET /api/health"])
    assert "401" in codes_of(rows["GET /api/items"])
    assert "503" in codes_of(rows["POST /api/search/image"])
    assert "503" in codes_of(rows["GET /api/thumbnail/{item_id}"])
    assert "503" not in codes_of(rows["GET /api/items"])
    # A security scheme in the schema means a key.
    schema["components"] = {**schema.get("components", {}), "securitySchemes": {"key": {}}}
    assert "401" in codes_of(rows_of(render_api_docs(schema))["GET /api/items"])


def test_a_server_with_a_key_lists_401_on_its_own_docs_page(searcher) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from vmfml.web import ServeSettings, create_app

    app = create_app(searcher, ServeSettings(api_key="k" * 32))
    with TestClient(app, base_url="http://127.0.0.1") as keyed:
        rows = rows_of(keyed.get("/docs").text)  # the page itself needs no key
    assert "401" in codes_of(rows["POST /api/search/vector"])
    assert "401" not in codes_of(rows["GET /api/health"])
