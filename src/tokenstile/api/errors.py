"""The one place errors become HTTP responses: ``{"error": CODE, "detail": sentence}``,
and where routes say, for the OpenAPI document, which of these answers they can give."""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tokenstile.api.messages import localized
from tokenstile.api.metrics import Metrics
from tokenstile.api.schemas import ErrorBody
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


# The ``app.state`` attribute that holds the metrics counting error answers: written by
# install_error_handlers, read by error_response, both here.
_METRICS = "tokenstile_metrics"


def error_response(
    request: Request,
    status_code: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer, counted in the metrics that :func:`install_error_handlers`
    was given for this app."""
    metrics: Metrics | None = getattr(request.app.state, _METRICS, None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    body = {
        "error": code,
        "detail": localized(code, detail, request.headers.get("accept-language")),
    }
    return JSONResponse(body, status_code=status_code, headers={**NO_STORE, **(headers or {})})


def error_answer(request: Request, exc: TokenstileError) -> JSONResponse:
    """The answer to ``exc``, with the headers its kind calls for (``WWW-Authenticate``,
    ``Retry-After``); a route that must add its own (cookies to clear) adds them to this."""
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
        # Per request at debug only: the store logged its cause once (stores.failures),
        # and an outage fails every request. The cause's type only: driver messages may
        # quote statement parameters.
        logger.debug("request failed: %s (%s)", exc.code, type(exc.__cause__).__name__)
    return error_response(request, exc.status_code, exc.code, exc.detail, headers)


async def _tokenstile_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenstileError)
    return error_answer(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(error) for error in exc.errors()[:5]]
    detail = " ".join(problems) if problems else "The request is not valid."
    return error_response(request, 422, "invalid_request", detail)


# Whole-body problems, said without the parser's positions and model vocabulary.
_BODY_PROBLEMS = {
    "json_invalid": "The body is not valid JSON.",
    "json_type": "The body is not valid JSON.",
    "model_attributes_type": "The body must be a JSON object.",
    "model_type": "The body must be a JSON object.",
    "dict_type": "The body must be a JSON object.",
}


def _problem(error: Mapping[str, Any]) -> str:
    """One sentence for one validation error, naming the field as the client sent it."""
    kind = str(error.get("type", ""))
    if kind in _BODY_PROBLEMS:
        return _BODY_PROBLEMS[kind]
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "The body"
    if kind == "missing":
        return f"{field} is required."
    if kind == "extra_forbidden":
        return f"{field} is not a field of this request."
    if kind == "string_type":
        return f"{field} must be a string."
    if kind in ("bool_type", "bool_parsing"):
        return f"{field} must be true or false."
    message = str(error.get("msg", "is not valid")).rstrip(".")
    return f"{field}: {message[:1].lower()}{message[1:]}."


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    return error_response(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


@dataclass(frozen=True)
class DocumentedError:
    """One error answer a route can give, as its OpenAPI ``responses`` list it."""

    status: int
    code: str
    detail: str
    headers: tuple[str, ...] = ()
    body: type[BaseModel] = ErrorBody

    @classmethod
    def of(cls, error: type[TokenstileError]) -> DocumentedError:
        """The answer :func:`install_error_handlers` gives for ``error``."""
        return cls(error.status_code, error.code, error.default_detail, _header_names(error))


UNPARSABLE_BODY = DocumentedError(
    400, "invalid_request", "The body could not be read as JSON text (for example, not UTF-8)."
)
BODY_TOO_SLOW = DocumentedError(
    408, "invalid_request", "The body did not arrive within `BODY_TIMEOUT` seconds."
)
BODY_TOO_LARGE = DocumentedError(
    413, "invalid_request", "The body is larger than `MAX_BODY_BYTES`."
)


def error_responses(
    *errors: DocumentedError | type[TokenstileError],
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for the errors a route can answer with.

    One entry per status: the body's schema, with ``error`` restricted to the codes of
    that status; each code and what it means in the description; the headers the
    answers carry (required when every answer of that status carries them). Raises
    ``ValueError`` when two errors of one status have different bodies.
    """
    by_status: dict[int, list[DocumentedError]] = {}
    for error in errors:
        documented = error if isinstance(error, DocumentedError) else DocumentedError.of(error)
        by_status.setdefault(documented.status, []).append(documented)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, answers in sorted(by_status.items()):
        bodies = {answer.body for answer in answers}
        if len(bodies) != 1:
            raise ValueError(f"status {status} is documented with more than one body")
        codes = list(dict.fromkeys(answer.code for answer in answers))
        lines = dict.fromkeys(f"- `{answer.code}`: {answer.detail}" for answer in answers)
        names = dict.fromkeys(name for answer in answers for name in answer.headers)
        responses[status] = {
            "model": bodies.pop(),
            "description": "\n".join([f"{http.HTTPStatus(status).phrase}.", "", *lines]),
            "content": {"application/json": {"schema": {"properties": {"error": {"enum": codes}}}}},
        }
        if names:
            responses[status]["headers"] = {
                name: {
                    "description": _HEADER_DESCRIPTIONS[name],
                    "required": all(name in answer.headers for answer in answers),
                    "schema": {"type": "string"},
                }
                for name in names
            }
    return responses


_HEADER_DESCRIPTIONS = {
    "WWW-Authenticate": "The authentication challenge (RFC 6750 §3, RFC 7617).",
    "Retry-After": "Seconds to wait before trying again.",
}


def _header_names(error: type[TokenstileError]) -> tuple[str, ...]:
    """The headers :func:`error_answer` adds to an answer to ``error``."""
    if issubclass(error, AuthenticationError):
        return ("WWW-Authenticate",)
    if issubclass(error, RateLimited) or error.status_code == 503:
        return ("Retry-After",)
    return ()


def install_error_handlers(app: FastAPI, *, metrics: Metrics | None = None) -> None:
    """Map tokenstile errors, validation errors and HTTP errors to the JSON error body,
    counting each answer by its code in ``metrics`` when given."""
    if metrics is not None:
        setattr(app.state, _METRICS, metrics)
    app.add_exception_handler(TokenstileError, _tokenstile_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
