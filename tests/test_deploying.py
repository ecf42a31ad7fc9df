"""The README's *Deploying* recipes, checked as far as this machine allows: the systemd
unit by ``systemd-analyze verify`` (there is no systemd to run it under here), and the
supervisord configuration by running it."""

from __future__ import annotations

import base64
import configparser
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.accounts import PASSWORD, bearer, new_username, signed_in
from tests.api.conftest import FAST_HASHING, make_settings
from tests.conftest import service_missing
from tests.processes import wait_until_healthy
from tests.servers import LiveServer
from tokenstile.api import create_app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "tokenstile.service"
SUPERVISORD_CONF = DEPLOY / "supervisord.conf"
VENV_BIN = Path(sys.executable).parent
TOKENSTILE = VENV_BIN / "tokenstile"
INSTALLED_TOKENSTILE = "/opt/tokenstile/.venv/bin/tokenstile"
"""Where the committed unit and supervisord configuration expect the command."""


# -- systemd ---------------------------------------------------------------------------


def unit_settings() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read(UNIT)
    return parser


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # verify checks that ExecStart exists: point a copy at this checkout's command.
    text = UNIT.read_text()
    assert INSTALLED_TOKENSTILE in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_TOKENSTILE, str(TOKENSTILE)))

    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )

    # Unknown keys and bad values are only warnings (exit 0): any output is a finding.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_systemd_unit_runs_as_a_dynamic_user_with_its_state_in_var_lib() -> None:
    service = unit_settings()["Service"]
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "tokenstile"
    assert service["Environment"] == "TOKENSTILE_DATA_DIR=/var/lib/tokenstile"
    assert service["EnvironmentFile"] == "-/etc/tokenstile/env"
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].startswith(f"{INSTALLED_TOKENSTILE} serve ")
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert service[hardening] == "yes", hardening
    assert service["ProtectSystem"] == "strict"


def test_the_systemd_units_command_line_is_one_tokenstile_accepts(tmp_path: Path) -> None:
    arguments = unit_settings()["Service"]["ExecStart"].split()[1:]
    result = subprocess.run(
        [str(TOKENSTILE), *arguments, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Run the HTTP service." in result.stdout


# -- supervisord -----------------------------------------------------------------------


def two_free_ports() -> int:
    """A number N such that ports 10·N and 10·N + 1 are both free on 127.0.0.1: the
    configuration's ``800%(process_num)d`` becomes ``N%(process_num)d``."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1] // 10
        if not 1024 <= base * 10 <= 55_000:
            continue
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", base * 10))
                second.bind(("127.0.0.1", base * 10 + 1))
        except OSError:
            continue
        return base
    raise RuntimeError("no two adjacent free ports")


class Supervisord:
    """supervisord running ``deploy/supervisord.conf`` with its paths moved into a
    temporary directory, the ports moved to free ones, and ``user=`` dropped (the test
    runs as whoever runs it)."""

    def __init__(self, root: Path) -> None:
        executable = VENV_BIN / "supervisord"
        if not executable.exists():
            pytest.skip("supervisor is not installed: pip install -e '.[dev]'")
        self.root = root
        base = two_free_ports()
        self.ports = (base * 10, base * 10 + 1)
        for folder in ("etc", "data", "log", "run"):
            (root / folder).mkdir()
        # The settings file the configuration's comment describes.
        (root / "etc" / ".env").write_text(
            "TOKENSTILE_SECRET_KEY=supervisord-test-secret-key-0123456789abcdef\n"
            "TOKENSTILE_ARGON2_TIME_COST=1\n"
            "TOKENSTILE_ARGON2_MEMORY_KIB=8192\n"
            "TOKENSTILE_ARGON2_PARALLELISM=1\n"
        )
        text = SUPERVISORD_CONF.read_text()
        for installed, here in (
            (INSTALLED_TOKENSTILE, str(TOKENSTILE)),
            ("--port 800%(process_num)d", f"--port {base}%(process_num)d"),
            ("/etc/tokenstile", str(root / "etc")),
            ("/var/lib/tokenstile", str(root / "data")),
            ("/var/log/tokenstile", str(root / "log")),
            ("/run/tokenstile", str(root / "run")),
        ):
            assert installed in text, installed
            text = text.replace(installed, here)
        lines = [line for line in text.splitlines() if not line.startswith("user=")]
        self.conf = root / "supervisord.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.data_dir = root / "data"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")}
        self._env = inherited
        self.process = subprocess.Popen(
            [str(executable), "-c", str(self.conf)],
            env=self._env,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def pid(self, name: str) -> int:
        """The pid supervisord reports for program ``name`` (0 while it is not running)."""
        result = subprocess.run(
            [str(VENV_BIN / "supervisorctl"), "-c", str(self.conf), "pid", name],
            capture_output=True,
            text=True,
            env=self._env,
            timeout=10,
            check=False,
        )
        output = result.stdout.strip()
        return int(output) if output.isdigit() else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Supervisord]:
    supervisor = Supervisord(tmp_path)
    try:
        yield supervisor
    finally:
        supervisor.stop()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_for_new_pid(supervisor: Supervisord, name: str, old: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = supervisor.pid(name)
        if pid not in (0, old):
            return pid
        time.sleep(0.1)
    raise AssertionError(f"supervisord did not restart {name} within {timeout} s")


def test_supervisord_restarts_a_killed_server_and_its_sessions_survive(
    supervisord: Supervisord,
) -> None:
    for index in (0, 1):
        wait_until_healthy(supervisord.url(index), timeout=15)
    username = new_username()
    first = supervisord.url(0)
    register = httpx.post(
        f"{first}/auth/register", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert register.status_code == 201, register.text
    login = httpx.post(
        f"{first}/auth/login", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert login.status_code == 200, login.text
    pair = login.json()

    killed = supervisord.pid("tokenstile:tokenstile-0")
    assert killed > 0
    os.kill(killed, signal.SIGKILL)
    restarted = wait_for_new_pid(supervisord, "tokenstile:tokenstile-0", killed, timeout=10)
    wait_until_healthy(first, timeout=15)

    # The same refresh token rotates on the new process: the session was in the SQLite
    # file in DATA_DIR, not in the process that died.
    refreshed = httpx.post(
        f"{first}/auth/refresh", json={"refresh_token": pair["refresh_token"]}, timeout=10
    )
    assert refreshed.status_code == 200, refreshed.text
    new_pair = refreshed.json()
    assert new_pair["refresh_token"] != pair["refresh_token"]
    # And the other program, which shares DATA_DIR, serves the new tokens too.
    me = httpx.get(
        f"{supervisord.url(1)}/users/me", headers=bearer(new_pair["access_token"]), timeout=10
    )
    assert me.status_code == 200, me.text
    assert me.json()["username"] == username
    assert (supervisord.data_dir / "tokenstile.db").is_file()
    # SECRET_KEY came from the .env in the programs' directory: none was generated.
    assert not (supervisord.data_dir / "secret_key").exists()

    other = supervisord.pid("tokenstile:tokenstile-1")
    supervisord.stop()
    assert supervisord.process.returncode == 0
    for pid in (restarted, other):
        assert not process_exists(pid), pid
    for port in supervisord.ports:
        assert port_is_closed(port), port


# -- verifying from Node through the JWKS ----------------------------------------------

NODE_VERIFY = Path(__file__).resolve().parents[1] / "examples" / "node-verify"


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        service_missing("node is not installed (Debian: apt-get install nodejs npm)")
    if not (NODE_VERIFY / "node_modules" / "jose" / "package.json").is_file():
        service_missing(f"jose is not installed: npm ci --prefix {NODE_VERIFY}")
    return executable


@pytest.fixture(scope="module")
def es256_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = {
        "data_dir": str(tmp_path_factory.mktemp("node-verify")),
        "algorithm": "ES256",
        "rate_limit_enabled": "false",
        **FAST_HASHING,
    }
    server = LiveServer(create_app(make_settings(settings))).start()
    yield server
    server.stop()


def node_verify(node: str, server: LiveServer, token: str) -> subprocess.CompletedProcess[str]:
    """``node verify.mjs`` as the README shows it, the token on standard input."""
    return subprocess.run(
        [node, "verify.mjs", "--jwks", f"{server.base_url}/.well-known/jwks.json"],
        input=token,
        capture_output=True,
        text=True,
        cwd=NODE_VERIFY,
        env={**os.environ, "TOKENSTILE_ISSUER": "tokenstile", "TOKENSTILE_AUDIENCE": "tokenstile"},
        timeout=30,
        check=False,
    )


def test_node_verifies_an_access_token_through_the_jwks(
    node: str, es256_server: LiveServer
) -> None:
    pair = signed_in(es256_server.client)
    me = es256_server.client.get("/users/me", headers=bearer(pair["access_token"])).json()

    result = node_verify(node, es256_server, pair["access_token"])

    assert result.returncode == 0, result.stderr
    claims = json.loads(result.stdout)
    assert claims["sub"] == me["id"]
    assert claims["iss"] == "tokenstile"
    assert claims["aud"] == "tokenstile"
    assert (
        claims["sid"]
        == jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"]
    )


def tampered(token: str) -> str:
    """The token with one claim changed and the signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_node_refuses_a_tampered_access_token(node: str, es256_server: LiveServer) -> None:
    pair = signed_in(es256_server.client)

    result = node_verify(node, es256_server, tampered(pair["access_token"]))

    assert result.returncode == 1
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"


def test_node_refuses_a_refresh_token_where_an_access_token_is_expected(
    node: str, es256_server: LiveServer
) -> None:
    pair = signed_in(es256_server.client)

    result = node_verify(node, es256_server, pair["refresh_token"])

    assert result.returncode == 1
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"] == "ERR_JWT_CLAIM_VALIDATION_FAILED"


def test_a_jwks_only_verifier_still_accepts_an_access_token_after_logout(
    node: str, es256_server: LiveServer
) -> None:
    # What the README warns about: the JWKS proves who signed, not that the session lives.
    pair = signed_in(es256_server.client)
    logout = es256_server.client.post("/auth/logout", headers=bearer(pair["access_token"]))
    assert logout.status_code == 204
    refused = es256_server.client.get("/users/me", headers=bearer(pair["access_token"]))
    assert refused.json()["error"] == "token_revoked"

    result = node_verify(node, es256_server, pair["access_token"])

    assert result.returncode == 0, result.stderr
