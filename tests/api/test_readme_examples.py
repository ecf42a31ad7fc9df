"""The README's *Deploying* snippets for apps that mount tokenstile, run as written: the
code is read out of README.md, so the test breaks when the README and the library part."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts import bearer, signed_in
from tests.api.conftest import FAST_HASHING
from tests.servers import LiveServer
from tokenstile.errors import TokenstileError

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_python_block(containing: str) -> str:
    """The one ```python block of the README whose code contains ``containing``, with the
    indentation of a block inside a list item removed."""
    found = re.findall(r"^( *)```python\n(.*?)^\1```$", README.read_text(), flags=re.M | re.S)
    blocks = [textwrap.dedent(code) for _, code in found]
    matching = [block for block in blocks if containing in block]
    assert len(matching) == 1, f"{len(matching)} README blocks contain {containing!r}"
    return matching[0]


@pytest.fixture
def readme_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What ``Settings()`` in a snippet reads: TOKENSTILE_* variables, no stray .env."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("TOKENSTILE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOKENSTILE_DATA_DIR", str(tmp_path / "data"))
    for name, value in FAST_HASHING.items():
        monkeypatch.setenv(f"TOKENSTILE_{name.upper()}", value)
    return tmp_path


def run_snippet(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace


def test_the_readme_lifespan_runs_the_apps_and_tokenstiles_startup_and_shutdown(
    readme_environment: Path,
) -> None:
    example = run_snippet(readme_python_block("async with auth.lifespan(app)"))
    app, auth = example["app"], example["auth"]
    assert not hasattr(app.state, "http")  # nothing has started yet

    server = LiveServer(app).start()
    try:
        own_client: httpx.AsyncClient = app.state.http  # the app's own startup ran
        assert not own_client.is_closed
        assert auth.runtime() is not None  # and tokenstile's
        pair = signed_in(server.client)  # so its routes work
        me = server.client.get("/users/me", headers=bearer(pair["access_token"]))
        assert me.status_code == 200, me.text
    finally:
        server.stop()

    assert own_client.is_closed  # the app's own shutdown ran
    with pytest.raises(RuntimeError, match="not started"):
        auth.runtime()  # and tokenstile's closed its stores


def readme_error_codes() -> set[str]:
    """The codes named in the README's "Error codes (…):" paragraph."""
    text = README.read_text()
    start = text.index("Error codes (every one these routes answer with):")
    paragraph = text[start : text.index("\n\n", start)]
    return set(re.findall(r"`([a-z_]+)`", paragraph))


def error_codes_of(root: type[TokenstileError]) -> set[str]:
    codes = {root.code}
    for subclass in root.__subclasses__():
        codes |= error_codes_of(subclass)
    return codes


@pytest.fixture
def store_mode() -> str:
    """The error codes do not depend on the store: one server on SQLite."""
    return "sqlite"


def test_the_readme_lists_every_error_code_the_json_routes_answer_with(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    # Codes of the framework's own answers, as a live server gives them.
    method = server.client.get("/auth/login").json()["error"]
    no_route = server.client.get("/no/such/route").json()["error"]
    # Raised at start (configuration_error) or never answered as such (the root's).
    raised = error_codes_of(TokenstileError) - {"configuration_error", "server_error"}

    assert (method, no_route) == ("method_not_allowed", "not_found")
    assert readme_error_codes() >= raised | {method, no_route}
