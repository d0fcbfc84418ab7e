"""Error responses of the app: always `{"detail": "<one readable sentence>"}` with a 4xx status
(validation errors add the structured `errors` list FastAPI would have given)."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException


def add_error_handlers(app: FastAPI) -> None:
    """Answer validation errors and `HTTPException`s as `{"detail": ...}`."""
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)


def _describe_validation_errors(errors: Sequence[Any]) -> str:
    """One sentence for pydantic's error list: `where: what` for each, joined by "; "."""
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
