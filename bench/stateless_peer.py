"""A stateless peer: FastAPI verifying tokenstile's access token with PyJWT, nothing more.

What fastapi-users' JWT strategy or authx do: a dependency decodes the bearer token
(HS256, the same secret, ``aud``/``iss`` ``tokenstile``, ``typ`` header ``at+jwt``) and
the route answers from the claims. No store, no session: a logged-out token keeps
working until it expires. The benchmark's reference for the protected route::

    TOKENSTILE_SECRET_KEY=... .venv/bin/python -m uvicorn stateless_peer:app \
        --app-dir bench --loop uvloop --http httptools --workers 1
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

SECRET_KEY = os.environ["TOKENSTILE_SECRET_KEY"].encode()
ISSUER = AUDIENCE = "tokenstile"
ACCESS_TOKEN_TYPE = "at+jwt"

app = FastAPI()
bearer = HTTPBearer()


class UserOut(BaseModel):
    id: str
    username: str


class Health(BaseModel):
    status: str


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "Invalid token.", headers={"WWW-Authenticate": "Bearer"}
    )


async def access_claims(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
) -> dict[str, Any]:
    """The verified claims of the bearer token; 401 for any invalid one."""
    try:
        decoded = jwt.decode_complete(
            credentials.credentials,
            SECRET_KEY,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.InvalidTokenError as exc:
        raise _unauthorized() from exc
    if decoded["header"].get("typ") != ACCESS_TOKEN_TYPE:
        raise _unauthorized()
    claims: dict[str, Any] = decoded["payload"]
    return claims


@app.get("/users/me")
async def me(claims: Annotated[dict[str, Any], Depends(access_claims)]) -> UserOut:
    return UserOut(id=claims["sub"], username=claims["preferred_username"])


@app.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok")
