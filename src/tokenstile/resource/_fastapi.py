"""The resource server's FastAPI dependency: a bearer token checked by a RemoteVerifier."""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from tokenstile.api.security import bearer_token
from tokenstile.core.codec import AccessClaims
from tokenstile.errors import MissingToken
from tokenstile.resource._verifier import RemoteVerifier


class RemoteUser(HTTPBearer):
    """Dependency returning the verified :class:`AccessClaims` of the request::

        verifier = RemoteVerifier("https://auth.example/.well-known/jwks.json", ...)
        remote_user = RemoteUser(verifier)

        @app.get("/orders")
        async def orders(user: Annotated[AccessClaims, Depends(remote_user)]): ...

    Raises tokenstile errors — ``MissingToken`` without a token, and whatever
    :meth:`RemoteVerifier.verify` raises — which
    :func:`tokenstile.api.install_error_handlers` turns into the JSON error body, with
    ``WWW-Authenticate`` on a 401 and ``Retry-After`` on a 503. As an HTTP bearer scheme
    it also appears in the app's OpenAPI document.
    """

    def __init__(self, verifier: RemoteVerifier) -> None:
        super().__init__(bearerFormat="JWT", scheme_name="tokenstile")
        self.verifier = verifier

    async def __call__(self, request: Request) -> AccessClaims:  # type: ignore[override]
        token = bearer_token(request)
        if token is None:
            raise MissingToken()
        return await self.verifier.verify(token)
