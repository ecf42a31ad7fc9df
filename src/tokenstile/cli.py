"""The ``tokenstile`` command: run the service and administer users, sessions and the store."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import logging.config
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokenstile import __version__
from tokenstile.core.keys import RELOAD_INTERVAL
from tokenstile.core.store import SessionRecord, UserRecord
from tokenstile.errors import StoreUnavailable, TokenstileError
from tokenstile.keyfiles import rotate_keys
from tokenstile.runtime import Runtime, key_ring, open_runtime
from tokenstile.settings import Settings

T = TypeVar("T")

KEEP_ALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection stays open between requests."""

logger = logging.getLogger("tokenstile")
_AUDIT = "tokenstile.audit"
"""The logger that AUDIT_LOG=stderr writes its JSON lines to, bare (one object a line)."""
ACTOR = "cli"
"""The ``actor`` of the audit events an administrator's command causes."""

_fresh_data_dirs: set[Path] = set()
"""DATA_DIRs that did not exist when the command read its settings: if the command made
them, it says so, since a command run from another folder makes a new ./.tokenstile."""

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
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show log and audit lines on stderr.")
    ] = False,
) -> None:
    """Refresh-token authentication service."""
    _configure_logging(verbose=verbose)
    context.obj = verbose  # read by `serve`


def _configure_logging(*, verbose: bool) -> None:
    """Log lines (audit events among them) on stderr with ``--verbose``, else nowhere:
    a command's own output is its answer. ``serve`` sets up its own logging."""
    for name, line in (("tokenstile", "%(levelname)s %(name)s: %(message)s"), (_AUDIT, None)):
        handler: logging.Handler
        if verbose:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(line))
        else:
            handler = logging.NullHandler()  # keeps logging's last-resort stderr handler out
        logging.getLogger(name).handlers = [handler]
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False


app.add_typer(user_app, name="user")
app.add_typer(sessions_app, name="sessions")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _fail(message: str) -> typer.Exit:
    _note_created_data_dirs()  # the error comes last: it is what the reader acts on
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _note_created_data_dirs() -> None:
    """Say once which DATA_DIRs this command created, whether it then succeeds or fails:
    a failed command still leaves the new directory behind."""
    for data_dir in sorted(_fresh_data_dirs):
        if data_dir.exists():
            typer.echo(f"note: created DATA_DIR {data_dir}", err=True)
    _fresh_data_dirs.clear()


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKENSTILE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise _fail(f"invalid configuration: {problems}") from None
    if not settings.data_dir.exists():
        _fresh_data_dirs.add(settings.data_dir.resolve())
    return settings


def _file_problem(settings: Settings, exc: OSError) -> str:
    """One line for a file that cannot be created or read, naming DATA_DIR when it is
    the one at fault."""
    data_dir = settings.data_dir.resolve()
    reason = exc.strerror or str(exc)
    path = Path(str(exc.filename)).resolve() if exc.filename else None
    if path is None or path == data_dir:
        return f"cannot create or use DATA_DIR {data_dir}: {reason}"
    if path.is_relative_to(data_dir) or data_dir.is_relative_to(path):
        return f"cannot create or use DATA_DIR {data_dir}: {reason}: {path}"
    return f"cannot use {path}: {reason}"


def _check_keys(settings: Settings) -> None:
    try:
        key_ring(settings)
    except TokenstileError as exc:
        raise _fail(exc.detail) from None
    except OSError as exc:
        raise _fail(_file_problem(settings, exc)) from None


def _run(
    action: Callable[[Runtime], Awaitable[T]],
    settings: Settings | None = None,
    *,
    start: bool = True,
    status: str | None = None,
) -> T:
    """Open a runtime, ``start`` its stores (migrating an embedded database), run
    ``action`` on it, close it; errors become one line and exit 1. ``status`` is shown
    with a spinner while it runs, on a terminal only (see :func:`_progress`)."""
    settings = settings or _settings()

    async def main() -> T:
        runtime = open_runtime(settings)
        try:
            if start:
                await runtime.stores.start()
            return await action(runtime)
        finally:
            await runtime.aclose()

    try:
        with _progress(status):
            return asyncio.run(main())
    except StoreUnavailable as exc:
        raise _fail(exc.cause) from None
    except TokenstileError as exc:
        raise _fail(exc.detail) from None
    except OSError as exc:  # e.g. a DATA_DIR that cannot be created
        raise _fail(_file_problem(settings, exc)) from None


def _progress(status: str | None) -> contextlib.AbstractContextManager[object]:
    """A spinner with ``status`` on stderr while a command works, when stderr is a
    terminal; nothing otherwise, so piped and logged output holds only the answer.
    It is erased when the work ends, before the answer or the error is printed."""
    if status is None or not sys.stderr.isatty():
        return contextlib.nullcontext()
    # Escaped: the text may hold a name as typed, and Rich would read "[/x]" as markup.
    return Console(stderr=True).status(escape(status))


@app.command()
def serve(
    context: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request line.")] = False,
) -> None:
    """Run the HTTP service."""
    import uvicorn

    settings = _settings()
    _check_keys(settings)  # creates the dev secret once, before workers race for it
    log_config = _server_logging(verbose=bool(context.obj))

    async def announce(runtime: Runtime) -> None:
        # After the embedded database is migrated (once, too): a failure there is fatal
        # and already one line; from here on the server logs.
        logging.config.dictConfig(log_config)
        _log_startup(settings, runtime)
        try:
            await runtime.stores.check()
        except StoreUnavailable as exc:
            # The store's own warning (tokenstile.stores) has just named the cause.
            logger.warning(
                "serving anyway: requests that need %s answer 503 until it is fixed",
                exc.cause.split(": ", 1)[0],
            )

    _run(announce, settings)
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
        log_config=log_config,
        # Forwarded headers only from TRUSTED_PROXIES. Always explicit, so uvicorn's own
        # default (loopback, or FORWARDED_ALLOW_IPS) never decides who the client is.
        proxy_headers=settings.trusted_proxies is not None,
        forwarded_allow_ips=settings.trusted_proxies or "",
        # uvicorn counts the asking connection too: N + 1 serves up to N at once.
        limit_concurrency=settings.max_connections + 1,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
    )


def _server_logging(*, verbose: bool) -> dict[str, Any]:
    """uvicorn's logging configuration plus tokenstile's loggers, on stderr; every worker
    process applies it (``--verbose`` adds debug lines). Audit events are bare JSON lines."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["tokenstile"] = {
        "handlers": ["default"],
        "level": "DEBUG" if verbose else "INFO",
        "propagate": False,
    }
    config["handlers"]["audit"] = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "audit",
    }
    config["formatters"]["audit"] = {"format": "%(message)s"}
    config["loggers"][_AUDIT] = {"handlers": ["audit"], "level": "INFO", "propagate": False}
    return config


def _log_startup(settings: Settings, runtime: Runtime) -> None:
    """What this server runs on, so that nobody has to guess which DATA_DIR is in use."""
    data_dir = settings.data_dir.resolve()
    created = " (created now)" if data_dir in _fresh_data_dirs and data_dir.exists() else ""
    logger.info("tokenstile %s", __version__)
    logger.info("data directory: %s%s", data_dir, created)
    logger.info("stores: %s", runtime.stores.description)
    logger.info("algorithm: %s", settings.algorithm)
    if settings.allow_registration:
        logger.info("registration: open (ALLOW_REGISTRATION=true)")
    else:
        logger.info("registration: closed (ALLOW_REGISTRATION=false)")


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
        user = await runtime.accounts.set_password(name, password, actor=ACTOR)
        return await runtime.sessions.end_all(user.id, reason="password_changed", actor=ACTOR)

    ended = _run(passwd, status=f"Changing the password of {name} and ending their sessions…")
    typer.echo(f"changed the password of {name}; ended {ended} session(s)")


@user_app.command("list")
def user_list() -> None:
    """List every user."""
    users = _run(lambda runtime: runtime.accounts.list_users(), status="Reading the users…")
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
        user = await runtime.accounts.disable(name, actor=ACTOR)
        return await runtime.sessions.end_all(user.id, reason="user_disabled", actor=ACTOR)

    ended = _run(disable, status=f"Disabling {name} and ending their sessions…")
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
    for session in _run(sessions, status=f"Reading the sessions of {user}…"):
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
        ended = _run(
            lambda runtime: _end_all_sessions(runtime, name),
            status=f"Ending every session of {name}…",
        )
        typer.echo(f"ended {ended} session(s) of {name}")
    elif session is not None and user is None:
        sid = session
        if not _run(lambda runtime: runtime.sessions.end(sid, reason="admin", actor=ACTOR)):
            raise _fail(f"no live session {sid!r}")
        typer.echo(f"ended session {sid}")
    else:
        raise _fail("give exactly one of --user NAME and --session ID")


async def _end_all_sessions(runtime: Runtime, username: str) -> int:
    account = await runtime.accounts.find(username)
    await runtime.accounts.invalidate_credentials(account.id)  # before: invariant 11
    return await runtime.sessions.end_all(account.id, reason="admin", actor=ACTOR)


@app.command()
def purge() -> None:
    """Drop expired and revoked session state."""
    removed = _run(
        lambda runtime: runtime.purge(), status="Purging expired and revoked session state…"
    )
    typer.echo(f"purged {removed} entries")


@app.command()
def check() -> None:
    """Check the configuration, that every store answers and the schema is the newest."""
    settings = _settings()
    _check_keys(settings)
    lines = _run(lambda runtime: runtime.stores.check(), settings, status="Checking the stores…")
    if settings.data_dir.exists():
        typer.echo(f"ok: DATA_DIR {settings.data_dir.resolve()}")
    typer.echo(f"ok: keys: {settings.algorithm}")
    for line in lines:
        typer.echo(f"ok: {line}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations; prints the revisions applied."""

    async def upgrade(runtime: Runtime) -> tuple[list[str], str, str]:
        database = runtime.stores.database
        return await database.upgrade(), await database.schema_revision(), database.name

    applied, revision, where = _run(upgrade, start=False, status="Applying migrations…")
    if applied:
        typer.echo(f"applied {', '.join(applied)} to {where}")
    else:
        typer.echo(f"already at {revision}: {where}")


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
        raise _fail(_file_problem(settings, exc)) from None
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
    _note_created_data_dirs()
    sys.exit(code if isinstance(code, int) else 0)


def _message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message() if callable(format_message) else exc)
