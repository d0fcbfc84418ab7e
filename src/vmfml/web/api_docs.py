"""The offline API docs page (`GET /docs`): FastAPI's own pulls Swagger UI from a CDN, this one
needs nothing but the server.

Each operation lists the responses it can give, not only the 200 and 422 that FastAPI writes into
the schema: 404 where a path names a gallery item, 413 where a request has a body (the body limit,
`web/middleware.py`), 415 and 400 for an uploaded image, 401 on every /api/ path but /api/health
when the server holds an API key, 503 where images are decoded when decoding is rationed. The
schema's own Markdown code spans (`file`) are shown as code, not as backticks.
"""

from __future__ import annotations

import html
import re
from typing import Any

# code -> its meaning on this server, for the responses the schema does not describe itself.
MEANINGS = {
    "200": "the answer",
    "304": "not modified (the thumbnail's ETag matched)",
    "400": "a damaged or truncated image",
    "401": "no or wrong API key (Authorization: Bearer KEY)",
    "403": "the item's file lies outside the gallery folder",
    "404": "unknown item id, or its file is missing",
    "413": "the body, or the image's pixel count, is over the server's limit",
    "415": "the upload is not an image the server can read",
    "422": "a parameter or field is missing or out of range",
    "503": "busy: every image-decoding slot is taken (retry after the Retry-After seconds)",
}
CODE_SPAN = re.compile(r"`([^`]+)`")


def render_api_docs(
    schema: dict[str, Any], api_key: bool | None = None, decode_limit: bool = False
) -> str:
    """An HTML page listing every operation of an OpenAPI schema: method, path, summary,
    parameters, request body types and the responses it can give.

    Args:
        schema: the app's OpenAPI schema.
        api_key: whether /api/ paths (but /api/health) need a key (401); None reads it from the
            schema (a security scheme declared).
        decode_limit: whether image decoding is rationed (503 on uploads and thumbnails).
    """
    e = html.escape
    if api_key is None:
        api_key = bool(schema.get("components", {}).get("securitySchemes")) or bool(
            schema.get("security")
        )
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            params = [
                f"<code>{e(p['name'])}</code> ({e(p['in'])}{', required' if p.get('required') else ''})"
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {})
            if body:
                params.append("body: " + ", ".join(f"<code>{e(t)}</code>" for t in body))
            codes = responses(path, op, api_key=api_key, decode_limit=decode_limit)
            listed = "<br>".join(
                f"<code>{e(code)}</code> {e(text)}" for code, text in sorted(codes.items())
            )
            rows.append(
                f"<tr><td class='method'>{e(method.upper())}</td><td><code>{e(path)}</code></td>"
                f"<td>{markdown_code(op.get('summary', ''))}"
                f"<div class='muted'>{markdown_code(op.get('description', ''))}</div></td>"
                f"<td>{'<br>'.join(params)}</td><td class='codes'>{listed}</td></tr>"
            )
    info = schema.get("info", {})
    title = info.get("title", "API")
    version = str(info.get("version", ""))
    about = markdown_code(info.get("description", ""))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(title)}: HTTP API</title>"
        "<link rel='stylesheet' href='/static/style.css'></head><body class='docs'>"
        f"<h1>{e(title)}: HTTP API</h1>"
        f"<p class='muted'>{about}{' API version ' + e(version) + '.' if version else ''} "
        "<a href='/'>Back to the search page</a>.</p>"
        "<p>The machine-readable schema is at <a href='/openapi.json'>/openapi.json</a>. "
        'Errors are JSON objects <code>{"detail": "..."}</code> whose sentence says what was '
        "wrong.</p>"
        "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>parameters</th>"
        f"<th>responses</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )


def responses(
    path: str, op: dict[str, Any], api_key: bool = False, decode_limit: bool = False
) -> dict[str, str]:
    """The status codes operation `op` on `path` can answer, each with its meaning."""
    codes = {
        str(code): (entry.get("description") if code in ("200", "422") else None)
        or MEANINGS.get(str(code), entry.get("description", ""))
        for code, entry in op.get("responses", {}).items()
    }
    content = op.get("requestBody", {}).get("content", {})
    upload = "multipart/form-data" in content
    thumbnail = "/thumbnail" in path
    derived = []
    if "{" in path:
        derived.append("404")
    if content:
        derived.append("413")
    if upload:
        derived += ["415", "400"]
    if thumbnail:
        derived += ["403", "304"]
    if decode_limit and (upload or thumbnail):
        derived.append("503")
    if api_key and path.startswith("/api/") and path != "/api/health":
        derived.append("401")
    for code in derived:
        codes.setdefault(code, MEANINGS[code])
    return codes


def markdown_code(text: str) -> str:
    """`text` escaped for HTML, its Markdown code spans (`name`) shown as <code>."""
    return CODE_SPAN.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text))
