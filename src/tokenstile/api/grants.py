"""The grant types of the OAuth 2.0 token endpoint (RFC 6749), by name.

``GRANTS`` is the one list: the token endpoint looks the form's ``grant_type`` up in it,
and the RFC 8414 metadata and the OpenAPI form read their names and parameters from it.
A new grant type is one handler and one entry here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tokenstile.core.sessions import TokenPair
from tokenstile.core.signin import sign_in
from tokenstile.errors import InvalidRequest
from tokenstile.runtime import Runtime


@dataclass(frozen=True)
class GrantRequest:
    """What a grant handler gets: the form of a token request and who sent it."""

    runtime: Runtime
    form: Mapping[str, str]
    client_id: str | None
    client_ip: str | None
    user_agent: str | None

    def require(self, *names: str) -> tuple[str, ...]:
        """The values of the form parameters ``names``; raises ``InvalidRequest`` when
        one is missing."""
        if any(name not in self.form for name in names):
            verb = "is" if len(names) == 1 else "are"
            raise InvalidRequest(f"{' and '.join(names)} {verb} required.")
        return tuple(self.form[name] for name in names)


@dataclass(frozen=True)
class Grant:
    """A grant type: the handler that turns a request into a pair, and the form
    parameters it reads (for the OpenAPI document)."""

    handle: Callable[[GrantRequest], Awaitable[TokenPair]]
    parameters: tuple[str, ...]


async def _password(grant: GrantRequest) -> TokenPair:
    """RFC 6749 §4.3: sign in with a username and password."""
    username, password = grant.require("username", "password")
    rt = grant.runtime
    return await sign_in(
        rt.accounts,
        rt.sessions,
        username,
        password,
        client_ip=grant.client_ip,
        user_agent=grant.user_agent,
        client_id=grant.client_id,
    )


async def _refresh_token(grant: GrantRequest) -> TokenPair:
    """RFC 6749 §6: rotate a refresh token, as ``POST /auth/refresh`` does."""
    (token,) = grant.require("refresh_token")
    return await grant.runtime.sessions.refresh(
        token, client_ip=grant.client_ip, user_agent=grant.user_agent
    )


GRANTS: Mapping[str, Grant] = {
    "password": Grant(_password, parameters=("username", "password")),
    "refresh_token": Grant(_refresh_token, parameters=("refresh_token",)),
}
"""Every grant type the token endpoint accepts, by its ``grant_type``."""
