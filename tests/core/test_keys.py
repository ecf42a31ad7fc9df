"""Asymmetric signing (SPEC §3 ALGORITHM/KEYS_FILE, §2 JWKS, invariant 7): the key ring.

Keys come from ``DATA_DIR/keys.json`` (generated on first use, rotated by `keys rotate`)
or from an operator's ``KEYS_FILE``; the JWKS lists exactly the keys that may still verify
a token, and nothing private. Time is injected, so retirement is shown without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.core.clocks import FakeClock
from tokenstile.core import jwk
from tokenstile.core.codec import AccessClaims, TokenCodec
from tokenstile.core.keys import NOT_AFTER, RELOAD_INTERVAL, KeyRing
from tokenstile.errors import ConfigurationError, InvalidToken
from tokenstile.keyfiles import KeySetFile, load_or_create_keys, rotate_keys
from tokenstile.runtime import key_ring
from tokenstile.settings import Settings

ALGORITHMS = ["RS256", "ES256", "EdDSA"]
ISSUER = "https://auth.example"
AUDIENCE = "api.example"
NOW = 1_700_000_000
DAY = 86_400
PUBLIC_MEMBERS = {
    "RS256": {"kty", "kid", "use", "alg", "n", "e"},
    "ES256": {"kty", "kid", "use", "alg", "crv", "x", "y"},
    "EdDSA": {"kty", "kid", "use", "alg", "crv", "x"},
}
# RFC 7638 §3.1: this RSA key's SHA-256 JWK thumbprint.
RFC_7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
    "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWh"
    "AI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
}
RFC_7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def settings(data_dir: Path, algorithm: str = "ES256", **changes: Any) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, algorithm=algorithm, **changes)


def codec_for(ring: KeyRing, clock: Callable[[], float]) -> TokenCodec:
    return TokenCodec(ring, issuer=ISSUER, audience=AUDIENCE, leeway=5, clock=clock)


def access_token(codec: TokenCodec, iat: int = NOW, ttl: int = 900) -> str:
    return codec.encode_access(
        AccessClaims(
            sub="user-1",
            sid="session-1",
            jti=f"jti-{iat}",
            iat=iat,
            exp=iat + ttl,
            client_id="my-app",
            username="alice",
        )
    )


def refresh_token(codec: TokenCodec, iat: int = NOW, ttl: int = 7 * DAY) -> str:
    return codec.encode_refresh(sub="user-1", sid="session-1", jti="r", iat=iat, exp=iat + ttl)


def kid_of(token: str) -> Any:
    return jwt.get_unverified_header(token).get("kid")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    parts = [b64url(json.dumps(part).encode()) for part in (header, claims)]
    unsigned = ".".join(parts)
    signature = hmac.new(key, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(signature)}"


def claims_at(iat: int = NOW) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": iat + 900,
        "iat": iat,
        "jti": "forged",
        "sid": "session-1",
        "client_id": "my-app",
        "preferred_username": "alice",
    }


def read_keys(data_dir: Path) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads((data_dir / "keys.json").read_text())["keys"]
    return keys


def write_keys(path: Path, keys: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"keys": keys}))


def private_jwk(key: jwk.PrivateKey, algorithm: str, **members: Any) -> dict[str, Any]:
    return {"use": "sig", "alg": algorithm, **jwk.private_members(key), **members}


# -- every algorithm signs and verifies --------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_signs_tokens_that_carry_kid_and_verify(
    tmp_path: Path, clock: FakeClock, algorithm: str
) -> None:
    ring = key_ring(settings(tmp_path, algorithm), clock=clock)
    codec = codec_for(ring, clock)

    access, refresh = access_token(codec), refresh_token(codec)

    header = jwt.get_unverified_header(access)
    assert header == {"alg": algorithm, "kid": ring.signer.kid, "typ": "at+jwt"}
    assert kid_of(refresh) == ring.signer.kid
    assert codec.decode_access(access).sub == "user-1"
    assert codec.decode_refresh(refresh).jti == "r"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_jwks_lists_the_public_key_only_under_its_kid(
    tmp_path: Path, clock: FakeClock, algorithm: str
) -> None:
    ring = key_ring(settings(tmp_path, algorithm), clock=clock)

    (published,) = ring.jwks()["keys"]

    assert set(published) == PUBLIC_MEMBERS[algorithm]
    assert published["kid"] == ring.signer.kid
    assert (published["use"], published["alg"]) == ("sig", algorithm)
    # The kid is the RFC 7638 thumbprint of exactly what is published.
    assert published["kid"] == jwk.thumbprint(jwk.load_public_key(published, algorithm))
    # The private part exists in the file, and nowhere in the JWKS.
    (stored,) = read_keys(tmp_path)
    assert "d" in stored
    assert stored["d"] not in json.dumps(ring.jwks())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_third_party_verifies_tokens_with_pyjwt_from_our_jwks(
    tmp_path: Path, algorithm: str
) -> None:
    # PyJWT checks exp and iat against the real clock, so real time is used here.
    ring = key_ring(settings(tmp_path, algorithm))
    codec = codec_for(ring, time.time)
    token = access_token(codec, iat=int(time.time()))
    jwks = json.loads(json.dumps(ring.jwks()))  # as it travels over HTTP

    key_set = jwt.PyJWKSet.from_dict(jwks)
    signing_key = key_set[kid_of(token)]
    claims = jwt.decode(
        token, signing_key, algorithms=[algorithm], audience=AUDIENCE, issuer=ISSUER
    )

    assert claims["sub"] == "user-1"
    other = jwt.PyJWK.from_dict(
        jwk.public_members(jwk.generate_private_key(algorithm).public_key())
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=[algorithm], audience=AUDIENCE)


def test_hs256_stays_the_default_with_no_kid_and_an_empty_jwks(tmp_path: Path) -> None:
    ring = key_ring(Settings(_env_file=None, data_dir=tmp_path))
    token = access_token(codec_for(ring, FakeClock(NOW)))

    assert ring.algorithm == "HS256"
    assert ring.signer.kid is None
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "at+jwt"}
    assert ring.jwks() == {"keys": []}
    assert not (tmp_path / "keys.json").exists()


@pytest.mark.parametrize(("given", "expected"), [("rs256", "RS256"), ("EDDSA", "EdDSA")])
def test_algorithm_names_are_accepted_in_any_case(given: str, expected: str) -> None:
    assert Settings(_env_file=None, algorithm=given).algorithm == expected


# -- generated keys: DATA_DIR/keys.json --------------------------------------------------


def test_keys_are_generated_once_into_a_private_file_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = key_ring(settings(data_dir))
    second = key_ring(settings(data_dir))

    assert first.signer.kid == second.signer.kid
    assert first.jwks() == second.jwks()
    assert stat.S_IMODE((data_dir / "keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert len(read_keys(data_dir)) == 1


def test_workers_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def start() -> str:
        barrier.wait()
        ring = KeyRing.from_jwks("ES256", load_or_create_keys(tmp_path, "ES256", now=NOW).read())
        return str(ring.signer.kid)

    with ThreadPoolExecutor(max_workers=8) as pool:
        kids = set(pool.map(lambda _: start(), range(8)))

    assert len(kids) == 1
    assert [key["kid"] for key in read_keys(tmp_path)] == list(kids)
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary files left


def test_an_existing_key_file_for_another_algorithm_is_refused(tmp_path: Path) -> None:
    key_ring(settings(tmp_path, "ES256"))

    with pytest.raises(ConfigurationError) as refused:
        key_ring(settings(tmp_path, "RS256"))
    assert "ES256" in refused.value.detail
    assert "ALGORITHM" in refused.value.detail
    with pytest.raises(ConfigurationError):
        rotate_keys(tmp_path, "EdDSA", now=NOW, retain_for=DAY)
    # Nothing was rewritten: the ES256 key is still the only one.
    assert [key["alg"] for key in read_keys(tmp_path)] == ["ES256"]


def test_a_corrupt_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")

    with pytest.raises(ConfigurationError, match=r"keys\.json"):
        key_ring(settings(tmp_path))
    with pytest.raises(ConfigurationError, match=r"keys\.json"):
        rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)


# -- rotation ----------------------------------------------------------------------------


def test_after_rotation_old_tokens_verify_and_new_tokens_use_the_new_kid(
    tmp_path: Path, clock: FakeClock
) -> None:
    before = key_ring(settings(tmp_path), clock=clock)
    old_token = access_token(codec_for(before, clock))

    rotation = rotate_keys(tmp_path, "ES256", now=NOW, retain_for=30 * DAY)
    after = key_ring(settings(tmp_path), clock=clock)  # a restarted process
    codec = codec_for(after, clock)
    new_token = access_token(codec)

    assert rotation.retired == {before.signer.kid: NOW + 30 * DAY + 1}
    assert after.signer.kid == rotation.signer != before.signer.kid
    assert kid_of(new_token) == rotation.signer
    assert codec.decode_access(old_token).jti == f"jti-{NOW}"
    assert codec.decode_access(new_token).jti == f"jti-{NOW}"
    assert [key["kid"] for key in after.jwks()["keys"]] == [rotation.signer, before.signer.kid]


def test_a_retired_key_keeps_no_private_part_on_disk(tmp_path: Path) -> None:
    old = key_ring(settings(tmp_path)).signer.kid

    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)

    new, retired = read_keys(tmp_path)
    assert "d" in new
    assert retired["kid"] == old
    assert "d" not in retired
    assert (retired["tokenstile:retired_at"], retired[NOT_AFTER]) == (NOW, NOW + DAY + 1)


def test_a_retired_key_leaves_ring_and_jwks_when_its_not_after_passes(
    tmp_path: Path, clock: FakeClock
) -> None:
    before = key_ring(settings(tmp_path), clock=clock)
    old_token = access_token(codec_for(before, clock), ttl=30 * DAY)
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    ring = key_ring(settings(tmp_path), clock=clock)
    codec = codec_for(ring, clock)

    clock.now = NOW + DAY  # the last second before not_after
    assert codec.decode_access(old_token).sub == "user-1"
    assert len(ring.jwks()["keys"]) == 2

    clock.now = NOW + DAY + 1  # even in a process that loaded the key before
    assert [key["kid"] for key in ring.jwks()["keys"]] == [ring.signer.kid]
    with pytest.raises(InvalidToken):
        codec.decode_access(old_token)
    # A process started afterwards does not load it at all.
    restarted = key_ring(settings(tmp_path), clock=clock)
    assert [key["kid"] for key in restarted.jwks()["keys"]] == [ring.signer.kid]
    with pytest.raises(InvalidToken):
        codec_for(restarted, clock).decode_access(old_token)


def test_a_not_after_edited_into_the_past_retires_the_key(tmp_path: Path, clock: FakeClock) -> None:
    ring = key_ring(settings(tmp_path), clock=clock)
    old_token = access_token(codec_for(ring, clock), ttl=30 * DAY)
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    new, old = read_keys(tmp_path)
    assert codec_for(key_ring(settings(tmp_path), clock=clock), clock).decode_access(old_token)

    write_keys(tmp_path / "keys.json", [new, {**old, NOT_AFTER: NOW - 1}])
    after = key_ring(settings(tmp_path), clock=clock)

    assert [key["kid"] for key in after.jwks()["keys"]] == [new["kid"]]
    with pytest.raises(InvalidToken):
        codec_for(after, clock).decode_access(old_token)


def test_rotation_removes_keys_whose_not_after_has_passed(tmp_path: Path) -> None:
    first = key_ring(settings(tmp_path)).signer.kid
    second = rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    third = rotate_keys(tmp_path, "ES256", now=NOW + DAY // 2, retain_for=DAY)

    assert [key["kid"] for key in read_keys(tmp_path)] == [third.signer, second.signer, first]

    fourth = rotate_keys(tmp_path, "ES256", now=NOW + DAY + 1, retain_for=DAY)

    assert fourth.removed == [first]
    assert fourth.retired == {third.signer: NOW + 2 * DAY + 2}
    assert [key["kid"] for key in read_keys(tmp_path)] == [
        fourth.signer,
        third.signer,
        second.signer,
    ]
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def test_rotation_without_a_key_file_creates_the_first_key(tmp_path: Path) -> None:
    rotation = rotate_keys(tmp_path / "data", "EdDSA", now=NOW, retain_for=DAY)

    assert (rotation.retired, rotation.removed) == ({}, [])
    assert key_ring(settings(tmp_path / "data", "EdDSA")).signer.kid == rotation.signer


# -- a running process picks up a rotation made elsewhere --------------------------------


def test_a_running_ring_adopts_a_rotation_after_the_reload_interval(
    tmp_path: Path, clock: FakeClock
) -> None:
    ring = key_ring(settings(tmp_path), clock=clock)
    codec = codec_for(ring, clock)
    old_kid = ring.signer.kid
    rotation = rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)

    clock.now = NOW + RELOAD_INTERVAL - 1
    assert kid_of(access_token(codec)) == old_kid

    clock.now = NOW + RELOAD_INTERVAL
    assert kid_of(access_token(codec)) == rotation.signer
    assert [key["kid"] for key in ring.jwks()["keys"]] == [rotation.signer, old_kid]


def test_a_token_with_a_new_kid_makes_a_running_ring_reload(
    tmp_path: Path, clock: FakeClock
) -> None:
    running = key_ring(settings(tmp_path), clock=clock)
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    elsewhere = codec_for(key_ring(settings(tmp_path), clock=clock), clock)
    clock.now = NOW + RELOAD_INTERVAL
    token = access_token(elsewhere, iat=int(clock.now))

    assert codec_for(running, clock).decode_access(token).sub == "user-1"


def test_unknown_kids_reload_at_most_once_per_interval(clock: FakeClock) -> None:
    calls = []

    def reload() -> None:
        calls.append(clock.now)

    key = jwk.generate_private_key("ES256")
    jwks = {"keys": [private_jwk(key, "ES256")]}
    ring = KeyRing.from_jwks("ES256", jwks, clock=clock, reload=reload)

    for step in range(int(RELOAD_INTERVAL * 4)):  # an unknown kid every second
        clock.now = NOW + RELOAD_INTERVAL + step
        with pytest.raises(InvalidToken):
            ring.verification_key(f"unknown-{step}")

    assert calls == [NOW + RELOAD_INTERVAL * n for n in (1, 2, 3, 4)]


def test_a_failed_reload_keeps_the_current_keys(tmp_path: Path, clock: FakeClock) -> None:
    ring = key_ring(settings(tmp_path), clock=clock)
    token = access_token(codec_for(ring, clock))
    kid = ring.signer.kid
    (tmp_path / "keys.json").write_text("{broken")

    clock.now = NOW + RELOAD_INTERVAL
    assert ring.signer.kid == kid
    assert codec_for(ring, clock).decode_access(token).sub == "user-1"


def test_a_reload_keeps_the_key_objects_of_known_kids(tmp_path: Path, clock: FakeClock) -> None:
    ring = key_ring(settings(tmp_path), clock=clock)
    kid = ring.signer.kid
    before = ring.verification_key(kid)
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)

    clock.now = NOW + RELOAD_INTERVAL
    assert ring.signer.kid != kid

    # The codec compares the key it verified with against a second lookup by identity.
    assert ring.verification_key(kid) is before


# -- invariant 7 under asymmetric keys ---------------------------------------------------


@pytest.fixture
def rs256(tmp_path: Path, clock: FakeClock) -> tuple[KeyRing, TokenCodec]:
    ring = key_ring(settings(tmp_path, "RS256"), clock=clock)
    return ring, codec_for(ring, clock)


def test_invariant_7_rejects_hs_rs_confusion_under_rs256(
    rs256: tuple[KeyRing, TokenCodec],
) -> None:
    ring, codec = rs256
    public_key = ring.verification_key(ring.signer.kid)
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(ring.jwks()["keys"][0]).encode()

    for secret in (pem, pem.strip(), jwk_json):
        for kid in ({"kid": ring.signer.kid}, {}):
            forged = hs256_by_hand({"alg": "HS256", "typ": "at+jwt", **kid}, claims_at(), secret)
            with pytest.raises(InvalidToken):
                codec.decode_access(forged)
    assert codec.decode_access(access_token(codec)).sub == "user-1"


def test_invariant_7_rejects_unknown_and_missing_kid_under_rs256(
    rs256: tuple[KeyRing, TokenCodec],
) -> None:
    ring, codec = rs256
    signing_key = ring.signer.key
    for headers in ({"kid": "someone-else"}, {}, {"kid": ""}):
        token = jwt.encode(
            claims_at(), signing_key, algorithm="RS256", headers={"typ": "at+jwt", **headers}
        )
        with pytest.raises(InvalidToken):
            codec.decode_access(token)


def test_invariant_7_rejects_a_foreign_key_that_claims_our_kid(
    rs256: tuple[KeyRing, TokenCodec],
) -> None:
    ring, codec = rs256
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        claims_at(), attacker, algorithm="RS256", headers={"typ": "at+jwt", "kid": ring.signer.kid}
    )

    with pytest.raises(InvalidToken):
        codec.decode_access(token)


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "EdDSA", "ES384"])
def test_invariant_7_rejects_another_asymmetric_algorithm_under_es256(
    tmp_path: Path, clock: FakeClock, algorithm: str
) -> None:
    ring = key_ring(settings(tmp_path, "ES256"), clock=clock)
    signer = {
        "RS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "EdDSA": lambda: jwk.generate_private_key("EdDSA"),
        "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    }[algorithm]()
    token = jwt.encode(
        claims_at(), signer, algorithm=algorithm, headers={"typ": "at+jwt", "kid": ring.signer.kid}
    )

    with pytest.raises(InvalidToken):
        codec_for(ring, clock).decode_access(token)


# -- KEYS_FILE: the operator's key set ---------------------------------------------------


def test_keys_file_first_key_signs_and_every_key_verifies(tmp_path: Path, clock: FakeClock) -> None:
    current, previous = (jwk.generate_private_key("EdDSA") for _ in range(2))
    keys_file = tmp_path / "operator" / "jwks.json"
    keys_file.parent.mkdir()
    write_keys(
        keys_file,
        [
            private_jwk(current, "EdDSA", kid="2025-06"),
            # Verify-only: the operator kept just the public part of the previous key.
            {"kty": "OKP", **jwk.public_members(previous.public_key()), "kid": "2025-01"},
        ],
    )
    written = keys_file.read_bytes()
    previous_ring = KeyRing.from_jwks(
        "EdDSA", {"keys": [private_jwk(previous, "EdDSA", kid="2025-01")]}, clock=clock
    )
    old_token = access_token(codec_for(previous_ring, clock))

    ring = key_ring(settings(tmp_path / "data", "EdDSA", keys_file=str(keys_file)), clock=clock)
    codec = codec_for(ring, clock)

    assert ring.signer.kid == "2025-06"
    assert kid_of(access_token(codec)) == "2025-06"
    assert codec.decode_access(old_token).sub == "user-1"
    assert [key["kid"] for key in ring.jwks()["keys"]] == ["2025-06", "2025-01"]
    assert keys_file.read_bytes() == written
    assert not (tmp_path / "data").exists()  # nothing generated into DATA_DIR


def public_only(key: ec.EllipticCurvePrivateKey, **members: Any) -> dict[str, Any]:
    return {**jwk.public_members(key.public_key()), **members}


@pytest.mark.parametrize(
    ("reason", "keys"),
    [
        ("no private part", lambda k: [public_only(k)]),
        ("is for ES384", lambda k: [private_jwk(k, "ES256", alg="ES384")]),
        ("use 'enc'", lambda k: [private_jwk(k, "ES256", use="enc")]),
        ("two keys have the kid", lambda k: [private_jwk(k, "ES256", kid="a")] * 2),
        ("does not match", lambda k: [private_jwk(k, "ES256", d=private_jwk(ec_key(), "")["d"])]),
        ("EC/P-384 key", lambda k: [{**private_jwk(k, "ES256"), "crv": "P-384"}]),
        ("no keys", lambda k: []),
        ("not base64url", lambda k: [{**private_jwk(k, "ES256"), "x": "a+b/c="}]),
        ("no key to sign", lambda k: [private_jwk(k, "ES256", **{NOT_AFTER: NOW + DAY})]),
        ("JSON object", lambda k: [private_jwk(k, "ES256"), "a key"]),
        ("kid must be", lambda k: [private_jwk(k, "ES256", kid=7)]),
        (
            "POSIX seconds",
            lambda k: [private_jwk(k, "ES256"), public_only(ec_key(), **{NOT_AFTER: "soon"})],
        ),
    ],
)
def test_an_unusable_keys_file_is_a_configuration_error_naming_it(
    tmp_path: Path, reason: str, keys: Callable[[Any], list[dict[str, Any]]]
) -> None:
    keys_file = tmp_path / "jwks.json"
    write_keys(keys_file, keys(ec_key()))

    with pytest.raises(ConfigurationError) as refused:
        key_ring(settings(tmp_path, "ES256", keys_file=str(keys_file)))
    assert refused.value.detail.startswith(f"{keys_file}: ")
    assert reason in refused.value.detail


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_a_missing_keys_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        key_ring(settings(tmp_path, "ES256", keys_file=str(tmp_path / "missing.json")))


def test_keys_file_under_hs256_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    keys_file = tmp_path / "jwks.json"
    write_keys(keys_file, [private_jwk(ec_key(), "ES256")])

    with pytest.raises(ConfigurationError, match="KEYS_FILE"):
        key_ring(settings(tmp_path, "HS256", keys_file=str(keys_file)))


def test_an_rsa_key_under_2048_bits_is_refused(tmp_path: Path) -> None:
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    keys_file = tmp_path / "jwks.json"
    write_keys(keys_file, [private_jwk(short, "RS256")])

    with pytest.raises(ConfigurationError, match="2048"):
        key_ring(settings(tmp_path, "RS256", keys_file=str(keys_file)))


def test_an_rsa_key_without_crt_members_loads(clock: FakeClock) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    members = jwk.private_members(key)
    minimal = {name: members[name] for name in ("kty", "n", "e", "d")}

    ring = KeyRing.from_jwks("RS256", {"keys": [minimal]}, clock=clock)
    codec = codec_for(ring, clock)

    assert codec.decode_access(access_token(codec)).sub == "user-1"


# -- JWK details -------------------------------------------------------------------------


def test_kid_is_the_rfc_7638_thumbprint() -> None:
    assert jwk.thumbprint(jwk.load_public_key(RFC_7638_KEY, "RS256")) == RFC_7638_THUMBPRINT


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_private_jwks_round_trip(algorithm: str) -> None:
    key = jwk.generate_private_key(algorithm)
    members = jwk.private_members(key)

    loaded = jwk.load_private_key(members, algorithm)

    assert jwk.private_members(loaded) == members
    assert jwk.without_private_part(members) == jwk.public_members(key.public_key())


def test_key_set_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    load_or_create_keys(tmp_path, "ES256", now=NOW)
    keys = KeySetFile(tmp_path / "keys.json")
    first = keys.read()

    assert keys.read_if_changed() is None
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    changed = keys.read_if_changed()

    assert changed is not None
    assert changed != first
    assert keys.read_if_changed() is None
    assert os.path.exists(tmp_path / "keys.json.lock")


def test_a_cached_token_of_a_key_removed_from_the_file_is_refused_after_the_reload(
    tmp_path: Path, clock: FakeClock
) -> None:
    ring = key_ring(settings(tmp_path), clock=clock)
    codec = codec_for(ring, clock)
    old_token = access_token(codec)
    assert codec.decode_access(old_token).sub == "user-1"  # verified, and so cached
    rotate_keys(tmp_path, "ES256", now=NOW, retain_for=DAY)
    new, _old = read_keys(tmp_path)
    write_keys(tmp_path / "keys.json", [new])  # the operator drops the old key

    clock.now = NOW + RELOAD_INTERVAL
    assert ring.signer.kid == new["kid"]  # the running ring has reloaded

    with pytest.raises(InvalidToken):
        codec.decode_access(old_token)
