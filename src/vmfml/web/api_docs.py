"""The offline API docs page (`GET /docs`): FastAPI's own pulls Swagger UI from a CDN, this one
needs nothing but the server."""

import html
from typing import Any


def render_api_docs(schema: dict[str, Any]) -> str:
    """An HTML page listing every operation of an OpenAPI schema: method, path, summary,
    parameters, request body types and response codes."""
    e = html.escape
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
            codes = ", ".join(e(c) for c in op.get("responses", {}))
            rows.append(
                f"<tr><td class='method'>{e(method.upper())}</td><td><code>{e(path)}</code></td>"
                f"<td>{e(op.get('summary', ''))}<div class='muted'>{e(op.get('description', ''))}</div></td>"
                f"<td>{'<br>'.join(params)}</td><td>{codes}</td></tr>"
            )
    info = schema.get("info", {})
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{e(info.get('title', 'API'))} docs</title>"
        "<link rel='stylesheet' href='/static/style.css'></head><body class='docs'>"
        f"<h1>{e(info.get('title', 'API'))} <small>{e(str(info.get('version', '')))}</small></h1>"
        "<p>The machine-readable schema is at <a href='/openapi.json'>/openapi.json</a>. "
        'Errors are JSON objects <code>{"detail": "..."}</code>.</p>'
        "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>parameters</th>"
        f"<th>responses</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"
    )
