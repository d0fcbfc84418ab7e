"""`vmfml serve`: an image-search page and HTTP API over a saved index."""

from vmfml.web.app import SearcherLike, ServeSettings, create_app

__all__ = ["SearcherLike", "ServeSettings", "create_app"]
