"""The demo page at ``/`` and the browser client at ``/static/tokenstile.js``.

The page is one template, ``web/index.html``, with ``{{ key }}`` placeholders, and one
strings file per language, ``web/strings/<language>.json``, all with the same keys. Both
pages are rendered once, when the app is built: every string is HTML-escaped (it may land
in an attribute value), and an unknown, unused or malformed placeholder raises there and
then, so a typo fails at startup instead of shipping as a visible ``{{ key }}``.

One string carries a slot: ``welcome`` (``"Welcome, {username}"``) lets each language put
the user's name where its word order wants it. It becomes the two placeholders
``welcome_before`` and ``welcome_after`` around ``<span id="username">``, which demo.js
fills in; its text is wrapped in ``<span class="welcome-prefix">`` (muted).

``GET /demo/config`` tells demo.js what the page cannot see for itself: whether the
server marks its cookies ``Secure`` (``COOKIE_SECURE``), with the sentences demo.js
shows about it, from ``web/strings/script/<language>.json`` (same keys in every language).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from tokenstile.api.messages import prefers_korean

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
TEMPLATE_PATH = WEB_DIR / "index.html"
STRINGS_DIR = WEB_DIR / "strings"
SCRIPT_STRINGS_DIR = STRINGS_DIR / "script"
LANGUAGES = ("en", "ko")

# Anything between double braces on one line; the key is checked against the strings.
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_USERNAME_SLOT = "{username}"


class TemplateError(ValueError):
    """The demo page template and a language's strings do not fit together."""


def load_strings(language: str, directory: Path | None = None) -> dict[str, str]:
    """Read ``<directory>/<language>.json`` (the page's strings by default): one JSON
    object of string values, no repeated key."""
    path = (directory or STRINGS_DIR) / f"{language}.json"
    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    if not isinstance(data, dict):
        raise TemplateError(f"{path.name}: expected a JSON object")
    for key, value in data.items():
        if not isinstance(value, str):
            raise TemplateError(f"{path.name}: {key!r} is not a string")
    return data


def render_page(template: str, strings: Mapping[str, str]) -> str:
    """Fill every ``{{ key }}`` in ``template`` with the HTML-escaped string for ``key``.

    Raises :class:`TemplateError` on an unknown key, a malformed placeholder, or a string
    the template never uses.
    """
    values = _html_values(strings)
    pieces = _PLACEHOLDER.split(template)  # literal, key, literal, key, ..., literal
    used: set[str] = set()
    out: list[str] = []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if "{{" in piece or "}}" in piece:
                raise TemplateError(f"malformed placeholder in {piece.strip()[:80]!r}")
            out.append(piece)
            continue
        key = piece.strip()
        if key not in values:
            raise TemplateError(f"unknown placeholder {{{{ {key} }}}}")
        used.add(key)
        out.append(values[key])
    unused = sorted(values.keys() - used)
    if unused:
        raise TemplateError(f"strings the template never uses: {', '.join(unused)}")
    return "".join(out)


def render_pages() -> dict[str, str]:
    """The demo page in every language, keyed by language code."""
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    pages = {}
    for language in LANGUAGES:
        strings = load_strings(language)
        if strings.get("lang") != language:
            raise TemplateError(f"{language}.json: 'lang' must be {language!r}")
        try:
            pages[language] = render_page(template, strings)
        except TemplateError as exc:
            raise TemplateError(f"{language}.json: {exc}") from None
    return pages


def load_script_strings() -> dict[str, dict[str, str]]:
    """The sentences demo.js asks ``/demo/config`` for, by language; raises
    :class:`TemplateError` when the languages do not have the same keys."""
    strings = {language: load_strings(language, SCRIPT_STRINGS_DIR) for language in LANGUAGES}
    reference = set(strings["en"])
    for language, values in strings.items():
        if set(values) != reference:
            raise TemplateError(f"script/{language}.json: not the keys of script/en.json")
    return strings


def _cookie_secure(app: Any) -> bool:
    """COOKIE_SECURE of the tokenstile service ``app`` runs (Secure when unknown)."""
    auth = getattr(app.state, "tokenstile", None)
    return bool(getattr(getattr(auth, "settings", None), "cookie_secure", True))


def install_web(app: FastAPI) -> None:
    """Serve the demo page and the static browser client from the package."""
    router = APIRouter(include_in_schema=False)
    pages = render_pages()
    script_strings = load_script_strings()

    @router.get("/demo/config")
    async def demo_config(request: Request) -> JSONResponse:
        korean = prefers_korean(request.headers.get("accept-language"))
        return JSONResponse(
            {
                "cookie_secure": _cookie_secure(request.app),
                "messages": script_strings["ko" if korean else "en"],
            },
            headers={"Cache-Control": "no-store", "Vary": "Accept-Language"},
        )

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


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise TemplateError(f"key {key!r} appears twice")
        data[key] = value
    return data


def _html_values(strings: Mapping[str, str]) -> dict[str, str]:
    """Each string as escaped HTML; ``welcome`` becomes ``welcome_before``/``welcome_after``."""
    values = {key: html.escape(text, quote=True) for key, text in strings.items()}
    if "welcome_before" in values or "welcome_after" in values:
        raise TemplateError("'welcome_before'/'welcome_after' come from 'welcome'")
    if "welcome" in values:
        before, slot, after = strings["welcome"].partition(_USERNAME_SLOT)
        if not slot or _USERNAME_SLOT in after:
            raise TemplateError(f"'welcome' must contain {_USERNAME_SLOT} exactly once")
        del values["welcome"]
        values["welcome_before"] = _muted(before)
        values["welcome_after"] = _muted(after)
    return values


def _muted(text: str) -> str:
    """``text`` escaped in a muted span, with its outer whitespace kept outside the span."""
    core = text.strip()
    if not core:
        return html.escape(text, quote=True)
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return f'{lead}<span class="welcome-prefix">{html.escape(core, quote=True)}</span>{trail}'
