"""The demo page at ``/`` and the browser client at ``/static/tokenstile.js``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tokenstile.api.messages import prefers_korean

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def install_web(app: FastAPI) -> None:
    """Serve the demo page and the static browser client from the package."""
    router = APIRouter(include_in_schema=False)
    pages = {
        "en": (WEB_DIR / "index.html").read_text(encoding="utf-8"),
        "ko": (WEB_DIR / "index.ko.html").read_text(encoding="utf-8"),
    }

    @router.get("/")
    async def demo_page(request: Request) -> HTMLResponse:
        korean = prefers_korean(request.headers.get("accept-language"))
        return HTMLResponse(
            pages["ko" if korean else "en"],
            headers={
                "Cache-Control": "no-store",
                "Content-Language": "ko" if korean else "en",
                "Vary": "Accept-Language",
                "Content-Security-Policy": (
                    "default-src 'self'; script-src 'self'; style-src 'self'; "
                    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                    "base-uri 'none'; form-action 'self'"
                ),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
