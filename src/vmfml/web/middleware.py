"""The app's two ASGI middlewares: a request body limit that counts bytes while they stream in,
and the security headers that keep the page from loading anything but this server's files.

Both are pure ASGI (no `BaseHTTPMiddleware`): nothing is buffered and there is no per-request
task overhead.
"""

from collections.abc import Collection
from typing import Any

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


class BodyLimitMiddleware:
    """Refuse request bodies over a per-path limit with 413, counting bytes while they stream in.

    Requests to `upload_paths` may carry `upload_limit` bytes of file (plus multipart framing);
    every other request `json_limit` bytes. A declared Content-Length over the limit is refused
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
        if scope["path"] in self.upload_paths:
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
