"""The search page and its HTTP API over a saved index: `create_app(searcher, settings) -> FastAPI`.

The app only talks to a searcher (`vmfml.index.Searcher` or anything with the same methods), so
tests build it over a small index without a network and `vmfml serve` runs it under uvicorn.

Routes (JSON in and out; every error is `{"detail": "<one readable sentence>"}` with a 4xx status):

    GET  /                          the search page (static HTML/JS/CSS, no resource from the internet)
    GET  /api/health                status, item count now, dimension, model name, writable, limits
    GET  /api/items?offset&limit    the live items in id order (offset/limit over them, not ids)
    GET  /api/items/sample?n&seed   a random sample of the live items (the page's gallery strip)
    GET  /api/items/{id}            one gallery item, by its stable id (404 once removed)
    POST /api/items                 add an item (--writable): JSON {"vector", "label", "path",
                                    "metadata"}, or a multipart image `file` (+ label, path,
                                    metadata as a JSON string) embedded here; 201 {"id": n}
    DELETE /api/items/{id}          remove an item (--writable); 404 for an unknown id
    GET  /api/thumbnail/{id}?size   a resized PNG/JPEG of the gallery file, cached
    POST /api/search/image?k        multipart upload `file` (+ form field `k`, or `k` in the query)
    GET  /api/search/item/{id}?k    neighbours of a gallery item (the item itself excluded)
    POST /api/search/vector         {"vector": [D floats], "k": n, "where": {filter}}: `where`
                                    (also a JSON form field of image search) keeps the items with
                                    this label, path, path_prefix, meta {name: value} (`WhereFilter`)
                                    Every search takes `rerank` (none, aqe, alpha-qe), `rerank_n`
                                    and `rerank_alpha`: fields of the vector body, query
                                    parameters of the others (default: `vmfml serve --rerank`)
    POST /api/classify?k            multipart upload `file` (+ `k`): the known class and its
                                    probability, or "unknown" (when the server has a classifier)
    GET  /openapi.json, /docs       the API schema, and an offline page that lists it

Every request passes these checks, outermost first (`middleware`): its Host header must name
this server (`allowed_hosts`: loopback names by default; 400 otherwise, against DNS rebinding); a
POST/PUT/PATCH/DELETE with a foreign `Origin` is refused (403); with an API key set, /api/ routes
but /api/health need `Authorization: Bearer KEY` (401); the body must arrive within
`body_timeout_s` (408) and is counted while it streams in (413 past the limit). Then the route:
an unknown query parameter is refused (422, naming it), JSON bodies are read with exact types
(no string for a number, no boolean for an integer). Images are decoded by `vmfml.data.decode`
(raster formats only, from their first bytes: 415; pixel count checked before decoding: 413) in
`settings.decode_slots` slots at once (503 with Retry-After when none frees up in time), and a
thumbnail is only served from a file that resolves inside the gallery folder
(`Gallery.image_file`).

Items are addressed by their stable id through the live store (`GalleryStore.get`): ids are never
renumbered or reused, so a removal by `vmfml index remove` or another process shows at the next
request, and a thumbnail cached for an id is only served while that id is live. Writes (only with
`settings.writable`, else 403) are acknowledged once the store has them on disk.

This module does not use `from __future__ import annotations`: FastAPI must see the route
functions' annotations as objects (some are local classes and local `Annotated` types whose bounds
come from the index and the settings), not as strings.
"""

import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import faiss
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware

from vmfml.heap import release_memory
from vmfml.index.rerank import MAX_ALPHA, MAX_N, search_rerank
from vmfml.index.where import Clause
from vmfml.web.api_docs import render_api_docs
from vmfml.web.errors import add_error_handlers
from vmfml.web.images import (
    DecodeSlots,
    ThumbnailCache,
    encode_thumbnail,
    open_image,
)
from vmfml.web.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    BodyTimeoutMiddleware,
    OriginCheckMiddleware,
    SecurityHeadersMiddleware,
)
from vmfml.web.settings import Hit, IndexLike, SearcherLike, ServeSettings

__all__ = ["STATIC_DIR", "Gallery", "SearcherLike", "ServeSettings", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_SEARCH_PATH = "/api/search/image"  # the routes that take an upload (their own body limit)
CLASSIFY_PATH = "/api/classify"
ITEMS_PATH = "/api/items"  # POST: add an item (a vector, or an image upload) with --writable
META_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a metadata name a filter may use (vmfml.index.where)
RerankMethod = Literal["none", "aqe", "alpha-qe"]  # vmfml.index.rerank.SEARCH_METHODS
READ_ONLY = "this server is read-only: start it with --writable to add and remove items"
# After decoding an image this large, freed memory is handed back to the system (`release_memory`).
RELEASE_AFTER_PIXELS = 1 << 22


def create_app(
    searcher: SearcherLike, settings: ServeSettings | None = None, classifier: Any = None
) -> FastAPI:
    """Build the FastAPI app over `searcher` (a `vmfml.index.Searcher` or anything alike), with
    `/api/classify` answered by `classifier` (a `vmfml.openset.OpenSetClassifier` of the same
    model) when one is given.

    Nothing touches the network here: tests call the app through `fastapi.testclient.TestClient`.
    """
    settings = settings or ServeSettings()
    gallery = Gallery(searcher.index, settings.gallery_root)
    thumbnails = ThumbnailCache(int(settings.thumbnail_cache_mb * (1 << 20)))
    slots = DecodeSlots(settings.decode_slots, settings.decode_wait_s)

    app = FastAPI(
        title="vmfml image search",
        version="1",
        description="Nearest-neighbour image search over a vmfml index.",
        docs_url=None,  # Swagger UI comes from a CDN; /docs below is an offline page instead
        redoc_url=None,
        dependencies=[Depends(_refuse_unknown_query_parameters)],
    )
    add_error_handlers(app)
    # Added innermost first: a request meets them in the reverse order.
    app.add_middleware(
        BodyLimitMiddleware,
        upload_limit=settings.max_upload_bytes,
        upload_paths={IMAGE_SEARCH_PATH, CLASSIFY_PATH, ITEMS_PATH},
    )
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.body_timeout_s)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(OriginCheckMiddleware)
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts), www_redirect=False
    )
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.searcher = searcher
    app.state.settings = settings
    app.state.thumbnails = thumbnails

    # Registered in this order: /api/items/sample must come before /api/items/{item_id}.
    _add_page_routes(app)
    _add_gallery_routes(
        app, gallery, settings, _model_name(getattr(searcher, "model", None)), classifier
    )
    _add_thumbnail_route(app, gallery, settings, thumbnails, slots)
    _add_search_routes(app, gallery, settings, searcher, slots)
    _add_classify_route(app, settings, searcher, classifier, slots)
    _add_write_routes(app, gallery, settings, searcher, slots)
    return app


def _query_parameter_names(dependant: Dependant) -> set[str]:
    """The query parameters a route reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameter_names(sub)
    return names


def _refuse_unknown_query_parameters(request: Request) -> None:
    """422 for a query parameter the route does not read: it would otherwise be ignored silently."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.url.path.startswith("/api/"):
        return
    known = _query_parameter_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        raise HTTPException(
            422, f"unknown query parameter(s) {', '.join(unknown)}: {route.path} takes {takes}"
        )


class Gallery:
    """The live gallery's items as clients see them: addressed by stable id through the store
    (`get`), counted now (not at start-up), paths relative to the gallery folder."""

    def __init__(self, index: IndexLike, gallery_root: str | Path | None = None) -> None:
        if gallery_root is not None and not Path(gallery_root).is_dir():
            raise FileNotFoundError(f"gallery folder not found: {gallery_root}")
        self.store = index
        self.dimension = _index_dimension(index)
        root_setting = gallery_root or index.meta.get("gallery_root")
        self.root = Path(root_setting).resolve() if root_setting else None
        # Item paths may have been recorded through a symlinked folder: accept either spelling.
        self._roots = (
            [Path(root_setting).resolve(), Path(root_setting).absolute()] if root_setting else []
        )
        self.id_param = PathParam(
            description="a gallery item's stable id (never renumbered; a removed id is 404)"
        )

    @property
    def count(self) -> int:
        """The number of items the gallery holds now (writes by other processes included)."""
        return len(self.store)

    def item(self, i: int) -> Mapping[str, Any]:
        """The item with id `i`, or a 404 naming the id."""
        item = self.store.get(i) if i >= 0 else None
        if item is None:
            raise HTTPException(
                404,
                f"unknown item id {i}: the gallery holds no item with this id (never "
                "given, or removed)",
            )
        return item

    def bounded_k(self, k: int) -> int:
        """k, at most the number of items held now (and at least 1)."""
        return max(1, min(k, self.count))

    def public_path(self, path: Any) -> str | None:
        """An item's path as shown to clients: relative to the gallery, never the server's layout.

        Pure string work (no `resolve`): it runs for every hit of every search.
        """
        if path is None:
            return None
        p = Path(str(path))
        if not p.is_absolute():
            return p.as_posix()
        for root in self._roots:
            if p.is_relative_to(root):
                return p.relative_to(root).as_posix()
        return p.name

    def public_item(self, item: Mapping[str, Any], score: float | None = None) -> dict[str, Any]:
        i = int(item["id"])
        out: dict[str, Any] = {
            "id": i,
            "label": item.get("label"),
            "path": self.public_path(item.get("path")),
            "thumbnail": f"/api/thumbnail/{i}",
        }
        if score is not None:
            out["score"] = float(score)
        return out

    def results(
        self,
        query: dict[str, Any],
        k: int,
        hits: Sequence[Hit],
        t0: float,
        rerank: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A search's answer: the query, k, the re-ranking (`{"rerank": Rerank}` as the searcher
        was given it; its scores are cosines to the expanded query), the hits best first and the
        time since `t0`."""
        return {
            "query": query,
            "k": k,
            "rerank": rerank["rerank"].describe() if rerank else {"method": "none"},
            "results": [self.public_item(h, h["score"]) for h in hits],
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def image_file(self, i: int, item: Mapping[str, Any] | None = None) -> Path:
        """The image file of item `i`, only if it resolves inside the gallery folder.

        Items are addressed by id only, but the stored path could still be absolute or hold '..'
        or a symlink out of the gallery: 403 for those, 404 for a missing file or folder.
        """
        item = self.item(i) if item is None else item
        if self.root is None:
            raise HTTPException(
                404, "this index records no gallery folder: start the server with --gallery-root"
            )
        path = (self.root / str(item["path"])).resolve()
        if not path.is_relative_to(self.root):
            raise HTTPException(403, f"item {i}'s file lies outside the gallery folder")
        if not path.is_file():
            raise HTTPException(404, f"item {i}'s image file is missing from the gallery")
        return path


def _add_page_routes(app: FastAPI) -> None:
    """The search page and the offline API docs."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # Decoding is always rationed (decode_slots >= 1): uploads and thumbnails may get 503.
        keyed = app.state.settings.api_key is not None
        return HTMLResponse(render_api_docs(app.openapi(), api_key=keyed, decode_limit=True))


def _add_gallery_routes(
    app: FastAPI,
    gallery: Gallery,
    settings: ServeSettings,
    model_name: str | None,
    classifier: Any = None,
) -> None:
    """Health and the gallery's items: listed, sampled, one by id."""
    ItemId = Annotated[int, gallery.id_param]

    @app.get("/api/health", summary="Server status, index size and limits")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "count": gallery.count,
            "dimension": gallery.dimension,
            "model": model_name,
            "gallery_root_set": gallery.root is not None,
            "writable": settings.writable,
            # OpenMP threads a search may use, read in a worker thread as searches run
            "search_threads": faiss.omp_get_max_threads(),
            "classifier": None
            if classifier is None
            else {
                "classes": len(classifier.class_names),
                "score": classifier.score,
                "keep_rate": classifier.keep_rate,
            },
            "rerank": search_rerank(
                settings.rerank, settings.rerank_n, settings.rerank_alpha
            ).describe(),
            "limits": {
                "max_k": settings.max_k,
                "default_k": settings.default_k,
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "decode_slots": settings.decode_slots,
            },
        }

    @app.get("/api/items", summary="List gallery items")
    def list_items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        items = gallery.store.items  # one snapshot of the live items, in id order
        page_items = items[offset : offset + limit]
        return {
            "total": len(items),
            "offset": offset,
            "limit": limit,
            "items": [gallery.public_item(it) for it in page_items],
        }

    @app.get("/api/items/sample", summary="A random sample of gallery items")
    def sample_items(
        n: Annotated[int, Query(ge=1, le=1000)] = 12,
        seed: Annotated[int | None, Query(description="repeatable sample when given")] = None,
    ) -> dict[str, Any]:
        items = gallery.store.items  # one snapshot of the live items, in id order
        positions = random.Random(seed).sample(range(len(items)), min(n, len(items)))
        return {
            "total": len(items),
            "items": [gallery.public_item(items[p]) for p in positions],
        }

    @app.get("/api/items/{item_id}", summary="One gallery item")
    def get_item(item_id: ItemId) -> dict[str, Any]:
        return gallery.public_item(gallery.item(item_id))


def _add_thumbnail_route(
    app: FastAPI,
    gallery: Gallery,
    settings: ServeSettings,
    thumbnails: ThumbnailCache,
    slots: DecodeSlots,
) -> None:
    """Thumbnails of gallery files, encoded once per (id, size) and revalidated by ETag."""
    ItemId = Annotated[int, gallery.id_param]

    @app.get(
        "/api/thumbnail/{item_id}",
        summary="A resized thumbnail of a gallery item",
        response_class=Response,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def thumbnail(
        request: Request,
        item_id: ItemId,
        size: Annotated[int, Query(ge=16, le=1024)] = settings.thumbnail_size,
    ) -> Response:
        # The id is checked on every request, cached or not: a removed item's thumbnail is 404.
        # Ids are never reused, so a cached entry can never show another item.
        item = gallery.item(item_id)
        key = (item_id, size)
        entry = thumbnails.get(key)
        if entry is None:
            path = gallery.image_file(item_id, item)
            async with slots.hold():
                data, media_type = await run_in_threadpool(
                    _thumbnail_of, path, size, settings.max_image_pixels, f"gallery image {item_id}"
                )
            stat = path.stat()
            entry = (data, media_type, f'"{item_id}-{size}-{stat.st_mtime_ns}-{stat.st_size}"')
            thumbnails.put(key, entry)
        data, media_type, etag = entry
        headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(content=data, media_type=media_type, headers=headers)


def _thumbnail_of(path: Path, size: int, max_pixels: int, what: str) -> tuple[bytes, str]:
    with open_image(path, max_pixels, what) as image:
        large = image.width * image.height >= RELEASE_AFTER_PIXELS
        encoded = encode_thumbnail(image, size)
    if large:
        release_memory()
    return encoded


def _add_search_routes(
    app: FastAPI,
    gallery: Gallery,
    settings: ServeSettings,
    searcher: SearcherLike,
    slots: DecodeSlots,
) -> None:
    """The three searches: by uploaded image, by gallery item, by embedding vector."""
    dimension = gallery.dimension
    max_k, default_k = settings.max_k, settings.default_k
    ItemId = Annotated[int, gallery.id_param]
    k_text = f"number of neighbours (1..{max_k})"
    K = Annotated[int, Query(ge=1, le=max_k, description=k_text)]
    method_text = "query expansion: none, aqe or alpha-qe (default: the server's --rerank)"
    n_text = f"neighbours the query is expanded by (0..{MAX_N}; default: the server's)"
    alpha_text = f"alpha-qe's weight exponent (0..{MAX_ALPHA:g}; default: the server's)"

    def rerank_args(method: str | None, n: int | None, alpha: float | None) -> dict[str, Any]:
        """`{"rerank": Rerank}` for the searcher, or {} for none: the request's choice, else the
        server's; 422 for n or alpha given to a search without re-ranking."""
        chosen = method or settings.rerank
        if chosen == "none":
            if n is not None or alpha is not None:
                raise HTTPException(
                    422,
                    "rerank_n and rerank_alpha apply to rerank aqe and alpha-qe; this "
                    "search has no re-ranking",
                )
            return {}
        try:
            return {
                "rerank": search_rerank(
                    chosen,
                    settings.rerank_n if n is None else n,
                    settings.rerank_alpha if alpha is None else alpha,
                )
            }
        except ValueError as err:
            raise HTTPException(422, str(err)) from err

    def rerank_query(
        rerank: Annotated[RerankMethod | None, Query(description=method_text)] = None,
        rerank_n: Annotated[int | None, Query(ge=0, le=MAX_N, description=n_text)] = None,
        rerank_alpha: Annotated[
            float | None, Query(ge=0, le=MAX_ALPHA, description=alpha_text)
        ] = None,
    ) -> dict[str, Any]:
        return rerank_args(rerank, rerank_n, rerank_alpha)

    RerankArgs = Annotated[dict[str, Any], Depends(rerank_query)]

    @app.post(
        IMAGE_SEARCH_PATH,
        summary="Search with an uploaded image",
        description=f"Multipart upload: `file` (at most {settings.max_upload_mb:g} MiB, "
        f"{settings.max_image_pixels} pixels; JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM) and "
        "optional `k`, as a form field or in the query string.",
    )
    async def search_image(
        file: Annotated[UploadFile, File(description="the query image")],
        rerank: RerankArgs,
        k_form: Annotated[int | None, Form(alias="k", ge=1, le=max_k, description=k_text)] = None,
        k_query: Annotated[int | None, Query(alias="k", ge=1, le=max_k, description=k_text)] = None,
        where_form: Annotated[
            str | None,
            Form(alias="where", description='a JSON filter object, e.g. {"label": "shoe"}'),
        ] = None,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        where = WhereFilter.from_form(where_form)
        if k_form is not None and k_query is not None and k_form != k_query:
            raise HTTPException(
                422, f"k: given twice, {k_query} in the query and {k_form} in the form"
            )
        k = k_query or k_form or default_k
        name = file.filename or "upload"
        async with slots.hold():
            # Decoding and the forward pass are CPU-bound: keep them off the event loop.
            image = await run_in_threadpool(
                open_image, file.file, settings.max_image_pixels, f"the uploaded file {name!r}"
            )
            try:
                hits = await run_in_threadpool(
                    searcher.search_image, image, gallery.bounded_k(k), *where, **rerank
                )
            finally:
                image.close()
                if image.width * image.height >= RELEASE_AFTER_PIXELS:
                    await run_in_threadpool(release_memory)
        query = {"type": "image", "filename": name, "width": image.width, "height": image.height}
        return gallery.results(query, k, hits, t0, rerank)

    @app.get("/api/search/item/{item_id}", summary="Neighbours of a gallery item (itself excluded)")
    def search_item(item_id: ItemId, rerank: RerankArgs, k: K = default_k) -> dict[str, Any]:
        t0 = time.perf_counter()
        item = gallery.item(item_id)
        try:
            hits = searcher.search_id(item_id, max(1, min(k, gallery.count - 1)), **rerank)
        except IndexError as err:  # removed between the check above and the search
            raise HTTPException(404, f"unknown item id {item_id}: {err}") from err
        query = {"type": "item", **gallery.public_item(item)}
        return gallery.results(query, k, hits, t0, rerank)

    # A local class: its bounds come from the index and the settings. Strict: JSON types exact
    # (no "5" or true for k, no "0.1" or true for a vector element; an integer is a number).
    class VectorQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        vector: list[float] = Field(description=f"a {dimension}-d embedding (L2-normalized here)")
        k: int = Field(default_k, ge=1, le=max_k, description=f"number of neighbours (1..{max_k})")
        where: WhereFilter | None = Field(
            None, description="only items that pass every field given (label, path, ...)"
        )
        rerank: RerankMethod | None = Field(None, description=method_text)
        rerank_n: int | None = Field(None, ge=0, le=MAX_N, description=n_text)
        rerank_alpha: float | None = Field(None, ge=0, le=MAX_ALPHA, description=alpha_text)

    @app.post("/api/search/vector", summary="Search with an embedding vector")
    def search_vector(body: VectorQuery) -> dict[str, Any]:
        t0 = time.perf_counter()
        unit = unit_vector(body.vector, dimension)
        where = body.where.searcher_args() if body.where is not None else ()
        rerank = rerank_args(body.rerank, body.rerank_n, body.rerank_alpha)
        hits = searcher.search_vector(unit, gallery.bounded_k(body.k), *where, **rerank)
        return gallery.results({"type": "vector"}, body.k, hits, t0, rerank)


def unit_vector(values: Sequence[float], dimension: int) -> np.ndarray:
    """`values` as a float32 unit vector, or a 422 naming what is wrong with it (its length,
    NaN or infinite values, zero length)."""
    if len(values) != dimension:
        raise HTTPException(422, f"vector has {len(values)} values, the index expects {dimension}")
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise HTTPException(
            422, f"vector holds NaN or infinite values (at positions {bad[:10].tolist()})"
        )
    # Scaled by its largest value first, the norm cannot overflow (1e308) or underflow.
    largest = float(np.abs(v).max())
    if largest == 0.0:
        raise HTTPException(422, "vector has zero length: it has no direction to search")
    v = v / largest
    # Embeddings live on the unit sphere, and the score is a cosine: normalize the vector.
    return (v / np.linalg.norm(v)).astype(np.float32)


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


def _add_classify_route(
    app: FastAPI,
    settings: ServeSettings,
    searcher: SearcherLike,
    classifier: Any,
    slots: DecodeSlots,
) -> None:
    """The known class of an uploaded image, with its posterior probability, or "unknown"."""
    max_classes = len(classifier.class_names) if classifier is not None else 1
    k_text = f"number of classes shown (1..{max_classes})"

    @app.post(
        CLASSIFY_PATH,
        summary="Classify an uploaded image: its known class, or unknown",
        description=f"Multipart upload: `file` (at most {settings.max_upload_mb:g} MiB, "
        f"{settings.max_image_pixels} pixels; JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM) and "
        "optional `k`. Answers the best class with its posterior probability under the vMF "
        'model, the top k, the rejection score and its threshold, and `label: "unknown"` '
        "when the score says the image is of none of the known classes. 404 when the server "
        "was started without a classifier.",
    )
    async def classify(
        file: Annotated[UploadFile, File(description="the image to classify")],
        k_form: Annotated[
            int | None, Form(alias="k", ge=1, le=max_classes, description=k_text)
        ] = None,
        k_query: Annotated[
            int | None, Query(alias="k", ge=1, le=max_classes, description=k_text)
        ] = None,
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        if classifier is None:
            raise HTTPException(
                404,
                "this server has no classifier: start it with --classifier FILE (a run's "
                "classifier.pt; `vmfml classify` fits one for an older run)",
            )
        if k_form is not None and k_query is not None and k_form != k_query:
            raise HTTPException(
                422, f"k: given twice, {k_query} in the query and {k_form} in the form"
            )
        k = k_query or k_form or min(3, max_classes)
        name = file.filename or "upload"
        embedding = await embed_upload(file, name, settings, searcher, slots)
        prediction = classifier.predict(embedding, top_k=k)
        best = classifier.class_names[int(prediction.label[0])]
        unknown = bool(prediction.unknown[0])
        return {
            "query": {"type": "image", "filename": name},
            "label": "unknown" if unknown else best,
            "known": not unknown,
            "class": best,
            "probability": float(prediction.probability[0]),
            "score": float(prediction.score[0]),
            "score_name": classifier.score,
            "threshold": classifier.threshold,
            "top": [
                {"class": classifier.class_names[int(c)], "probability": float(p)}
                for c, p in zip(prediction.top[0], prediction.top_probability[0], strict=True)
            ],
            "took_ms": round((time.perf_counter() - t0) * 1000, 3),
        }


class WhereFilter(BaseModel):
    """A search filter: the items whose every given field matches (`vmfml.index.where`).

    `{"label": "shoe", "path_prefix": "shop7/", "meta": {"camera": 3}}`: label equal, path
    equal (`path`) or starting with `path_prefix`, each metadata value equal (same JSON type).
    Paths are matched as the index stores them (as `vmfml search --where` does), which may be
    absolute where the listing shows them relative to the gallery folder.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    label: str | None = Field(None, min_length=1)
    path: str | None = Field(None, min_length=1)
    path_prefix: str | None = Field(None, min_length=1)
    meta: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @classmethod
    def from_form(cls, text: str | None) -> tuple[Any, ...]:
        """The search arguments of a form field holding the filter as JSON (() for none)."""
        if text is None:
            return ()
        try:
            return cls.model_validate_json(text).searcher_args()
        except ValidationError as err:
            raise RequestValidationError(
                [{**e, "loc": ("where", *e["loc"])} for e in err.errors()]
            ) from err

    def searcher_args(self) -> tuple[Any, ...]:
        """`(clauses,)` for the searcher, or () without any field; 422 for a bad meta name or
        a value NaN or infinite."""
        clauses = []
        if self.label is not None:
            clauses.append(Clause("label", "=", self.label))
        if self.path is not None:
            clauses.append(Clause("path", "=", self.path))
        if self.path_prefix is not None:
            clauses.append(Clause("path", "^=", self.path_prefix))
        for name, value in self.meta.items():
            if not META_NAME.fullmatch(name):
                raise HTTPException(
                    422, f"where.meta: bad name {name!r}: letters, digits, _ and - only"
                )
            if isinstance(value, float) and not np.isfinite(value):
                raise HTTPException(422, f"where.meta.{name}: NaN and infinity are not allowed")
            clauses.append(Clause(f"meta.{name}", "=", value))
        return (tuple(clauses),) if clauses else ()


class NewItem(BaseModel):
    """The fields of an item to add (JSON types exact; `metadata` maps names to scalars)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    label: str | None = None
    path: str | None = None
    metadata: dict[str, str | int | float | bool] = Field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        """The item as the store takes it; 422 for a metadata number that is not finite."""
        for name, value in self.metadata.items():
            if isinstance(value, float) and not np.isfinite(value):
                raise HTTPException(422, f"metadata.{name}: NaN and infinity are not allowed")
        return {"label": self.label, "path": self.path, "meta": dict(self.metadata)}


class NewVectorItem(NewItem):
    vector: list[float]


def _add_write_routes(
    app: FastAPI,
    gallery: Gallery,
    settings: ServeSettings,
    searcher: SearcherLike,
    slots: DecodeSlots,
) -> None:
    """Adding and removing items (`--writable` only): acknowledged once the store has the write
    on disk, and seen by the next search."""
    ItemId = Annotated[int, gallery.id_param]
    dimension = gallery.dimension

    def refuse_unless_writable() -> None:
        if not settings.writable:
            raise HTTPException(403, READ_ONLY)

    async def store_add(vector: np.ndarray, item: dict[str, Any]) -> dict[str, Any]:
        try:
            # The store fsyncs before it returns: off the event loop.
            ids = await run_in_threadpool(gallery.store.add, vector[None], [item])  # type: ignore[attr-defined]
        except ValueError as err:
            raise HTTPException(422, str(err)) from err
        return {"id": int(ids[0])}

    @app.post(
        ITEMS_PATH,
        status_code=201,
        summary="Add an item to the gallery (--writable)",
        description='JSON `{"vector": [D floats], "label", "path", "metadata": {name: scalar}}`'
        f" (the vector is L2-normalized here), or a multipart upload: `file` (at most "
        f"{settings.max_upload_mb:g} MiB, {settings.max_image_pixels} pixels), embedded with "
        "the index's model, and optional form fields `label`, `path`, `metadata` (a JSON "
        'object). Answers 201 `{"id": n}`, the new stable id, once the write is on disk. '
        "403 unless the server was started with --writable.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": NewVectorItem.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "label": {"type": "string"},
                                "path": {"type": "string"},
                                "metadata": {"type": "string", "description": "a JSON object"},
                            },
                        }
                    },
                },
            }
        },
    )
    async def add_item(request: Request) -> dict[str, Any]:
        refuse_unless_writable()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return await add_image(request)
        if not content_type.startswith("application/json"):
            raise HTTPException(
                415, "send the item as JSON (a vector) or as multipart/form-data (an image file)"
            )
        try:
            body = NewVectorItem.model_validate_json(await request.body())
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from err
        item = body.stored()
        return await store_add(unit_vector(body.vector, dimension), item)

    async def add_image(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=1, max_fields=4)
        try:
            unknown = sorted(set(form) - {"file", "label", "path", "metadata"})
            if unknown:
                raise HTTPException(
                    422,
                    f"unknown form field(s) {', '.join(unknown)}: give file, label, path, metadata",
                )
            file = form.get("file")
            if not isinstance(file, StarletteUploadFile):
                raise HTTPException(422, "file: an image file is required (multipart field file)")
            fields: dict[str, Any] = {}
            for name in ("label", "path", "metadata"):
                value = form.get(name)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise HTTPException(422, f"{name}: must be a text field, not a file")
                fields[name] = value
            if "metadata" in fields:
                try:
                    fields["metadata"] = json.loads(fields["metadata"])
                except json.JSONDecodeError as err:
                    raise HTTPException(422, f"metadata: not a JSON object: {err}") from err
            try:
                item = NewItem.model_validate(fields).stored()
            except ValidationError as err:
                raise RequestValidationError(err.errors()) from err
            name = file.filename or "upload"
            embedding = await embed_upload(file, name, settings, searcher, slots)
            vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
            return await store_add(vector, item)
        finally:
            await form.close()

    @app.delete(
        "/api/items/{item_id}",
        summary="Remove an item from the gallery (--writable)",
        description="Answers 200 once the removal is on disk; 404 for an unknown or removed id. "
        "403 unless the server was started with --writable.",
    )
    async def remove_item(item_id: ItemId) -> dict[str, Any]:
        refuse_unless_writable()
        try:
            # The store checks the id and removes it in one call, off the event loop: its lock
            # may be held by another write's fsync.
            await run_in_threadpool(gallery.store.remove, [item_id])  # type: ignore[attr-defined]
        except ValueError as err:  # never given, or removed already (by anyone)
            raise HTTPException(404, f"unknown item id {item_id}: {err}") from err
        return {"removed": item_id}


async def embed_upload(
    file: Any, name: str, settings: ServeSettings, searcher: SearcherLike, slots: DecodeSlots
) -> Any:
    """An uploaded image (`UploadFile`, FastAPI's or Starlette's) decoded in a decode slot (its format and pixel count checked first) and
    embedded with the index's model: `[1, D]`. Memory of a large decode goes back to the system."""
    async with slots.hold():
        image = await run_in_threadpool(
            open_image, file.file, settings.max_image_pixels, f"the uploaded file {name!r}"
        )
        try:
            return await run_in_threadpool(searcher.embed_images, [image])
        finally:
            image.close()
            if image.width * image.height >= RELEASE_AFTER_PIXELS:
                await run_in_threadpool(release_memory)
