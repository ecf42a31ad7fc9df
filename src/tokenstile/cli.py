"""The ``tokenstile`` command: run the service and administer users, sessions and the store."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from tokenstile.core.keys import RELOAD_INTERVAL
from tokenstile.errors import TokenstileError
from tokenstile.keyfiles import rotate_keys
from tokenstile.runtime import Runtime, key_ring, open_runtime, uses_embedded_database
from tokenstile.settings import Settings

T = TypeVar("T")

KEEP_ALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection stays open between requests."""

app = typer.Typer(
    help="Refresh-token authentication service.", no_args_is_help=True, add_completion=False
)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
sessions_app = typer.Typer(help="Manage login sessions.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the SQL database schema.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Manage the signing keys of RS256, ES256 and EdDSA.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
app.add_typer(sessions_app, name="sessions")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKENSTILE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise _fail(f"invalid configuration: {problems}") from None


def _check_keys(settings: Settings) -> None:
    try:
        key_ring(settings)
    except TokenstileError as exc:
        raise _fail(exc.detail) from None
    except OSError as exc:
        raise _fail(f"cannot use DATA_DIR {settings.data_dir}: {exc.strerror or exc}") from None


def _run(action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Open a runtime, run ``action`` on it, close it; errors become one line and exit 1."""

    async def main() -> T:
        runtime = open_runtime(_settings())
        try:
            if uses_embedded_database(runtime.settings):
                await runtime.database.upgrade()
            return await action(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(main())
    except TokenstileError as exc:
        raise _fail(exc.detail) from None
    except OSError as exc:  # e.g. a DATA_DIR that cannot be created
        raise _fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request line.")] = False,
) -> None:
    """Run the HTTP service."""
    import uvicorn

    settings = _settings()
    _check_keys(settings)  # creates the dev secret once, before workers race for it
    if uses_embedded_database(settings):
        _run(lambda runtime: runtime.database.upgrade())
    uvicorn.run(
        "tokenstile.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=access_log,
        log_level="info",
        # Forwarded headers only from TRUSTED_PROXIES. Always explicit, so uvicorn's own
        # default (loopback, or FORWARDED_ALLOW_IPS) never decides who the client is.
        proxy_headers=settings.trusted_proxies is not None,
        forwarded_allow_ips=settings.trusted_proxies or "",
        # uvicorn counts the asking connection too: N + 1 serves up to N at once.
        limit_concurrency=settings.max_connections + 1,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
    )


@user_app.command("add")
def user_add(
    name: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create a user (the password is prompted for unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    user = _run(lambda runtime: runtime.accounts.create_user(name, password))
    typer.echo(f"created user {user.username} ({user.id})")


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user and end all of their sessions."""

    async def disable(runtime: Runtime) -> int:
        user = await runtime.accounts.disable(name)
        return await runtime.sessions.end_all(user.id, reason="user_disabled")

    ended = _run(disable)
    typer.echo(f"disabled {name}; ended {ended} session(s)")


@sessions_app.command("revoke")
def sessions_revoke(
    user: Annotated[str, typer.Option("--user", help="Whose sessions to end.")],
) -> None:
    """End every session of a user."""

    async def revoke(runtime: Runtime) -> int:
        account = await runtime.accounts.find(user)
        await runtime.accounts.invalidate_credentials(account.id)  # before: invariant 11
        return await runtime.sessions.end_all(account.id, reason="admin")

    ended = _run(revoke)
    typer.echo(f"ended {ended} session(s) of {user}")


@app.command()
def purge() -> None:
    """Drop expired and revoked session state."""
    removed = _run(lambda runtime: runtime.purge())
    typer.echo(f"purged {removed} entries")


@app.command()
def check() -> None:
    """Check the configuration and that the database and session store answer."""
    settings = _settings()
    _check_keys(settings)
    _run(lambda runtime: runtime.ping())
    store = "redis" if settings.redis_url else "sql"
    typer.echo(f"ok: database reachable, {store} session store reachable")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    _run(lambda runtime: runtime.database.upgrade())
    typer.echo("database schema is up to date")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new key the signer; older keys verify until their last token expires."""
    settings = _settings()
    if settings.algorithm == "HS256":
        raise _fail(
            "keys rotate applies to RS256, ES256 and EdDSA; under HS256 rotate SECRET_KEY "
            "by setting a new one (or deleting DATA_DIR/secret_key) and restarting, "
            "which ends every session"
        )
    if settings.keys_file is not None:
        raise _fail(
            f"KEYS_FILE ({settings.keys_file}) is managed by its operator: put the new key "
            "first in it, keep the old ones until their tokens expire, then remove them"
        )
    now = time.time()
    try:
        rotation = rotate_keys(
            settings.data_dir, settings.algorithm, now=now, retain_for=_key_retention(settings)
        )
    except TokenstileError as exc:
        raise _fail(exc.detail) from None
    except OSError as exc:
        raise _fail(f"cannot use DATA_DIR {settings.data_dir}: {exc.strerror or exc}") from None
    typer.echo(f"signing with new key {rotation.signer} ({settings.algorithm})")
    for kid, not_after in rotation.retired.items():
        until = datetime.fromtimestamp(not_after, UTC).isoformat(timespec="seconds")
        typer.echo(f"retired key {kid}: verifies until {until}")
    for kid in rotation.removed:
        typer.echo(f"removed key {kid}: every token it signed has expired")
    typer.echo(f"running servers switch to the new key within {RELOAD_INTERVAL:.0f} s")


def _key_retention(settings: Settings) -> float:
    """Seconds a rotated-out key keeps verifying: the longest a token it signed can live.

    Access tokens never outlive their session's refresh token; refresh tokens live
    ``REFRESH_TTL`` or ``REMEMBER_ME_TTL``, never past ``SESSION_MAX_AGE``. Add the clock
    ``LEEWAY``, and the reload interval in which running servers still sign with the old key.
    """
    longest = max(settings.access_ttl, settings.refresh_ttl, settings.remember_me_ttl)
    return min(longest, settings.session_max_age) + settings.leeway + RELOAD_INTERVAL


def main() -> None:
    app()
