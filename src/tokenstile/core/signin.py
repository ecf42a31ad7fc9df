"""Signing in: a password check that opens a session, which credential changes win over.

A password change, a disable or an admin "end all sessions" bumps the user's credential
version *before* it ends the user's sessions. A login re-reads the version *after* it
created its session and ends that session if the version moved. So either the re-read
sees the change, or the session existed when the change ended the user's sessions: no
session created with the old credential state outlives the change (SPEC §1 invariant 11).
"""

from __future__ import annotations

from tokenstile.core.accounts import AccountService
from tokenstile.core.sessions import SessionService, TokenPair
from tokenstile.errors import InvalidCredentials


async def sign_in(
    accounts: AccountService,
    sessions: SessionService,
    username: str,
    password: str,
    *,
    client_ip: str | None = None,
    user_agent: str | None = None,
    remember_me: bool = False,
    client_id: str | None = None,
) -> TokenPair:
    """Check the credentials and open a session; its first token pair.

    Raises ``InvalidCredentials`` (also when the credentials changed while this login
    was checking them), ``RateLimited`` and ``StoreUnavailable``. Audited as
    ``login.failed`` or ``login.succeeded``; a session that a credential change overtook
    is audited as ``session.revoked`` (reason ``credentials_changed``) right after.
    """
    user = await accounts.authenticate(
        username, password, client_ip=client_ip, user_agent=user_agent
    )
    pair = await sessions.start(
        user, remember_me=remember_me, user_agent=user_agent, ip=client_ip, client_id=client_id
    )
    if not await accounts.is_current(user):
        await sessions.end(
            pair.session.sid,
            reason="credentials_changed",
            user_id=user.id,
            client_ip=client_ip,
            user_agent=user_agent,
        )
        raise InvalidCredentials()
    return pair
