"""`vmfml serve`: an image-search page and HTTP API over a saved index.

- `app`: `create_app(searcher, settings)`, the FastAPI app and its routes;
- `settings`: `ServeSettings` (limits) and `SearcherLike` (what the app asks of a searcher);
- `middleware`: the checks at the boundary (Origin, API key, body timeout and size limit) and
  the security headers;
- `images`: image decoding (`vmfml.data.decode`) in a fixed number of slots, thumbnails and
  their cache;
- `errors`: every error answered as `{"detail": "..."}`;
- `api_docs`: the offline `/docs` page;
- `commands`: `vmfml serve` (uvicorn).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmfml.web.app import create_app
    from vmfml.web.settings import SearcherLike, ServeSettings

__all__ = ["SearcherLike", "ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `vmfml serve` must set OMP_NUM_THREADS before faiss and torch load
    # (OpenMP reads it once), and importing vmfml.web.commands imports this package first.
    if name == "create_app":
        from vmfml.web.app import create_app

        return create_app
    if name in ("SearcherLike", "ServeSettings"):
        from vmfml.web import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'vmfml.web' has no attribute {name!r}")
