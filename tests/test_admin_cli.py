"""The administration commands, run as an operator runs them: the console script."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.accounts import PASSWORD, bearer, new_username
from tests.servers import ServiceProcess
from tests.test_cli import (
    FAST_HASHING,
    Cli,
    assert_ok,
    assert_one_line_error,
    assert_session_alive,
    assert_session_dead,
    logged_in,
    login,
)
from tokenstile import __version__

NEW_PASSWORD = "a different passphrase"


@pytest.fixture
def admin(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, data_dir=tmp_path / "data")


@pytest.fixture
def service(admin: Cli) -> Iterator[ServiceProcess]:
    """`tokenstile serve` on the commands' DATA_DIR."""
    process = ServiceProcess(
        {
            "data_dir": str(admin.data_dir),
            "rate_limit_enabled": "false",
            **{k.removeprefix("TOKENSTILE_").lower(): v for k, v in FAST_HASHING.items()},
        },
        cwd=admin.cwd,
    ).start()
    yield process
    process.stop()


def test_version_prints_the_package_version(admin: Cli) -> None:
    result = admin("--version")
    assert_ok(result)
    assert result.stdout == f"tokenstile {__version__}\n"


def test_user_list_shows_every_user_and_whether_they_are_disabled(admin: Cli) -> None:
    names = sorted(new_username() for _ in range(3))
    for name in names:
        assert_ok(admin.add_user(name))
    assert_ok(admin("user", "disable", names[1]))

    result = admin("user", "list")
    assert_ok(result)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert sorted(rows) == names
    assert rows[names[0]].rstrip().endswith("active")
    assert "disabled" in rows[names[1]]
    assert rows[names[2]].rstrip().endswith("active")


def test_user_enable_lets_a_disabled_user_log_in_again(admin: Cli, service: ServiceProcess) -> None:
    name = new_username()
    assert_ok(admin.add_user(name))
    ended = logged_in(service.base_url, name)
    assert_ok(admin("user", "disable", name))
    assert login(service.base_url, name).status_code == 401

    result = admin("user", "enable", name)
    assert_ok(result)
    assert result.stdout == f"enabled {name}\n"

    assert_session_alive(service.base_url, logged_in(service.base_url, name))
    assert_session_dead(service.base_url, ended)  # enabling revives no session


def test_user_passwd_sets_the_password_and_ends_every_session(
    admin: Cli, service: ServiceProcess
) -> None:
    name, other = new_username(), new_username()
    assert_ok(admin.add_user(name))
    assert_ok(admin.add_user(other))
    sessions = [logged_in(service.base_url, name) for _ in range(2)]
    bystander = logged_in(service.base_url, other)

    result = admin("user", "passwd", name, "--password-stdin", stdin=f"{NEW_PASSWORD}\n")
    assert_ok(result)
    assert "2 session" in result.stdout, result.stdout

    for pair in sessions:
        assert_session_dead(service.base_url, pair)
    assert login(service.base_url, name).status_code == 401  # the old password
    assert login(service.base_url, name, NEW_PASSWORD).status_code == 200
    assert_session_alive(service.base_url, bystander)


def test_user_passwd_refuses_a_weak_password_and_keeps_the_old_one(
    admin: Cli, service: ServiceProcess
) -> None:
    name = new_username()
    assert_ok(admin.add_user(name))
    result = admin("user", "passwd", name, "--password-stdin", stdin="short\n")
    assert_one_line_error(result, "8 to 1024")
    assert login(service.base_url, name, PASSWORD).status_code == 200


def test_sessions_list_shows_the_users_live_sessions(admin: Cli, service: ServiceProcess) -> None:
    name = new_username()
    assert_ok(admin.add_user(name))
    sessions = [logged_in(service.base_url, name) for _ in range(2)]
    ids = {
        entry["id"]
        for entry in httpx.get(
            f"{service.base_url}/auth/sessions",
            headers=bearer(sessions[0]["access_token"]),
            timeout=10,
        ).json()
    }
    assert len(ids) == 2

    result = admin("sessions", "list", "--user", name)
    assert_ok(result)
    header, *rows = [line for line in result.stdout.splitlines() if line.strip()]
    assert header.split()[:2] == ["session", "created"]
    assert {row.split()[0] for row in rows} == ids
    assert all("127.0.0.1" in row for row in rows)


def test_sessions_revoke_session_ends_only_that_session(
    admin: Cli, service: ServiceProcess
) -> None:
    name = new_username()
    assert_ok(admin.add_user(name))
    target, kept = (logged_in(service.base_url, name) for _ in range(2))
    listed = httpx.get(
        f"{service.base_url}/auth/sessions", headers=bearer(target["access_token"]), timeout=10
    ).json()
    (sid,) = [entry["id"] for entry in listed if entry["current"]]

    result = admin("sessions", "revoke", "--session", sid)
    assert_ok(result)
    assert result.stdout == f"ended session {sid}\n"

    assert_session_dead(service.base_url, target)
    assert_session_alive(service.base_url, kept)
    assert_one_line_error(admin("sessions", "revoke", "--session", sid), "no live session")


@pytest.mark.parametrize(
    "arguments", [(), ("--user", "someone", "--session", "some-id")], ids=["neither", "both"]
)
def test_sessions_revoke_needs_exactly_one_of_user_and_session(
    admin: Cli, arguments: Sequence[str]
) -> None:
    assert_one_line_error(admin("sessions", "revoke", *arguments), "exactly one")


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
    admin: Cli, arguments: Sequence[str], fragment: str
) -> None:
    result = admin(*arguments)
    line = assert_one_line_error(result, fragment, "--help")
    assert result.returncode == 2, line


def test_a_password_prompt_without_a_terminal_says_how_to_pipe_it(admin: Cli) -> None:
    assert_one_line_error(admin("user", "passwd", "someone"), "--password-stdin")
