"""`tokenstile keys rotate` (SPEC §4), run as users run it: the console script in a subprocess.

A rotation makes a new key the signer; tokens signed by the old key keep working until the
last of them has expired, on running servers and on servers started afterwards.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.accounts import PASSWORD, bearer, new_username
from tests.servers import ServiceProcess
from tests.test_cli import FAST_HASHING, Cli, assert_ok, assert_one_line_error
from tokenstile.runtime import key_ring
from tokenstile.settings import Settings

ALGORITHM = {"TOKENSTILE_ALGORITHM": "EdDSA"}
# With the default settings: REMEMBER_ME_TTL, the longest a token lives, plus LEEWAY (5)
# plus the 30 s in which running servers may still sign with the old key.
DEFAULT_RETENTION = 2_592_000 + 5 + 30


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, data_dir=tmp_path / "data")


def stored_keys(cli: Cli) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads((cli.data_dir / "keys.json").read_text())["keys"]
    return keys


def kid_of(token: str) -> Any:
    return jwt.get_unverified_header(token).get("kid")


def serve(cli: Cli) -> ServiceProcess:
    return ServiceProcess(
        {
            "data_dir": str(cli.data_dir),
            "algorithm": ALGORITHM["TOKENSTILE_ALGORITHM"],
            "rate_limit_enabled": "false",
            **{k.removeprefix("TOKENSTILE_").lower(): v for k, v in FAST_HASHING.items()},
        },
        cwd=cli.cwd,
    ).start()


@pytest.fixture
def servers() -> Iterator[list[ServiceProcess]]:
    """Servers a test started; all stopped afterwards."""
    started: list[ServiceProcess] = []
    yield started
    for server in started:
        server.stop()


def logged_in(base_url: str, username: str) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/auth/login", json={"username": username, "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_keys_rotate_prints_the_new_signer_and_the_retired_key(cli: Cli) -> None:
    assert_ok(cli("check", **ALGORITHM))
    (first,) = stored_keys(cli)

    started = time.time()
    result = cli("keys", "rotate", **ALGORITHM)

    assert_ok(result)
    new, retired = stored_keys(cli)
    lines = result.stdout.splitlines()
    assert lines[0] == f"signing with new key {new['kid']} (EdDSA)"
    assert re.fullmatch(
        rf"retired key {first['kid']}: verifies until [-\d]+T[:\d]+\+00:00", lines[1]
    ), lines
    assert retired["kid"] == first["kid"]
    assert "d" in new
    assert "d" not in retired
    not_after = retired["tokenstile:not_after"]
    assert started + DEFAULT_RETENTION <= not_after <= time.time() + DEFAULT_RETENTION + 1


def test_keys_rotate_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    cli: Cli, servers: list[ServiceProcess]
) -> None:
    name = new_username()
    assert_ok(cli("user", "add", name, "--password-stdin", stdin=f"{PASSWORD}\n", **ALGORITHM))
    servers.append(serve(cli))
    before = logged_in(servers[0].base_url, name)
    old_kid = kid_of(before["access_token"])

    assert_ok(cli("keys", "rotate", **ALGORITHM))
    (new_key, _) = stored_keys(cli)
    servers[0].stop()
    servers.append(serve(cli))  # restarted: reads the rotated key set
    base_url = servers[1].base_url

    # Tokens signed by the retired key still work, and refreshing them moves to the new key.
    me = httpx.get(f"{base_url}/users/me", headers=bearer(before["access_token"]), timeout=10)
    assert me.status_code == 200, me.text
    refreshed = httpx.post(
        f"{base_url}/auth/refresh", json={"refresh_token": before["refresh_token"]}, timeout=10
    )
    assert refreshed.status_code == 200, refreshed.text
    after = logged_in(base_url, name)
    assert old_kid != new_key["kid"]
    for token in (refreshed.json()["access_token"], after["access_token"]):
        assert kid_of(token) == new_key["kid"]
    # What a third party fetching the JWKS now sees verifies old and new tokens alike.
    ring = key_ring(Settings(_env_file=None, data_dir=cli.data_dir, algorithm="EdDSA"))
    key_set = jwt.PyJWKSet.from_dict(ring.jwks())
    assert {key.key_id for key in key_set.keys} == {old_kid, new_key["kid"]}
    for token in (before["access_token"], after["access_token"]):
        claims = jwt.decode(
            token, key_set[kid_of(token)], algorithms=["EdDSA"], audience="tokenstile"
        )
        assert claims["preferred_username"] == name


def test_keys_rotate_under_hs256_is_refused_in_one_line(cli: Cli) -> None:
    assert_one_line_error(cli("keys", "rotate"), "HS256", "SECRET_KEY")
    assert not (cli.data_dir / "keys.json").exists()


def test_keys_rotate_leaves_an_operators_keys_file_alone(cli: Cli) -> None:
    assert_ok(cli("check", **ALGORITHM))
    keys_file = cli.cwd / "jwks.json"
    keys_file.write_bytes((cli.data_dir / "keys.json").read_bytes())
    content = keys_file.read_bytes()
    with_keys_file = {**ALGORITHM, "TOKENSTILE_KEYS_FILE": str(keys_file)}
    assert_ok(cli("check", **with_keys_file))

    assert_one_line_error(cli("keys", "rotate", **with_keys_file), "KEYS_FILE")
    assert keys_file.read_bytes() == content


def test_an_algorithm_switch_over_existing_keys_is_one_line(cli: Cli) -> None:
    assert_ok(cli("check", **ALGORITHM))
    content = (cli.data_dir / "keys.json").read_bytes()

    for command in (("check",), ("keys", "rotate"), ("serve", "--port", "0")):
        assert_one_line_error(
            cli(*command, TOKENSTILE_ALGORITHM="ES256"), "keys.json", "EdDSA", "ALGORITHM"
        )
    assert (cli.data_dir / "keys.json").read_bytes() == content


def test_a_missing_keys_file_is_one_line(cli: Cli) -> None:
    missing = cli.cwd / "no-such-jwks.json"
    assert_one_line_error(
        cli("check", **ALGORITHM, TOKENSTILE_KEYS_FILE=str(missing)), str(missing)
    )


def test_keys_rotate_drops_keys_whose_tokens_have_all_expired(cli: Cli) -> None:
    assert_ok(cli("keys", "rotate", **ALGORITHM))  # no key yet: creates the first one
    assert_ok(cli("keys", "rotate", **ALGORITHM))
    newest, oldest = stored_keys(cli)
    # As if REMEMBER_ME_TTL had passed since that rotation.
    expired = {**oldest, "tokenstile:not_after": int(time.time()) - 1}
    (cli.data_dir / "keys.json").write_text(json.dumps({"keys": [newest, expired]}))

    result = cli("keys", "rotate", **ALGORITHM)

    assert_ok(result)
    assert f"removed key {oldest['kid']}" in result.stdout
    assert [key["kid"] for key in stored_keys(cli)][1:] == [newest["kid"]]
