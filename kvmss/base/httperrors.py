"""One JSON error shape for every kvmss HTTP API:
``{"error": {"code": "...", "message": "..."}}``, 4xx for bad input."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def describe_validation(errors: list[Any]) -> str:
    """'body.dataDisks.0.lun: Input should be less than or equal to 15' for the
    first error (and a count of the others)."""
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = str(first.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(400, "InvalidRequest", describe_validation(list(e.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HttpError")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(Exception)
    async def _bug(_r: Request, e: Exception) -> JSONResponse:
        # A bug: log it with its traceback, tell the caller without internals.
        logging.getLogger("kvmss.api").exception("unhandled error")
        return error_response(500, "InternalError", f"internal error ({type(e).__name__})")


def bearer_auth(token: str) -> Callable[..., None]:
    """A FastAPI dependency that accepts only ``Authorization: Bearer <token>``
    (compared in constant time) and answers 401 otherwise."""
    secret = token.encode()

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization is None:
            raise ApiError(401, "Unauthorized", "missing Authorization: Bearer token")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), secret):
            raise ApiError(401, "Unauthorized", "invalid bearer token")

    return auth
