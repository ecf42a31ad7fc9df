"""tokenstile as a library: an existing FastAPI app mounts the router and guards its routes."""

# No `from __future__ import annotations`: FastAPI resolves these route annotations.

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI

from tests.accounts import bearer, signed_in
from tests.api.conftest import FAST_HASHING
from tests.servers import LiveServer
from tokenstile.api import AccessClaims, Tokenstile
from tokenstile.settings import Settings


def build_app(data_dir: Path) -> FastAPI:
    """What the README shows: mount tokenstile, protect your own route."""
    auth = Tokenstile(Settings(_env_file=None, data_dir=data_dir, **FAST_HASHING))  # type: ignore[call-arg, arg-type]
    app = FastAPI(lifespan=auth.lifespan)
    auth.install(app)
    app.state.test_auth = auth

    @app.get("/notes")
    async def notes(user: Annotated[AccessClaims, Depends(auth.current_user)]) -> dict[str, str]:
        return {"owner": user.username}

    @app.get("/public")
    async def public(
        user: Annotated[AccessClaims | None, Depends(auth.optional_user)],
    ) -> dict[str, str | None]:
        return {"viewer": user.username if user else None}

    return app


def test_an_existing_app_mounts_tokenstile_and_protects_its_routes(tmp_path: Path) -> None:
    server = LiveServer(build_app(tmp_path)).start()
    try:
        pair = signed_in(server.client)

        anonymous = server.client.get("/notes")
        owned = server.client.get("/notes", headers=bearer(pair["access_token"]))
        public = server.client.get("/public")
        server.client.post("/auth/logout", headers=bearer(pair["access_token"]))
        after_logout = server.client.get("/notes", headers=bearer(pair["access_token"]))

        assert (anonymous.status_code, anonymous.json()["error"]) == (401, "invalid_token")
        assert owned.status_code == 200
        assert owned.json()["owner"].startswith("user-")
        assert public.json() == {"viewer": None}
        assert (after_logout.status_code, after_logout.json()["error"]) == (401, "token_revoked")
    finally:
        server.stop()


def test_overriding_current_user_applies_to_tokenstiles_own_routes(tmp_path: Path) -> None:
    app = build_app(tmp_path)
    auth: Tokenstile = app.state.test_auth
    stand_in = AccessClaims(
        sub="u-1", sid="s-1", jti="j-1", iat=0, exp=0, client_id="c", username="stand-in"
    )
    app.dependency_overrides[auth.current_user] = lambda: stand_in
    server = LiveServer(app).start()
    try:
        mine = server.client.get("/notes")
        theirs = server.client.get("/users/me")

        assert mine.json() == {"owner": "stand-in"}
        assert theirs.json() == {"id": "u-1", "username": "stand-in"}
    finally:
        server.stop()
