"""The search page and its HTTP API over a saved index: `create_app(searcher, settings) -> FastAPI`.

The app only talks to a searcher (`vmfml.index.Searcher` or anything with the same methods), so
tests build it over a small index without a network and `vmfml serve` runs it under uvicorn.

Routes (JSON in and out; every error is `{"detail": "<one readable sentence>"}` with a 4xx status):

    GET  /                          the search page (static HTML/JS/CSS, no resource from the internet)
    GET  /api/health                status, item count, embedding dimension, model name, limits
    GET  /api/items?offset&limit    gallery listing
    GET  /api/items/sample?n&seed   a random sample of gallery items (the page's gallery strip)
    GET  /api/items/{id}            one gallery item
    GET  /api/thumbnail/{id}?size   a resized PNG/JPEG of the gallery file, cached
    POST /api/search/image          multipart upload `file` (+ form field `k`)
    GET  /api/search/item/{id}?k    neighbours of a gallery item (the item itself excluded)
    POST /api/search/vector         {"vector": [D floats], "k": n}
    GET  /openapi.json, /docs       the API schema, and an offline page that lists it

Hostile input is refused before it costs much: request bodies are counted while they stream in
(413 past the limit, before the whole body is read), images are checked for their pixel count
before they are decoded (decompression bombs), and a thumbnail is only served from a file that
resolves inside the gallery folder.
"""

import html
import io
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import (
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi import (
    Path as PathParam,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

# JSON bodies (a vector query) are small: a 4096-d vector written with 20 characters per value
# is 80 KiB. Anything bigger than this is refused while it streams in.
MAX_JSON_BYTES = 1 << 20
# Multipart framing and the `k` field around an uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 << 10
UPLOAD_PATHS = frozenset({"/api/search/image"})

# The page only loads from this server: a browser refuses anything else, so the page provably
# needs no internet. `blob:` lets it preview the image the user picked before uploading it.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


Hit = Mapping[str, Any]  # {"id", "path", "label", "score"}


class IndexLike(Protocol):
    """What the app reads from `vmfml.index.SearchIndex`."""

    @property
    def items(self) -> Sequence[Mapping[str, Any]]:
        """Item i is `{"id": i, "path", "label"}`; a slice gives a list of them."""

    @property
    def meta(self) -> dict[str, Any]:
        """Records "gallery_root" (and "dimension" where the index has no `.dim`)."""


class SearcherLike(Protocol):
    """What the app needs from `vmfml.index.Searcher`: each search returns its hits best first."""

    @property
    def index(self) -> IndexLike: ...

    @property
    def model(self) -> Any: ...

    def search_image(self, image: Image.Image, k: int, /) -> Sequence[Hit]: ...

    def search_id(self, i: int, k: int, /) -> Sequence[Hit]: ...

    def search_vector(self, vector: np.ndarray, k: int, /) -> Sequence[Hit]: ...


@dataclass(frozen=True)
class ServeSettings:
    """Limits and defaults of the server; `vmfml serve` fills them from its command line."""

    max_upload_mb: float = 10.0  # largest accepted upload (the whole request body), MiB
    max_k: int = 100  # largest number of neighbours one request may ask for
    default_k: int = 12  # neighbours returned when a request gives no k
    max_image_pixels: int = 40_000_000  # width * height above which an image is refused undecoded
    thumbnail_size: int = 160  # default longest side of a thumbnail, pixels
    thumbnail_cache_mb: float = 64.0  # memory held by encoded thumbnails (least recently used go)
    gallery_root: str | Path | None = None  # overrides the index's meta["gallery_root"]

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ValueError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.max_k < 1:
            raise ValueError(f"max_k must be >= 1, got {self.max_k}")
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in [1, max_k={self.max_k}], got {self.default_k}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if not 16 <= self.thumbnail_size <= 1024:
            raise ValueError(f"thumbnail_size must be in [16, 1024], got {self.thumbnail_size}")
        if self.thumbnail_cache_mb < 0:
            raise ValueError(f"thumbnail_cache_mb must be >= 0, got {self.thumbnail_cache_mb}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))


# ---------------------------------------------------------------------------------------------
# Request body limit (pure ASGI: counts bytes as they arrive, never buffers)


class BodyLimitMiddleware:
    """Refuse request bodies over a per-path limit with 413, counting bytes while they stream in.

    A declared Content-Length over the limit is refused before a byte of body is read. Otherwise
    the app's `receive` is wrapped: the chunk that crosses the limit raises an `HTTPException(413)`,
    which FastAPI re-raises from its body parsing (it does not turn it into a 400), so the client
    gets a JSON 413 and the server has held at most one chunk past the limit.
    """

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int = MAX_JSON_BYTES) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in UPLOAD_PATHS:
            limit = self.upload_limit + MULTIPART_OVERHEAD_BYTES
            refusal = f"upload too large: files are limited to {_mib(self.upload_limit)}"
        else:
            limit = self.json_limit
            refusal = f"request body too large: the limit is {_mib(self.json_limit)}"
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_json(send, 413, {"detail": refusal})
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, refusal)
            return message

        await self.app(scope, receive_limited, send)


class SecurityHeadersMiddleware:
    """Add `SECURITY_HEADERS` to every response (pure ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.3g} MiB ({n} bytes)"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = JSONResponse(payload).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # The body was not read: tell the client the connection will not be reused.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# Images and thumbnails


def open_image(source: Any, max_pixels: int, what: str) -> Image.Image:
    """Open and decode an image from a path or binary file, refusing bombs before decoding.

    `Image.open` reads only the header, so the pixel count is known before any pixel is
    decoded: an image over `max_pixels` is refused with 413 at that point. PIL's own
    `DecompressionBombError` (past 2 * `Image.MAX_IMAGE_PIXELS`) is mapped to the same answer.
    Raises HTTPException 415 when the bytes are not an image PIL reads, 400 when it is damaged.
    """
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as err:
        raise HTTPException(413, f"{what} has too many pixels: {err}") from err
    except UnidentifiedImageError as err:
        raise HTTPException(
            415, f"{what} is not an image that can be read (PNG, JPEG, GIF, BMP, TIFF, WebP...)"
        ) from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise HTTPException(
            413,
            f"{what} is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} pixels",
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as err:  # PIL's decoders raise all three
        image.close()
        raise HTTPException(400, f"{what} is a damaged or truncated image: {err}") from err
    return image


def encode_thumbnail(image: Image.Image, size: int) -> tuple[bytes, str]:
    """Shrink `image` so its longest side is at most `size` (never enlarge) and encode it.

    PNG for small images, greyscale line art and images with transparency (lossless, and small
    anyway); JPEG for larger photos. Returns (bytes, media type).
    """
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    buffer = io.BytesIO()
    if has_alpha or image.mode in ("1", "L", "P") or max(image.size) <= 64:
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            image = image.convert("RGBA" if has_alpha else "RGB")
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue(), "image/png"
    image.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue(), "image/jpeg"


class ThumbnailCache:
    """A thread-safe LRU of encoded thumbnails, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, int], tuple[bytes, str, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[bytes, str, str] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[int, int], entry: tuple[bytes, str, str]) -> None:
        size = len(entry[0])
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted[0])

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------------------------------
# Error responses: always {"detail": "<sentence>"}


def _describe_validation_errors(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors:
        loc = [str(x) for x in error.get("loc", ()) if x not in ("body", "query", "path", "form")]
        where = ".".join(loc) or "request body"
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"malformed JSON at character {loc[0] if loc else '?'}: {reason}")
        else:
            parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(
        status_code=422,
        content={"detail": _describe_validation_errors(exc.errors()), "errors": errors},
    )


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 304:
        return Response(status_code=304, headers=exc.headers)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )


# ---------------------------------------------------------------------------------------------
# The offline API docs page


def render_api_docs(schema: dict[str, Any]) -> str:
    """An HTML page listing every operation of an OpenAPI schema: method, path, summary,
    parameters. FastAPI's own /docs pulls Swagger UI from a CDN; this needs nothing but the server.
    """
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


# ---------------------------------------------------------------------------------------------
# The app


def _index_dimension(index: IndexLike) -> int:
    """D of the indexed embeddings: `SearchIndex.dim`, else the metadata's record."""
    dim = getattr(index, "dim", None) or index.meta.get("dimension") or index.meta.get("dim")
    if dim is None:
        raise ValueError(
            "the index records no embedding dimension (neither .dim nor meta['dimension'])"
        )
    return int(dim)


def _model_name(model: Any) -> str | None:
    config = getattr(model, "config", None)
    if isinstance(config, dict) and "name" in config:
        return str(config["name"])
    return type(model).__name__ if model is not None else None


def create_app(searcher: SearcherLike, settings: ServeSettings | None = None) -> FastAPI:
    """Build the FastAPI app over `searcher` (a `vmfml.index.Searcher` or anything alike).

    Nothing touches the network here: tests call the app through `fastapi.testclient.TestClient`.
    """
    settings = settings or ServeSettings()
    index = searcher.index
    items = index.items
    count = len(items)
    dimension = _index_dimension(index)
    root_setting = settings.gallery_root or index.meta.get("gallery_root")
    gallery_root = Path(root_setting).resolve() if root_setting else None
    # Item paths may have been recorded through a symlinked folder: accept either spelling.
    gallery_roots = (
        [Path(root_setting).resolve(), Path(root_setting).absolute()] if root_setting else []
    )
    thumbnails = ThumbnailCache(int(settings.thumbnail_cache_mb * (1 << 20)))
    model_name = _model_name(getattr(searcher, "model", None))
    max_k, default_k = settings.max_k, settings.default_k

    app = FastAPI(
        title="vmfml image search",
        version="1",
        description="Nearest-neighbour image search over a vmfml index.",
        docs_url=None,  # Swagger UI comes from a CDN; /docs below is an offline page instead
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.max_upload_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.searcher = searcher
    app.state.settings = settings
    app.state.thumbnails = thumbnails

    K = Annotated[int, Query(ge=1, le=max_k, description=f"number of neighbours (1..{max_k})")]
    ItemId = Annotated[int, PathParam(description=f"gallery item id (0..{count - 1})")]

    def public_path(path: Any) -> str | None:
        """An item's path as shown to clients: relative to the gallery, never the server's layout.

        Pure string work (no `resolve`): it runs for every hit of every search.
        """
        if path is None:
            return None
        p = Path(str(path))
        if not p.is_absolute():
            return p.as_posix()
        for root in gallery_roots:
            if p.is_relative_to(root):
                return p.relative_to(root).as_posix()
        return p.name

    def public_item(item: Mapping[str, Any], score: float | None = None) -> dict[str, Any]:
        i = int(item["id"])
        out: dict[str, Any] = {
            "id": i,
            "label": item.get("label"),
            "path": public_path(item.get("path")),
            "thumbnail": f"/api/thumbnail/{i}",
        }
        if score is not None:
            out["score"] = float(score)
        return out

    def check_id(i: int) -> Mapping[str, Any]:
        if not 0 <= i < count:
            raise HTTPException(404, f"unknown item id {i}: ids run from 0 to {count - 1}")
        return items[i]

    def results(query: dict[str, Any], k: int, hits: Sequence[Hit], t0: float) -> dict[str, Any]:
        return {
            "query": query,
            "k": k,
            "results": [public_item(h, h["score"]) for h in hits],
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(render_api_docs(app.openapi()))

    @app.get("/api/health", summary="Server status, index size and limits")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "count": count,
            "dimension": dimension,
            "model": model_name,
            "gallery_root_set": gallery_root is not None,
            "limits": {
                "max_k": max_k,
                "default_k": default_k,
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
            },
        }

    @app.get("/api/items", summary="List gallery items")
    def list_items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        page_items = items[offset : offset + limit]
        return {
            "total": count,
            "offset": offset,
            "limit": limit,
            "items": [public_item(it) for it in page_items],
        }

    @app.get("/api/items/sample", summary="A random sample of gallery items")
    def sample_items(
        n: Annotated[int, Query(ge=1, le=1000)] = 12,
        seed: Annotated[int | None, Query(description="repeatable sample when given")] = None,
    ) -> dict[str, Any]:
        ids = random.Random(seed).sample(range(count), min(n, count))
        return {"total": count, "items": [public_item(items[i]) for i in ids]}

    @app.get("/api/items/{item_id}", summary="One gallery item")
    def get_item(item_id: ItemId) -> dict[str, Any]:
        return public_item(check_id(item_id))

    @app.get(
        "/api/thumbnail/{item_id}",
        summary="A resized thumbnail of a gallery item",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    def thumbnail(
        request: Request,
        item_id: ItemId,
        size: Annotated[int, Query(ge=16, le=1024)] = settings.thumbnail_size,
    ) -> Response:
        item = check_id(item_id)
        key = (item_id, size)
        entry = thumbnails.get(key)
        if entry is None:
            if gallery_root is None:
                raise HTTPException(
                    404,
                    "this index records no gallery folder: start the server with --gallery-root",
                )
            # Items are addressed by id only, but the stored path could still be absolute or hold
            # '..' or a symlink out of the gallery: serve only what resolves inside it.
            path = (gallery_root / str(item["path"])).resolve()
            if not path.is_relative_to(gallery_root):
                raise HTTPException(403, f"item {item_id}'s file lies outside the gallery folder")
            if not path.is_file():
                raise HTTPException(404, f"item {item_id}'s image file is missing from the gallery")
            with open_image(path, settings.max_image_pixels, f"gallery image {item_id}") as image:
                data, media_type = encode_thumbnail(image, size)
            stat = path.stat()
            entry = (data, media_type, f'"{item_id}-{size}-{stat.st_mtime_ns}-{stat.st_size}"')
            thumbnails.put(key, entry)
        data, media_type, etag = entry
        headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(content=data, media_type=media_type, headers=headers)

    @app.post(
        "/api/search/image",
        summary="Search with an uploaded image",
        description=f"Multipart upload: `file` (at most {settings.max_upload_mb:g} MiB, "
        f"{settings.max_image_pixels} pixels) and optional `k`.",
    )
    async def search_image(
        file: Annotated[UploadFile, File(description="the query image")],
        k: Annotated[int, Form(ge=1, le=max_k)] = default_k,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        name = file.filename or "upload"
        # Decoding and the forward pass are CPU-bound: keep them off the event loop.
        image = await run_in_threadpool(
            open_image, file.file, settings.max_image_pixels, f"the uploaded file {name!r}"
        )
        try:
            hits = await run_in_threadpool(searcher.search_image, image, min(k, count))
        finally:
            image.close()
        query = {"type": "image", "filename": name, "width": image.width, "height": image.height}
        return results(query, k, hits, t0)

    @app.get("/api/search/item/{item_id}", summary="Neighbours of a gallery item (itself excluded)")
    def search_item(item_id: ItemId, k: K = default_k) -> dict[str, Any]:
        t0 = time.perf_counter()
        item = check_id(item_id)
        hits = searcher.search_id(item_id, max(1, min(k, count - 1)))
        return results({"type": "item", **public_item(item)}, k, hits, t0)

    # Defined here because its bounds come from the index and the settings. (This module does not
    # use `from __future__ import annotations`: FastAPI must see the local classes, not strings.)
    class VectorQuery(BaseModel):
        model_config = ConfigDict(extra="forbid")
        vector: list[float] = Field(description=f"a {dimension}-d embedding (L2-normalized here)")
        k: int = Field(default_k, ge=1, le=max_k, description=f"number of neighbours (1..{max_k})")

    @app.post("/api/search/vector", summary="Search with an embedding vector")
    def search_vector(body: VectorQuery) -> dict[str, Any]:
        t0 = time.perf_counter()
        if len(body.vector) != dimension:
            raise HTTPException(
                422, f"vector has {len(body.vector)} values, the index expects {dimension}"
            )
        v = np.asarray(body.vector, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise HTTPException(
                422, f"vector holds NaN or infinite values (at positions {bad[:10].tolist()})"
            )
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or not math.isfinite(norm):
            raise HTTPException(422, "vector has zero length: it has no direction to search")
        # Embeddings live on the unit sphere, and the score is a cosine: normalize the query.
        hits = searcher.search_vector((v / norm).astype(np.float32), min(body.k, count))
        return results({"type": "vector"}, body.k, hits, t0)

    return app
