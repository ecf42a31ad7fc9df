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
from rich.console import Console
from rich.table import Table

from tokenstile import __version__
from tokenstile.core.keys import RELOAD_INTERVAL
from tokenstile.core.store import SessionRecord, UserRecord
from tokenstile.errors import TokenstileError
from tokenstile.keyfiles import rotate_keys
from tokenstile.runtime import Runtime, key_ring, open_runtime
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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tokenstile {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Refresh-token authentication service."""


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
            await runtime.stores.start()
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
    _run(lambda runtime: runtime.stores.start())  # migrates an embedded database once, too
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


def _read_password(password_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice at a terminal."""
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise _fail("no terminal to prompt for the password; pipe it in with --password-stdin")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]


@user_app.command("add")
def user_add(name: str, password_stdin: PasswordStdin = False) -> None:
    """Create a user (the password is prompted for unless --password-stdin)."""
    password = _read_password(password_stdin)
    user = _run(lambda runtime: runtime.accounts.create_user(name, password))
    typer.echo(f"created user {user.username} ({user.id})")


@user_app.command("passwd")
def user_passwd(name: str, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password and end all of their sessions."""
    password = _read_password(password_stdin)

    async def passwd(runtime: Runtime) -> int:
        # The new password bumps the credential version before the sessions end
        # (invariant 11), so no login in flight with the old one keeps a session.
        user = await runtime.accounts.set_password(name, password)
        return await runtime.sessions.end_all(user.id, reason="password_changed")

    ended = _run(passwd)
    typer.echo(f"changed the password of {name}; ended {ended} session(s)")


@user_app.command("list")
def user_list() -> None:
    """List every user."""
    users = _run(lambda runtime: runtime.accounts.list_users())
    table = Table("username", "id", "created", "status", box=None)
    for user in users:
        table.add_row(user.username, user.id, _time(user.created_at), _status(user))
    _print(table)


def _print(table: Table) -> None:
    # Piped output keeps each row on one line, for grep and cut.
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


def _status(user: UserRecord) -> str:
    if user.disabled_at is not None:
        return f"disabled {_time(user.disabled_at)}"
    return "active"


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user and end all of their sessions."""

    async def disable(runtime: Runtime) -> int:
        user = await runtime.accounts.disable(name)
        return await runtime.sessions.end_all(user.id, reason="user_disabled")

    ended = _run(disable)
    typer.echo(f"disabled {name}; ended {ended} session(s)")


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Let a disabled user log in again (their ended sessions stay ended)."""
    _run(lambda runtime: runtime.accounts.enable(name))
    typer.echo(f"enabled {name}")


@sessions_app.command("list")
def sessions_list(
    user: Annotated[str, typer.Option("--user", help="Whose sessions to list.")],
) -> None:
    """List the live sessions of a user."""

    async def sessions(runtime: Runtime) -> list[SessionRecord]:
        account = await runtime.accounts.find(user)
        return await runtime.sessions.list_sessions(account.id)

    table = Table("session", "created", "last used", "expires", "ip", "user agent", box=None)
    for session in _run(sessions):
        table.add_row(
            session.sid,
            _time(session.created_at),
            _time(session.last_used_at),
            _time(session.expires_at),
            session.ip or "",
            session.user_agent or "",
        )
    _print(table)


@sessions_app.command("revoke")
def sessions_revoke(
    user: Annotated[
        str | None, typer.Option("--user", help="End every session of this user.")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="End this one session (its id).")
    ] = None,
) -> None:
    """End every session of a user (--user NAME) or one session (--session ID)."""
    if user is not None and session is None:
        name = user
        ended = _run(lambda runtime: _end_all_sessions(runtime, name))
        typer.echo(f"ended {ended} session(s) of {name}")
    elif session is not None and user is None:
        sid = session
        if not _run(lambda runtime: runtime.sessions.end(sid, reason="admin")):
            raise _fail(f"no live session {sid!r}")
        typer.echo(f"ended session {sid}")
    else:
        raise _fail("give exactly one of --user NAME and --session ID")


async def _end_all_sessions(runtime: Runtime, username: str) -> int:
    account = await runtime.accounts.find(username)
    await runtime.accounts.invalidate_credentials(account.id)  # before: invariant 11
    return await runtime.sessions.end_all(account.id, reason="admin")


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

    async def ping(runtime: Runtime) -> str:
        await runtime.stores.ping()
        return runtime.stores.description

    description = _run(ping)
    typer.echo(f"ok: every store answers ({description})")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations."""
    _run(lambda runtime: runtime.stores.database.upgrade())
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
    """The console script: a usage error is one line, like every other error."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's errors, as Typer ships them
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:
            typer.echo(context.get_help())  # `tokenstile` or a group alone: its help
        else:
            see = f"; see {context.command_path} --help" if context is not None else ""
            typer.echo(f"error: {_message(exc).rstrip('.')}{see}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message() if callable(format_message) else exc)
