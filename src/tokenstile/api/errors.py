"""The one place errors become HTTP responses: ``{"error": CODE, "detail": sentence}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tokenstile.api.messages import localized
from tokenstile.errors import AuthenticationError, MissingToken, RateLimited, TokenstileError

logger = logging.getLogger("tokenstile")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_token",
    404: "not_found",
    405: "method_not_allowed",
    413: "invalid_request",
    415: "invalid_request",
}


def error_response(
    request: Request,
    status_code: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    metrics = getattr(request.app.state, "tokenstile_metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    body = {
        "error": code,
        "detail": localized(code, detail, request.headers.get("accept-language")),
    }
    return JSONResponse(body, status_code=status_code, headers={**NO_STORE, **(headers or {})})


async def _tokenstile_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenstileError)
    headers: dict[str, str] = {}
    if isinstance(exc, MissingToken):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{exc.code}"'
        )
    elif isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status_code == 503:
        headers["Retry-After"] = "1"
    if exc.status_code >= 500:
        # The cause's type only: driver messages may quote statement parameters.
        logger.warning("request failed: %s (%s)", exc.code, type(exc.__cause__).__name__)
    response = error_response(request, exc.status_code, exc.code, exc.detail, headers)
    for name, value in exc.headers:
        response.headers.append(name, value)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    detail = "Invalid request: " + "; ".join(problems) if problems else "Invalid request."
    return error_response(request, 422, "invalid_request", detail)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    return error_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def install_error_handlers(app: FastAPI) -> None:
    """Map tokenstile errors, validation errors and HTTP errors to the JSON error body."""
    app.add_exception_handler(TokenstileError, _tokenstile_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
