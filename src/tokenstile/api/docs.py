"""The API documentation page, ``/docs`` (Swagger UI), served without the network.

FastAPI's own page loads its script from a CDN, so it is blank on a machine offline.
Here Swagger UI comes from the ``fastapi-offline`` package, which ships its files, and
``web/docs/docs.css`` (served beside them) trims the Authorize dialog to what a public
client sends: username, password and the prefilled ``client_id``. Tokens stay in the
page's memory (no ``persistAuthorization``), as the demo page keeps them.

There is no ``/redoc``: ReDoc's bundle loads its logo from the vendor's CDN.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tokenstile.api.web import WEB_DIR
from tokenstile.core.sessions import DEFAULT_CLIENT_ID

ASSETS_PATH = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; make ``/openapi.json`` list only the
    error answers tokenstile gives (see :func:`drop_generic_validation_errors`).

    ``app`` must be built with ``docs_url=None`` (and ``redoc_url=None``).
    """
    app.mount(
        ASSETS_PATH,
        StaticFiles(directory=WEB_DIR / "docs", packages=[("fastapi_offline", "static")]),
        name="docs-assets",
    )
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = generate()  # built once, then cached by FastAPI
        if fresh:
            drop_generic_validation_errors(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets = _root(request) + ASSETS_PATH
        return get_swagger_ui_html(
            openapi_url=_root(request) + _openapi_url(app),
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/docs.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # The badge would send the document to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
            init_oauth={"clientId": DEFAULT_CLIENT_ID},
        )


def drop_generic_validation_errors(document: dict[str, Any]) -> None:
    """Take FastAPI's generic 422 ``HTTPValidationError`` out of an OpenAPI document.

    FastAPI lists it on every route with a parameter, but tokenstile answers validation
    errors with its own body (api/errors.py), and each route that can fail validation
    lists that 422 itself; on a route like ``DELETE /auth/sessions/{sid}``, whose
    parameter cannot fail, FastAPI's entry is false.
    """
    generic = {"$ref": "#/components/schemas/HTTPValidationError"}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            content = responses.get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema") == generic:
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _openapi_url(app: FastAPI) -> str:
    if app.openapi_url is None:
        raise RuntimeError("the docs pages need the app's OpenAPI document")
    return app.openapi_url


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")
