"""Accounts: registration, password checks and the username and password policies."""

from __future__ import annotations

import unicodedata
import uuid

from tokenstile.core.audit import NO_AUDIT, OK, REFUSED, AuditLog
from tokenstile.core.clock import Clock
from tokenstile.core.passwords import PasswordHasher
from tokenstile.core.ratelimit import DEFAULT_RATES, RateLimiter, RatePolicy
from tokenstile.core.store import UserRecord, UserStore
from tokenstile.errors import (
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    RegistrationClosed,
    WeakPassword,
    WrongPassword,
)

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 64
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
_USERNAME_PUNCTUATION = frozenset("._-@+")


def normalize_username(raw: str) -> str:
    """NFKC-normalised, case-folded and trimmed; ``InvalidRequest`` if unusable."""
    username = unicodedata.normalize("NFKC", raw).casefold().strip()
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        raise InvalidRequest(
            f"A username has {USERNAME_MIN_LENGTH} to {USERNAME_MAX_LENGTH} characters."
        )
    if not all(char.isalnum() or char in _USERNAME_PUNCTUATION for char in username):
        raise InvalidRequest("A username has only letters, digits and . _ - @ +")
    return username


def check_password_policy(password: str, username: str) -> None:
    """Raise ``WeakPassword`` for a password the policy refuses."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise WeakPassword(
            f"A password has {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters."
        )
    if password.casefold() == username or len(set(password)) < 3:
        raise WeakPassword("That password is too easy to guess.")


class AccountService:
    """Creates accounts and checks passwords; knows nothing of sessions.

    Audits ``login.failed``, ``password.changed`` and ``user.disabled`` (and, through
    the limiter, ``rate_limited``); a successful login is the session service's to audit.
    """

    def __init__(
        self,
        users: UserStore,
        hasher: PasswordHasher,
        *,
        clock: Clock,
        allow_registration: bool = True,
        limiter: RateLimiter | None = None,
        rates: RatePolicy = DEFAULT_RATES,
        audit: AuditLog = NO_AUDIT,
    ) -> None:
        self._audit = audit
        self._users = users
        self._hasher = hasher
        self._clock = clock
        self._allow_registration = allow_registration
        self._limiter = limiter
        self._rates = rates

    async def register(
        self,
        username: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> UserRecord:
        """Self-service sign-up; ``RegistrationClosed`` when turned off, ``RateLimited``
        past ``REGISTER_RATE_LIMIT`` attempts from one address."""
        if not self._allow_registration:
            raise RegistrationClosed()
        if self._limiter is not None and client_ip:
            await self._limiter.admit(
                [(f"register:ip:{client_ip}", self._rates.register_per_ip)],
                ip=client_ip,
                user_agent=user_agent,
            )
        return await self.create_user(username, password)

    async def create_user(self, username: str, password: str) -> UserRecord:
        """Create an account; raises ``InvalidRequest``, ``WeakPassword`` or ``UsernameTaken``."""
        name = normalize_username(username)
        check_password_policy(password, name)
        user = UserRecord(
            id=str(uuid.uuid4()),
            username=name,
            password_hash=await self._hasher.hash(password),
            created_at=self._clock(),
        )
        await self._users.add_user(user)
        return user

    async def authenticate(
        self,
        username: str,
        password: str,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> UserRecord:
        """The user these credentials name; ``InvalidCredentials`` otherwise.

        Unknown, disabled and wrong-password cases take the same time and answer alike.
        Every attempt is counted, atomically, before the password is checked (invariant
        12): past ``LOGIN_RATE_LIMIT`` attempts for one name in any period-long span (or
        ten times that from one address) raises ``RateLimited`` without checking it. A
        right password takes back its count for the name, not for the address. A refusal
        is audited as ``login.failed`` (reason ``unknown_user``, ``wrong_password`` or
        ``account_disabled``; never the name that was tried).
        """
        # Counted under the normalised name: every spelling of one account shares a limit.
        try:
            account = normalize_username(username)
        except InvalidRequest:
            account = username.strip().casefold()
        account_key = f"login:user:{account}"
        keys = [(account_key, self._rates.login_per_account)]
        if client_ip:
            keys.append((f"login:ip:{client_ip}", self._rates.login_per_ip))
        if self._limiter is None:
            return await self._verify(username, password, client_ip, user_agent)
        admission = await self._limiter.admit(keys, ip=client_ip, user_agent=user_agent)
        user = await self._verify(username, password, client_ip, user_agent)
        await self._limiter.release(admission, account_key)
        return user

    async def _verify(
        self, username: str, password: str, client_ip: str | None, user_agent: str | None
    ) -> UserRecord:
        try:
            user = await self._users.get_user_by_name(normalize_username(username))
        except InvalidRequest:
            user = None
        refusal = None
        if user is None:
            await self._hasher.verify_nobody(password)
            refusal = "unknown_user"
        elif not await self._hasher.verify(user.password_hash, password):
            refusal = "wrong_password"
        elif user.disabled_at:
            refusal = "account_disabled"
        if refusal is not None:
            self._audit.record(
                "login.failed",
                outcome=REFUSED,
                reason=refusal,
                user_id=user.id if user is not None else None,
                ip=client_ip,
                user_agent=user_agent,
            )
            raise InvalidCredentials()
        assert user is not None
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hasher.hash(password)
            await self._users.upgrade_password_hash(user.id, user.password_hash, new_hash)
        return user

    async def is_current(self, user: UserRecord) -> bool:
        """Whether ``user`` (as read before a password check) still may sign in: not
        disabled since, and no password change or "end all sessions" in between."""
        now = await self._users.get_user(user.id)
        return (
            now is not None
            and not now.disabled_at
            and now.credential_version == user.credential_version
        )

    async def change_password(
        self,
        user_id: str,
        current: str,
        new: str,
        *,
        sid: str | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> UserRecord:
        """Replace the password after checking the current one.

        Raises ``RateLimited`` past ``LOGIN_RATE_LIMIT`` attempts for the user (each is
        counted before the check, successful or not) and ``WrongPassword`` (403) for a
        wrong current password. Audited as ``password.changed``, ``ok`` or ``refused``
        (reason ``wrong_password``, ``weak_password`` or ``account_disabled``), from the
        session ``sid``.
        """
        context = {"user_id": user_id, "sid": sid, "ip": client_ip, "user_agent": user_agent}
        if self._limiter is not None:
            await self._limiter.admit(
                [(f"password:user:{user_id}", self._rates.login_per_account)], **context
            )
        user = await self._users.get_user(user_id)
        if user is None or user.disabled_at:
            self._audit.record(
                "password.changed", outcome=REFUSED, reason="account_disabled", **context
            )
            raise InvalidCredentials()
        if not await self._hasher.verify(user.password_hash, current):
            self._audit.record(
                "password.changed", outcome=REFUSED, reason="wrong_password", **context
            )
            raise WrongPassword("The current password is incorrect.")
        try:
            check_password_policy(new, user.username)
        except WeakPassword:
            self._audit.record(
                "password.changed", outcome=REFUSED, reason="weak_password", **context
            )
            raise
        await self._users.set_password_hash(
            user.id, await self._hasher.hash(new), now=self._clock()
        )
        self._audit.record("password.changed", outcome=OK, reason="changed", **context)
        return user

    async def set_password(
        self, username: str, new: str, *, actor: str | None = None
    ) -> UserRecord:
        """An administrator's reset: replace the password of ``username`` without the
        current one; end the user's sessions next (invariant 11). ``WeakPassword`` if the
        new one breaks the policy. Audited as ``password.changed`` (reason ``reset``) by
        ``actor``."""
        user = await self.find(username)
        check_password_policy(new, user.username)
        await self._users.set_password_hash(
            user.id, await self._hasher.hash(new), now=self._clock()
        )
        self._audit.record(
            "password.changed", outcome=OK, reason="reset", user_id=user.id, actor=actor
        )
        return user

    async def list_users(self) -> list[UserRecord]:
        """Every account, by username."""
        return await self._users.list_users()

    async def find(self, username: str) -> UserRecord:
        """The account named ``username``; ``NotFound`` if none."""
        user = await self._users.get_user_by_name(normalize_username(username))
        if user is None:
            raise NotFound(f"No user named {username!r}.")
        return user

    async def disable(self, username: str, *, actor: str | None = None) -> UserRecord:
        """Disable the account named ``username``; end its sessions next (invariant 11).
        Audited as ``user.disabled`` by ``actor``."""
        user = await self.find(username)
        await self._users.disable_user(user.id, now=self._clock())
        self._audit.record("user.disabled", outcome=OK, user_id=user.id, actor=actor)
        return user

    async def enable(self, username: str) -> UserRecord:
        """Let a disabled account sign in again (its old sessions stay ended)."""
        user = await self.find(username)
        await self._users.enable_user(user.id)
        return user

    async def invalidate_credentials(self, user_id: str) -> None:
        """Make every login in flight for ``user_id`` fail its final check; call before
        ending the user's sessions, so no session outlives the call (invariant 11)."""
        await self._users.bump_credential_version(user_id)
