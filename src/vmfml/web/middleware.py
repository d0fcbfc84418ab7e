"""The app's own ASGI middlewares, each one check at the boundary of every request:

- `OriginCheckMiddleware`: a request that can change state (POST, PUT, PATCH, DELETE) from a page
  of another site (its `Origin` is not this server's) is refused with 403;
- `ApiKeyMiddleware`: with a key set, /api/ (all but /api/health) needs `Authorization: Bearer KEY`
  (401 otherwise), compared in constant time;
- `BodyTimeoutMiddleware`: a request body must arrive whole within a time limit (408), so a client
  sending a byte now and then cannot hold a connection and a worker for ever;
- `BodyLimitMiddleware`: the body's size, counted while it streams in (413);
- `SecurityHeadersMiddleware`: the headers that keep the page from loading anything but this
  server's files.

The Host header is checked by Starlette's `TrustedHostMiddleware` (`app.create_app`). All are pure
ASGI (no `BaseHTTPMiddleware`): nothing is buffered and there is no per-request task overhead.
"""

import hmac
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON bodies (a vector query) are small: a 4096-d vector written with 20 characters per value
# is 80 KiB. Anything bigger than this is refused while it streams in.
MAX_JSON_BYTES = 1 << 20
# Multipart framing and the `k` field around an uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 << 10

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


STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_API_PATHS = frozenset({"/api/health"})  # answered without a key (status and limits only)


class OriginCheckMiddleware:
    """Refuse with 403 a POST, PUT, PATCH or DELETE whose `Origin` is not this server.

    A browser sends `Origin` with every cross-site POST (a form or `fetch` of a page elsewhere);
    a request without it (curl, a script) is not from another site's page and is let through. The
    origin must have this request's own scheme and host:port (the `Host` header, itself checked
    against the allowed hosts); "null" (a sandboxed or file: page) is foreign.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in STATE_CHANGING_METHODS:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not _same_origin(origin, scope):
            detail = f"cross-site request refused: Origin {origin} is not this server"
            await _send_json(send, 403, {"detail": detail})
            return
        await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """Require `Authorization: Bearer KEY` on every /api/ path but `OPEN_API_PATHS` (401).

    The key is compared with `hmac.compare_digest`, in time that does not depend on where the
    given key first differs.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith("/api/")
            or path in OPEN_API_PATHS
            or hmac.compare_digest(_header_bytes(scope, b"authorization"), self.expected)
        ):
            await self.app(scope, receive, send)
            return
        detail = "this server needs an API key: send the header 'Authorization: Bearer KEY'"
        await _send_json(send, 401, {"detail": detail}, [(b"www-authenticate", b"Bearer")])


class BodyTimeoutMiddleware:
    """Answer 408 (and close the connection) when a request body is not whole within `seconds`.

    Uvicorn times out idle connections but not a body that trickles in. The clock starts with
    the request; each wait for the next chunk is cut at what is left of it, until the last chunk
    is in (a response may still wait on `receive` for a disconnect, without a deadline). As with the size
    limit, the refusal is an `HTTPException` raised from the app's `receive`, which FastAPI's
    body parsing lets through to the error handler.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_done = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # later receives only wait for a disconnect: no deadline
                return await receive()
            left = deadline - anyio.current_time()
            try:
                with anyio.fail_after(max(left, 0.0)):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"request body not received within {self.seconds:g} s",
                    headers={"connection": "close"},
                ) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)


class BodyLimitMiddleware:
    """Refuse request bodies over a per-path limit with 413, counting bytes while they stream in.

    Multipart requests to `upload_paths` may carry `upload_limit` bytes of file (plus multipart
    framing); every other request (a JSON item added to /api/items included) `json_limit` bytes. A declared Content-Length over the limit is refused
    before a byte of body is read. Otherwise the app's `receive` is wrapped: the chunk that
    crosses the limit raises an `HTTPException(413)`, which FastAPI re-raises from its body
    parsing (it does not turn it into a 400), so the client gets a JSON 413 and the server has
    held at most one chunk past the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        upload_limit: int,
        upload_paths: Collection[str],
        json_limit: int = MAX_JSON_BYTES,
    ) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.upload_paths = frozenset(upload_paths)
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        multipart = _header_bytes(scope, b"content-type").lower().startswith(b"multipart/form-data")
        if scope["path"] in self.upload_paths and multipart:
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
    """Add `SECURITY_HEADERS` to every response."""

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


def _header_bytes(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return b""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _same_origin(origin: str, scope: Scope) -> bool:
    """Whether `origin` (scheme://host[:port]) is the server this request was sent to."""
    parts = urlsplit(origin)
    host = (_header(scope, b"host") or "").lower()
    return (
        parts.scheme == scope.get("scheme", "http") and bool(host) and parts.netloc.lower() == host
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(
    send: Send,
    status: int,
    payload: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = JSONResponse(payload).body
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers or [])
    # The body was not read: tell the client the connection will not be reused.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
