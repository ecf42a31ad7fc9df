"""The `tokenstile` command, run as users run it: the installed console script in a subprocess.

SPEC §4 and §7: every command has `--help`; an error is one line, without a traceback,
and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from alembic.script import ScriptDirectory

import tokenstile.stores
from tests.accounts import PASSWORD, bearer, new_username
from tests.conftest import run_async
from tests.redis_server import PrivateRedisCluster
from tests.servers import ServiceProcess, free_port
from tokenstile import __version__
from tokenstile.errors import StoreMisconfigured
from tokenstile.stores.sql import SqlDatabase

TOKENSTILE = Path(sys.executable).parent / "tokenstile"
MIGRATIONS = ScriptDirectory(str(Path(tokenstile.stores.__file__).parent / "migrations"))
HEAD = MIGRATIONS.get_current_head()
EVERY_REVISION = ", ".join(reversed([rev.revision for rev in MIGRATIONS.walk_revisions()]))
FAST_HASHING = {
    "TOKENSTILE_ARGON2_TIME_COST": "1",
    "TOKENSTILE_ARGON2_MEMORY_KIB": "8192",
    "TOKENSTILE_ARGON2_PARALLELISM": "1",
}


@dataclass
class Cli:
    """Runs `tokenstile` with DATA_DIR in the test's directory and nothing inherited."""

    cwd: Path
    data_dir: Path

    def env(self, settings: dict[str, str]) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")}
        return {
            **inherited,
            "TOKENSTILE_DATA_DIR": str(self.data_dir),
            **FAST_HASHING,
            **settings,
        }

    def __call__(
        self, *args: str, stdin: str | None = None, **settings: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tokenstile ARGS``; ``settings`` are extra variables (full names)."""
        return subprocess.run(
            [str(TOKENSTILE), *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env(settings),
            timeout=60,
            check=False,
        )

    def add_user(self, name: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        return self("user", "add", name, "--password-stdin", stdin=f"{password}\n")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, data_dir=tmp_path / "data")


@pytest.fixture
def server(cli: Cli) -> Iterator[ServiceProcess]:
    """`tokenstile serve` on the CLI's DATA_DIR (the same database and generated secret)."""
    service = ServiceProcess(
        {
            "data_dir": str(cli.data_dir),
            "rate_limit_enabled": "false",
            **{k.removeprefix("TOKENSTILE_").lower(): v for k, v in FAST_HASHING.items()},
        },
        cwd=cli.cwd,
    ).start()
    yield service
    service.stop()


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A non-zero exit with exactly one line of explanation and no traceback (besides
    the note naming a DATA_DIR the command created before it failed)."""
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, output
    assert "Traceback" not in result.stdout + result.stderr, output
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and not line.startswith("note: created DATA_DIR ")
    ]
    assert len(lines) == 1, output
    (line,) = lines
    assert line.startswith("error: "), output
    for fragment in fragments:
        assert fragment.lower() in line.lower(), output
    return line


def login(base_url: str, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{base_url}/auth/login", json={"username": username, "password": password}, timeout=10
    )


def logged_in(base_url: str, username: str) -> dict[str, Any]:
    response = login(base_url, username)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_session_dead(base_url: str, pair: dict[str, Any]) -> None:
    me = httpx.get(f"{base_url}/users/me", headers=bearer(pair["access_token"]), timeout=10)
    assert me.status_code == 401, me.text
    assert me.json()["error"] == "token_revoked"
    refreshed = httpx.post(
        f"{base_url}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10
    )
    assert refreshed.status_code == 401, refreshed.text
    assert refreshed.json()["error"] == "token_revoked"


def assert_session_alive(base_url: str, pair: dict[str, Any]) -> None:
    me = httpx.get(f"{base_url}/users/me", headers=bearer(pair["access_token"]), timeout=10)
    assert me.status_code == 200, me.text


# -- help ------------------------------------------------------------------------------

COMMANDS: list[Any] = [
    (),
    ("serve",),
    ("user",),
    ("user", "add"),
    ("user", "disable"),
    ("sessions",),
    ("sessions", "revoke"),
    ("purge",),
    ("check",),
    ("db",),
    ("db", "upgrade"),
    ("keys",),
    ("keys", "rotate"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tokenstile")
def test_every_command_and_group_has_help(cli: Cli, command: Sequence[str]) -> None:
    result = cli(*command, "--help")
    assert_ok(result)
    assert "Usage:" in result.stdout
    assert result.stderr == ""
    # Asking for help touches nothing.
    assert not cli.data_dir.exists()


def test_the_top_level_help_lists_every_command(cli: Cli) -> None:
    result = cli("--help")
    assert_ok(result)
    for name in ("serve", "user", "sessions", "purge", "check", "db"):
        assert re.search(rf"^\W*{name}\b", result.stdout, re.MULTILINE), name


# -- user add --------------------------------------------------------------------------


def test_user_add_creates_a_user_who_can_log_in(cli: Cli) -> None:
    name = new_username()
    result = cli.add_user(name)
    assert_ok(result)
    assert name in result.stdout

    with_server = ServiceProcess(
        {
            "data_dir": str(cli.data_dir),
            **{k.removeprefix("TOKENSTILE_").lower(): v for k, v in FAST_HASHING.items()},
        },
        cwd=cli.cwd,
    ).start()
    try:
        assert login(with_server.base_url, name).status_code == 200
        wrong = login(with_server.base_url, name, "not the password")
        assert wrong.status_code == 401
    finally:
        with_server.stop()


def test_user_add_of_an_existing_name_fails_with_one_line(cli: Cli) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    assert_one_line_error(cli.add_user(name, "another good password"), "taken")
    # Names are case-insensitive: the same user under other capitals is taken too.
    assert_one_line_error(cli.add_user(name.upper()), "taken")


@pytest.mark.parametrize("password", ["short", "aaaaaaaaaaaa"], ids=["too-short", "one-letter"])
def test_user_add_refuses_a_weak_password(cli: Cli, password: str) -> None:
    name = new_username()
    assert_one_line_error(cli.add_user(name, password), "password")
    # Nothing was created: the name is still free.
    assert_ok(cli.add_user(name))


def test_user_add_refuses_an_invalid_username(cli: Cli) -> None:
    assert_one_line_error(cli.add_user("no spaces allowed"), "username")


def test_user_add_without_a_terminal_or_stdin_password_creates_nobody(cli: Cli) -> None:
    name = new_username()
    result = cli("user", "add", name)  # stdin is /dev/null: the prompt cannot be answered
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert_ok(cli.add_user(name))


# -- user disable / sessions revoke ----------------------------------------------------


def test_user_disable_ends_the_users_sessions_and_logins(cli: Cli, server: ServiceProcess) -> None:
    name, other = new_username(), new_username()
    assert_ok(cli.add_user(name))
    assert_ok(cli.add_user(other))
    sessions = [logged_in(server.base_url, name) for _ in range(2)]
    bystander = logged_in(server.base_url, other)

    result = cli("user", "disable", name)
    assert_ok(result)
    assert "2 session" in result.stdout, result.stdout

    for pair in sessions:
        assert_session_dead(server.base_url, pair)
    refused = login(server.base_url, name)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_credentials"
    assert_session_alive(server.base_url, bystander)


def test_sessions_revoke_ends_every_session_of_the_user(cli: Cli, server: ServiceProcess) -> None:
    name, other = new_username(), new_username()
    assert_ok(cli.add_user(name))
    assert_ok(cli.add_user(other))
    sessions = [logged_in(server.base_url, name) for _ in range(3)]
    bystander = logged_in(server.base_url, other)

    result = cli("sessions", "revoke", "--user", name)
    assert_ok(result)
    assert "3 session" in result.stdout, result.stdout

    for pair in sessions:
        assert_session_dead(server.base_url, pair)
    assert_session_alive(server.base_url, bystander)
    # The account itself still works: a new login starts a live session.
    assert_session_alive(server.base_url, logged_in(server.base_url, name))

    # The revoked sessions are now expired state that purge drops, once.
    purged = cli("purge")
    assert_ok(purged)
    assert re.fullmatch(r"purged 3 entries\n", purged.stdout), purged.stdout
    again = cli("purge")
    assert_ok(again)
    assert re.fullmatch(r"purged 0 entries\n", again.stdout), again.stdout
    assert_session_alive(server.base_url, bystander)


@pytest.mark.parametrize(
    "command", [("user", "disable", "nobody"), ("sessions", "revoke", "--user", "nobody")]
)
def test_an_unknown_user_is_one_line_and_exit_1(cli: Cli, command: Sequence[str]) -> None:
    result = cli(*command)
    assert_one_line_error(result, "nobody")
    assert result.returncode == 1


# -- purge -----------------------------------------------------------------------------


def test_purge_prints_a_count_and_exits_0(cli: Cli) -> None:
    result = cli("purge")
    assert_ok(result)
    assert re.fullmatch(r"purged \d+ entries\n", result.stdout), result.stdout


def run_with_terminal_stderr(cli: Cli, *args: str, **settings: str) -> tuple[int, str, str]:
    """Run ``tokenstile ARGS`` with stderr on a pseudo-terminal (stdout still piped):
    its exit code, stdout, and everything the terminal received."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [str(TOKENSTILE), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            cwd=cli.cwd,
            env={**cli.env(settings), "TERM": "xterm-256color", "COLUMNS": "100"},
        )
    finally:
        os.close(terminal)
    received = bytearray()
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        received += chunk
    os.close(controller)
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    process.stdout.close()
    return process.wait(timeout=60), stdout, received.decode(errors="replace")


PURGE_STATUS = "Purging expired and revoked session state"


def test_purge_shows_its_progress_on_a_terminal(cli: Cli) -> None:
    assert_ok(cli("purge"))  # the data directory exists: no note on the terminal
    code, stdout, terminal = run_with_terminal_stderr(cli, "purge")
    assert code == 0, terminal
    assert PURGE_STATUS in terminal
    assert re.fullmatch(r"purged \d+ entries\n", stdout), stdout  # the answer, undisturbed


def test_purge_shows_no_progress_when_stderr_is_not_a_terminal(cli: Cli) -> None:
    assert_ok(cli("purge"))
    result = cli("purge")
    assert_ok(result)
    assert result.stderr == ""
    assert PURGE_STATUS not in result.stdout


def test_a_name_that_looks_like_rich_markup_is_shown_as_typed_in_the_progress(
    cli: Cli,
) -> None:
    assert_ok(cli("purge"))
    code, _, terminal = run_with_terminal_stderr(cli, "user", "disable", "[/bold]x")
    assert code == 1
    assert "Traceback" not in terminal
    assert "Disabling [/bold]x and ending their sessions" in terminal


def test_progress_is_erased_before_a_failing_commands_error_line(cli: Cli) -> None:
    assert_ok(cli("purge"))
    code, _, terminal = run_with_terminal_stderr(
        cli, "check", TOKENSTILE_REDIS_URL="redis://127.0.0.1:1/0", TOKENSTILE_STORE_TIMEOUT="0.5"
    )
    assert code == 1
    assert "Checking the stores" in terminal
    # The spinner's line is cleared, then the error is the last thing on the terminal.
    last_line = terminal.replace("\r\n", "\n").rstrip("\n").rsplit("\n", 1)[-1]
    assert last_line.endswith("error: redis 127.0.0.1:1 db 0: connection refused"), terminal


# -- check -----------------------------------------------------------------------------


def test_check_passes_on_the_embedded_default_and_says_what_it_checked(cli: Cli) -> None:
    result = cli("check")
    assert_ok(result)
    database = cli.data_dir.resolve() / "tokenstile.db"
    assert result.stdout.splitlines() == [
        f"ok: DATA_DIR {cli.data_dir.resolve()}",
        "ok: keys: HS256",
        f"ok: users and sessions: sqlite {database} answers; schema at {HEAD}, the newest",
    ]


def test_check_passes_with_a_reachable_redis_one_line_per_store(cli: Cli, redis_url: str) -> None:
    result = cli("check", TOKENSTILE_REDIS_URL=redis_url)
    assert_ok(result)
    database = cli.data_dir.resolve() / "tokenstile.db"
    host = redis_url.removeprefix("redis://").rsplit("/", 1)
    assert f"ok: users: sqlite {database} answers; schema at {HEAD}" in result.stdout
    assert f"ok: sessions: redis {host[0]} db {host[1]} answers\n" in result.stdout


def test_check_passes_on_a_redis_cluster_and_says_so(
    cli: Cli, redis_cluster: PrivateRedisCluster
) -> None:
    result = cli("check", TOKENSTILE_REDIS_URL=redis_cluster.url, TOKENSTILE_REDIS_CLUSTER="true")
    assert_ok(result)
    assert f"sessions: redis cluster via 127.0.0.1:{redis_cluster.ports[0]}" in result.stdout


def test_check_fails_with_one_line_while_a_redis_cluster_master_is_down(
    cli: Cli, private_redis_cluster: PrivateRedisCluster
) -> None:
    settings = {
        "TOKENSTILE_REDIS_URL": private_redis_cluster.url,
        "TOKENSTILE_REDIS_CLUSTER": "true",
        "TOKENSTILE_STORE_TIMEOUT": "0.5",
    }
    assert_ok(cli("check", **settings))
    private_redis_cluster.stop_node(2)
    assert_one_line_error(cli("check", **settings), "redis cluster via 127.0.0.1")
    private_redis_cluster.start_node(2)
    assert_ok(cli("check", **settings))


def test_check_names_redis_and_the_refused_connection_when_redis_is_closed(cli: Cli) -> None:
    started = time.monotonic()
    result = cli(
        "check", TOKENSTILE_REDIS_URL="redis://127.0.0.1:1/0", TOKENSTILE_STORE_TIMEOUT="0.5"
    )
    line = assert_one_line_error(result)
    assert line == "error: redis 127.0.0.1:1 db 0: connection refused", line
    assert time.monotonic() - started < 15


def test_check_names_postgres_and_the_refused_connection_when_postgres_is_closed(
    cli: Cli,
) -> None:
    result = cli(
        "check",
        TOKENSTILE_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/tokenstile",
        TOKENSTILE_STORE_TIMEOUT="0.5",
    )
    line = assert_one_line_error(result)
    assert line == "error: postgresql 127.0.0.1:1/tokenstile: connection refused", line


def test_check_names_a_postgres_database_that_does_not_exist(
    cli: Cli, postgres_admin_url: str
) -> None:
    missing = postgres_admin_url.rsplit("/", 1)[0] + "/tokenstile_no_such_database"
    line = assert_one_line_error(cli("check", TOKENSTILE_DATABASE_URL=missing))
    assert line.startswith("error: postgresql "), line
    assert line.endswith(
        '/tokenstile_no_such_database: database "tokenstile_no_such_database" does not exist'
    ), line
    assert "try again" not in line


def test_a_data_dir_that_cannot_be_created_is_named_with_the_reason(cli: Cli) -> None:
    (cli.cwd / "a-file").write_text("not a directory\n")
    data_dir = cli.cwd / "a-file" / "data"
    for command in (("check",), ("user", "list")):
        line = assert_one_line_error(cli(*command, TOKENSTILE_DATA_DIR=str(data_dir)))
        assert line == f"error: cannot create or use DATA_DIR {data_dir}: Not a directory", line


def test_a_data_dir_whose_database_cannot_be_opened_names_the_sqlite_file(cli: Cli) -> None:
    # A directory where the database file should be: sqlite cannot open it, even as root.
    (cli.data_dir / "tokenstile.db").mkdir(parents=True)
    line = assert_one_line_error(cli("user", "list"))
    database = cli.data_dir.resolve() / "tokenstile.db"
    assert line.startswith(f"error: sqlite {database}: cannot open the database file"), line


def test_a_database_that_cannot_be_opened_leaves_no_sqlite_thread_calling_a_closed_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `tokenstile user list` does above, in this process and many times over: each
    # failed open must be finished with before its event loop closes, or aiosqlite's
    # worker thread calls into the closed loop and prints a traceback after the error.
    (tmp_path / "tokenstile.db").mkdir()
    url = f"sqlite+aiosqlite:///{tmp_path / 'tokenstile.db'}"
    uncaught: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)

    async def list_users() -> None:
        database = SqlDatabase.from_url(url)
        try:
            with pytest.raises(StoreMisconfigured) as failure:
                await database.users.list_users()
            assert "cannot open the database file" in str(failure.value.cause)
        finally:
            await database.aclose()

    for _ in range(100):
        asyncio.run(list_users())
    for thread in threading.enumerate():
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=5)
    assert [f"{hook.exc_type.__name__}: {hook.exc_value}" for hook in uncaught] == []


def test_a_postgres_url_without_the_driver_says_what_to_install(cli: Cli, tmp_path: Path) -> None:
    # An asyncpg package that fails to import, as on a machine without the extra.
    shadow = tmp_path / "without-asyncpg" / "asyncpg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'asyncpg'\", name='asyncpg')\n"
    )
    for command in (("check",), ("db", "upgrade"), ("serve", "--port", "0")):
        result = cli(
            *command,
            PYTHONPATH=str(shadow.parent),
            TOKENSTILE_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/tokenstile",
        )
        assert_one_line_error(
            result, "asyncpg is not installed", "pip install 'tokenstile[postgres]'"
        )


def test_check_fails_with_one_line_on_a_malformed_redis_url(cli: Cli) -> None:
    assert_one_line_error(cli("check", TOKENSTILE_REDIS_URL="localhost:6379"), "redis")


@pytest.mark.parametrize("command", [("check",), ("serve", "--port", "0")])
def test_a_secret_key_under_32_bytes_is_refused(cli: Cli, command: Sequence[str]) -> None:
    # `serve --port 0` never starts serving when the key is refused; the timeout guards it.
    assert_one_line_error(cli(*command, TOKENSTILE_SECRET_KEY="k" * 31), "SECRET_KEY", "32")


def test_a_secret_key_of_32_bytes_is_accepted(cli: Cli) -> None:
    assert_ok(cli("check", TOKENSTILE_SECRET_KEY="k" * 32))
    # Bytes, not characters: 16 two-byte characters are 32 bytes.
    assert_ok(cli("check", TOKENSTILE_SECRET_KEY="é" * 16))


# -- db upgrade ------------------------------------------------------------------------


@pytest.mark.postgres
def test_check_refuses_an_unmigrated_postgres_database_until_db_upgrade(
    cli: Cli, fresh_postgres_url: str
) -> None:
    database = {"TOKENSTILE_DATABASE_URL": fresh_postgres_url}
    name = f"postgresql {fresh_postgres_url.split('@', 1)[1]}"
    line = assert_one_line_error(cli("check", **database))
    assert line == f"error: {name}: no schema, {HEAD} is the newest; run `tokenstile db upgrade`"

    upgraded = cli("db", "upgrade", **database)
    assert_ok(upgraded)
    assert upgraded.stdout == f"applied {EVERY_REVISION} to {name}\n"

    checked = cli("check", **database)
    assert_ok(checked)
    assert f"ok: users and sessions: {name} answers; schema at {HEAD}, the newest\n" in (
        checked.stdout
    )
    again = cli("db", "upgrade", **database)
    assert_ok(again)
    assert again.stdout == f"already at {HEAD}: {name}\n"


@pytest.mark.postgres
def test_db_upgrade_on_postgres_is_idempotent(cli: Cli, postgres_database_url: str) -> None:
    database = {"TOKENSTILE_DATABASE_URL": postgres_database_url}
    for _ in range(2):
        result = cli("db", "upgrade", **database)
        assert_ok(result)
        assert re.fullmatch(rf"(applied [0-9, ]+|already at {HEAD}:) .*\n", result.stdout)
    assert result.stdout.startswith(f"already at {HEAD}: postgresql ")
    assert_ok(cli("check", **database))
    # The schema is really there: a user can be created in it.
    name = new_username()
    assert_ok(cli("user", "add", name, "--password-stdin", stdin=f"{PASSWORD}\n", **database))
    assert not (cli.data_dir / "tokenstile.db").exists()


def test_db_upgrade_creates_the_embedded_database_and_says_what_it_applied(cli: Cli) -> None:
    database = cli.data_dir.resolve() / "tokenstile.db"
    first = cli("db", "upgrade")
    assert_ok(first)
    assert first.stdout == f"applied {EVERY_REVISION} to sqlite {database}\n"
    assert database.is_file()
    again = cli("db", "upgrade")
    assert_ok(again)
    assert again.stdout == f"already at {HEAD}: sqlite {database}\n"


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOKENSTILE_ACCESS_TTL", "abc"),
        ("TOKENSTILE_REFRESH_GRACE", "-1"),
        ("TOKENSTILE_ALGORITHM", "none"),
        ("TOKENSTILE_COOKIE_SECURE", "maybe"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_variable(
    cli: Cli, variable: str, value: str
) -> None:
    assert_one_line_error(cli("check", **{variable: value}), variable)


@pytest.mark.parametrize(
    "command", [("purge",), ("user", "disable", "someone"), ("serve", "--port", "0")]
)
def test_every_command_reports_an_invalid_setting_in_one_line(
    cli: Cli, command: Sequence[str]
) -> None:
    # `serve --port 0` would run until the timeout if the setting were accepted.
    result = cli(*command, TOKENSTILE_ACCESS_TTL="abc")
    assert_one_line_error(result, "TOKENSTILE_ACCESS_TTL")


def test_an_invalid_setting_in_a_dotenv_file_is_reported_too(cli: Cli) -> None:
    (cli.cwd / ".env").write_text("TOKENSTILE_ACCESS_TTL=abc\n")
    assert_one_line_error(cli("check"), "TOKENSTILE_ACCESS_TTL")


# -- the development secret ------------------------------------------------------------


def test_the_generated_dev_secret_is_private_and_kept(cli: Cli) -> None:
    assert_ok(cli("check"))
    secret_file = cli.data_dir / "secret_key"
    mode = stat.S_IMODE(secret_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    secret = secret_file.read_bytes()
    assert len(secret.strip()) >= 32
    assert_ok(cli("check"))
    assert secret_file.read_bytes() == secret


def test_serve_refuses_a_port_in_use_without_a_traceback(cli: Cli) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        result = cli("serve", "--port", str(port))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.postgres
def test_two_concurrent_db_upgrades_of_a_fresh_postgres_database_both_succeed_once(
    cli: Cli, fresh_postgres_url: str
) -> None:
    env = cli.env({"TOKENSTILE_DATABASE_URL": fresh_postgres_url})
    upgrades = [
        subprocess.Popen(
            [str(TOKENSTILE), "db", "upgrade"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cli.cwd,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = []
    for upgrade in upgrades:
        stdout, stderr = upgrade.communicate(timeout=60)
        assert upgrade.returncode == 0, f"exit {upgrade.returncode}\n{stdout}\n{stderr}"
        outputs.append(stdout.split(" to ")[0].split(":")[0])
    # One applied every migration; the other waited for its lock and found nothing to do.
    assert sorted(outputs) == [f"already at {HEAD}", f"applied {EVERY_REVISION}"], outputs

    async def applied() -> list[str]:
        connection = await asyncpg.connect(fresh_postgres_url, timeout=5)
        try:
            return [row[0] for row in await connection.fetch("SELECT * FROM alembic_version")]
        finally:
            await connection.close()

    assert run_async(applied) == [HEAD]


# -- administration --------------------------------------------------------------------

NEW_PASSWORD = "a different passphrase"


def test_version_prints_the_package_version(cli: Cli) -> None:
    result = cli("--version")
    assert_ok(result)
    assert result.stdout == f"tokenstile {__version__}\n"


def test_user_list_shows_every_user_and_whether_they_are_disabled(cli: Cli) -> None:
    names = sorted(new_username() for _ in range(3))
    for name in names:
        assert_ok(cli.add_user(name))
    assert_ok(cli("user", "disable", names[1]))

    result = cli("user", "list")
    assert_ok(result)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert sorted(rows) == names
    assert rows[names[0]].rstrip().endswith("active")
    assert "disabled" in rows[names[1]]
    assert rows[names[2]].rstrip().endswith("active")


def test_user_enable_lets_a_disabled_user_log_in_again(cli: Cli, server: ServiceProcess) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    ended = logged_in(server.base_url, name)
    assert_ok(cli("user", "disable", name))
    assert login(server.base_url, name).status_code == 401

    result = cli("user", "enable", name)
    assert_ok(result)
    assert result.stdout == f"enabled {name}\n"

    assert_session_alive(server.base_url, logged_in(server.base_url, name))
    assert_session_dead(server.base_url, ended)  # enabling revives no session


def test_user_passwd_sets_the_password_and_ends_every_session(
    cli: Cli, server: ServiceProcess
) -> None:
    name, other = new_username(), new_username()
    assert_ok(cli.add_user(name))
    assert_ok(cli.add_user(other))
    sessions = [logged_in(server.base_url, name) for _ in range(2)]
    bystander = logged_in(server.base_url, other)

    result = cli("user", "passwd", name, "--password-stdin", stdin=f"{NEW_PASSWORD}\n")
    assert_ok(result)
    assert "2 session" in result.stdout, result.stdout

    for pair in sessions:
        assert_session_dead(server.base_url, pair)
    assert login(server.base_url, name).status_code == 401  # the old password
    assert login(server.base_url, name, NEW_PASSWORD).status_code == 200
    assert_session_alive(server.base_url, bystander)


def test_user_passwd_refuses_a_weak_password_and_keeps_the_old_one(
    cli: Cli, server: ServiceProcess
) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    result = cli("user", "passwd", name, "--password-stdin", stdin="short\n")
    assert_one_line_error(result, "8 to 1024")
    assert login(server.base_url, name, PASSWORD).status_code == 200


def test_sessions_list_shows_the_users_live_sessions(cli: Cli, server: ServiceProcess) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    sessions = [logged_in(server.base_url, name) for _ in range(2)]
    ids = {
        entry["id"]
        for entry in httpx.get(
            f"{server.base_url}/auth/sessions",
            headers=bearer(sessions[0]["access_token"]),
            timeout=10,
        ).json()
    }
    assert len(ids) == 2

    result = cli("sessions", "list", "--user", name)
    assert_ok(result)
    header, *rows = [line for line in result.stdout.splitlines() if line.strip()]
    assert header.split()[:2] == ["session", "created"]
    assert {row.split()[0] for row in rows} == ids
    assert all("127.0.0.1" in row for row in rows)


def test_sessions_revoke_session_ends_only_that_session(cli: Cli, server: ServiceProcess) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    target, kept = (logged_in(server.base_url, name) for _ in range(2))
    listed = httpx.get(
        f"{server.base_url}/auth/sessions", headers=bearer(target["access_token"]), timeout=10
    ).json()
    (sid,) = [entry["id"] for entry in listed if entry["current"]]

    result = cli("sessions", "revoke", "--session", sid)
    assert_ok(result)
    assert result.stdout == f"ended session {sid}\n"

    assert_session_dead(server.base_url, target)
    assert_session_alive(server.base_url, kept)
    assert_one_line_error(cli("sessions", "revoke", "--session", sid), "no live session")


@pytest.mark.parametrize(
    "arguments", [(), ("--user", "someone", "--session", "some-id")], ids=["neither", "both"]
)
def test_sessions_revoke_needs_exactly_one_of_user_and_session(
    cli: Cli, arguments: Sequence[str]
) -> None:
    assert_one_line_error(cli("sessions", "revoke", *arguments), "exactly one")


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (("user", "frob"), "no such command"),
        (("user", "add"), "missing argument"),
        (("sessions", "list"), "missing option '--user'"),
        (("--bogus",), "no such option"),
        (("serve", "--port", "eighty"), "--port"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(
    cli: Cli, arguments: Sequence[str], fragment: str
) -> None:
    result = cli(*arguments)
    line = assert_one_line_error(result, fragment, "--help")
    assert result.returncode == 2, line


def test_a_password_prompt_without_a_terminal_says_how_to_pipe_it(cli: Cli) -> None:
    assert_one_line_error(cli("user", "passwd", "someone"), "--password-stdin")


# -- what the commands say about themselves --------------------------------------------


def test_serve_logs_what_it_runs_on_and_warns_when_redis_is_unreachable(cli: Cli) -> None:
    service = ServiceProcess(
        {
            "data_dir": str(cli.data_dir),
            "redis_url": "redis://127.0.0.1:1/0",
            "store_timeout": "0.5",
            "allow_registration": "false",
        },
        cwd=cli.cwd,
    ).start()
    try:
        answers = [
            httpx.post(
                f"{service.base_url}/auth/login",
                json={"username": "someone", "password": PASSWORD},
                timeout=10,
            )
            for _ in range(3)
        ]
    finally:
        service.stop()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "store_unavailable"
        assert "127.0.0.1:1" not in answer.text  # hosts are for the log, not for clients
    log = service.log.read_text()
    data_dir = cli.data_dir.resolve()
    for line in (
        f"data directory: {data_dir} (created now)",
        f"stores: users: sqlite {data_dir}/tokenstile.db; sessions: redis 127.0.0.1:1 db 0",
        "algorithm: HS256",
        "registration: closed (ALLOW_REGISTRATION=false)",
        "serving anyway: requests that need redis 127.0.0.1:1 db 0 answer 503",
    ):
        assert line in log, log
    # The cause is logged once however many requests fail (at start, then held back).
    assert log.count("store unavailable: redis 127.0.0.1:1 db 0: connection refused") == 1, log


def test_serve_logs_the_missing_schema_of_a_postgres_database_and_still_starts(
    cli: Cli, fresh_postgres_url: str
) -> None:
    service = ServiceProcess(
        {"data_dir": str(cli.data_dir), "database_url": fresh_postgres_url}, cwd=cli.cwd
    ).start()
    service.stop()  # it started: ServiceProcess waited for /healthz
    log = service.log.read_text()
    assert "registration: open (ALLOW_REGISTRATION=true)" in log, log
    assert f"no schema, {HEAD} is the newest; run `tokenstile db upgrade`" in log, log


def test_a_command_shows_audit_lines_only_with_verbose(cli: Cli) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    quiet = cli("user", "disable", name)
    assert_ok(quiet)
    assert quiet.stderr == ""
    assert_ok(cli("user", "enable", name))
    loud = cli("--verbose", "user", "disable", name)
    assert_ok(loud)
    assert loud.stdout == f"disabled {name}; ended 0 session(s)\n"
    lines = [line for line in loud.stderr.splitlines() if line.startswith("{")]
    (disabled, revoked) = [json.loads(line) for line in lines]
    assert disabled["event"] == "user.disabled", loud.stderr
    assert disabled["actor"] == revoked["actor"] == "cli"
    assert (revoked["event"], revoked["reason"], revoked["count"]) == (
        "session.revoked",
        "user_disabled",
        0,
    )


def test_a_command_that_creates_the_data_dir_says_where(cli: Cli) -> None:
    first = cli("user", "list")
    assert_ok(first)
    assert first.stderr == f"note: created DATA_DIR {cli.data_dir.resolve()}\n"
    again = cli("user", "list")
    assert_ok(again)
    assert again.stderr == ""


def test_a_command_that_creates_the_data_dir_and_then_fails_still_says_where(cli: Cli) -> None:
    result = cli(
        "check", TOKENSTILE_REDIS_URL="redis://127.0.0.1:1/0", TOKENSTILE_STORE_TIMEOUT="0.5"
    )
    assert result.returncode == 1
    assert cli.data_dir.is_dir()  # the generated secret went in before Redis was asked
    assert result.stderr.splitlines() == [
        f"note: created DATA_DIR {cli.data_dir.resolve()}",
        "error: redis 127.0.0.1:1 db 0: connection refused",
    ]
    again = cli("check", TOKENSTILE_REDIS_URL="redis://127.0.0.1:1/0")
    assert again.stderr.splitlines() == ["error: redis 127.0.0.1:1 db 0: connection refused"]


AUDIT_CORE_FIELDS = {"time", "event", "outcome", "reason", "user_id", "sid", "ip", "user_agent"}


def test_serve_writes_every_audit_event_as_json_without_any_credential(cli: Cli) -> None:
    audit_file = cli.cwd / "audit.jsonl"
    name, other = new_username(), new_username()
    new_password, wrong_password = "a new pass phrase 2", "not the right one 3"
    assert_ok(cli.add_user(name))
    assert_ok(cli.add_user(other))
    service = ServiceProcess(
        {
            "data_dir": str(cli.data_dir),
            "audit_log": str(audit_file),
            "refresh_grace": "0",
            "login_rate_limit": "2/minute",
            **{k.removeprefix("TOKENSTILE_").lower(): v for k, v in FAST_HASHING.items()},
        },
        cwd=cli.cwd,
    ).start()
    agent = {"User-Agent": "audit-test/1.0"}
    http = httpx.Client(base_url=service.base_url, headers=agent, timeout=10)

    def sign_in(username: str, password: str = PASSWORD) -> httpx.Response:
        return http.post("/auth/login", json={"username": username, "password": password})

    try:
        pair = sign_in(name).json()
        refused = [sign_in(other, wrong_password).status_code for _ in range(3)]
        assert refused == [401, 401, 429]
        assert sign_in("nobody-" + name).status_code == 401
        child = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
        reused = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reused.json()["error"] == "token_reused"
        leaving = sign_in(name).json()
        out = http.post(
            "/auth/logout",
            headers=bearer(leaving["access_token"]),
            json={"refresh_token": leaving["refresh_token"]},
        )
        assert out.status_code == 204, out.text
        changing, ended = sign_in(name).json(), sign_in(name).json()
        changed = http.post(
            "/auth/password",
            headers=bearer(changing["access_token"]),
            json={"current_password": PASSWORD, "new_password": new_password},
        )
        assert changed.status_code == 204, changed.text
        everything = http.post("/auth/logout-all", headers=bearer(changing["access_token"]))
        assert everything.status_code == 204, everything.text
        disabled = cli("user", "disable", name, TOKENSTILE_AUDIT_LOG=str(audit_file))
        assert_ok(disabled)
    finally:
        http.close()
        service.stop()
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    assert [(event["event"], event["outcome"], event["reason"]) for event in events] == [
        ("login.succeeded", "ok", None),
        ("login.failed", "refused", "wrong_password"),
        ("login.failed", "refused", "wrong_password"),
        ("rate_limited", "refused", "login:user"),
        ("login.failed", "refused", "unknown_user"),
        ("token.refreshed", "ok", "rotated"),
        ("token.reuse_detected", "refused", "token_reused"),
        ("login.succeeded", "ok", None),
        ("logout", "ok", "logout"),
        ("login.succeeded", "ok", None),
        ("login.succeeded", "ok", None),
        ("password.changed", "ok", "changed"),
        ("session.revoked", "ok", "password_changed"),
        ("logout_all", "ok", "logout_all"),
        ("user.disabled", "ok", None),
        ("session.revoked", "ok", "user_disabled"),
    ], events
    assert all(set(event) >= AUDIT_CORE_FIELDS for event in events), events
    by_http, by_cli = events[:-2], events[-2:]
    assert all(e["ip"] == "127.0.0.1" and e["user_agent"] == "audit-test/1.0" for e in by_http)
    assert all(e["actor"] == "cli" and e["ip"] is None for e in by_cli), by_cli
    user_id = jwt.decode(pair["access_token"], options={"verify_signature": False})["sub"]
    mine = [e for e in events if e["event"] not in ("rate_limited", "login.failed")]
    assert {e["user_id"] for e in mine} == {user_id}
    assert events[5]["sid"] == events[6]["sid"] == events[0]["sid"] is not None
    assert events[12]["count"] == 1  # `ended`
    assert events[13]["count"] == 1  # then `changing`
    assert stat.S_IMODE(audit_file.stat().st_mode) == 0o600
    captured = audit_file.read_text() + service.log.read_text() + disabled.stdout + disabled.stderr
    credentials = (PASSWORD, new_password, wrong_password)
    for pair_seen in (pair, child, leaving, changing, ended):
        credentials += (pair_seen["access_token"], pair_seen["refresh_token"])
    for secret in credentials:
        assert secret not in captured


def test_audit_log_off_writes_no_audit_line(cli: Cli) -> None:
    name = new_username()
    assert_ok(cli.add_user(name))
    loud = cli("--verbose", "user", "disable", name, TOKENSTILE_AUDIT_LOG="off")
    assert_ok(loud)
    assert "user.disabled" not in loud.stderr, loud.stderr
    assert "{" not in loud.stderr, loud.stderr
