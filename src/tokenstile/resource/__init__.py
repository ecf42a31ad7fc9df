"""Resource servers: verify a remote tokenstile's access tokens through its JWKS.

A service that receives tokens from a tokenstile server it does not run in-process
verifies them with :class:`RemoteVerifier` and protects routes with :class:`RemoteUser`::

    from tokenstile.api import AccessClaims, install_error_handlers
    from tokenstile.resource import RemoteUser, RemoteVerifier

    verifier = RemoteVerifier(
        "https://auth.example/.well-known/jwks.json",
        algorithm="ES256", issuer="tokenstile", audience="tokenstile",
    )
    current_user = RemoteUser(verifier)
    install_error_handlers(app)
"""

from tokenstile.resource._fastapi import RemoteUser
from tokenstile.resource._verifier import ActiveSessions, RemoteVerifier

__all__ = ["ActiveSessions", "RemoteUser", "RemoteVerifier"]
