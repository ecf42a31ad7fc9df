"""The codec: invariant 7 (only the pinned algorithm, known keys and valid claims verify),
and the encoding, claim typing and limits around it.

Each attack that invariant 7 names has a ``test_invariant_7_`` test; the other tests are
named for the RFC or the behaviour they prove. Tokens are forged with PyJWT, or assembled
by hand where PyJWT refuses to produce them (``alg: none``, a PEM used as an HMAC secret).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.core.clocks import FakeClock
from tokenstile.core.codec import (
    MAX_TOKEN_BYTES,
    AccessClaims,
    TokenCodec,
    introspection_members,
    unverified_claims,
    unverified_header,
)
from tokenstile.core.keys import KeyRing
from tokenstile.errors import ConfigurationError, InvalidToken, TokenExpired

# 64 bytes, so PyJWT may also sign HS384/HS512 forgeries with them without a warning.
SECRET = "a shared secret, long enough for HS512 as well as for HS256: 64 b"
ATTACKER_SECRET = "the attacker's own secret, just as long as ours is, to be fair: 64"
KEY = SECRET.encode()
ISSUER = "https://auth.example"
AUDIENCE = "api.example"
LEEWAY = 5
NOW = 1_700_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def codec(clock: FakeClock) -> TokenCodec:
    return TokenCodec(
        KeyRing.symmetric(KEY),
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=LEEWAY,
        clock=clock,
    )


def access_claims(**changes: Any) -> dict[str, Any]:
    """Claims of a valid access token at NOW; ``None`` values are left out."""
    claims = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUDIENCE,
        "exp": NOW + 900,
        "iat": NOW,
        "jti": "access-jti",
        "sid": "session-1",
        "client_id": "tokenstile",
        "preferred_username": "alice",
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not None}


def refresh_claims(**changes: Any) -> dict[str, Any]:
    """Claims of a valid refresh token at NOW; ``None`` values are left out."""
    claims = {
        "iss": ISSUER,
        "sub": "user-1",
        "exp": NOW + 3600,
        "iat": NOW,
        "jti": "refresh-jti",
        "sid": "session-1",
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not None}


def forge(
    claims: dict[str, Any],
    *,
    typ: str | None = "at+jwt",
    key: Any = SECRET,
    algorithm: str = "HS256",
    **headers: Any,
) -> str:
    """A token signed by PyJWT with any key, algorithm and headers."""
    return jwt.encode(claims, key, algorithm=algorithm, headers={"typ": typ, **headers})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def assemble(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS built by hand, for tokens PyJWT refuses to make."""
    header_part = b64url(json.dumps(header).encode())
    payload_part = b64url(json.dumps(claims).encode())
    return f"{header_part}.{payload_part}.{b64url(signature)}"


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    unsigned = assemble(header, claims).rstrip(".")
    signature = hmac.new(key, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64url(signature)}"


# -- the baseline: what a valid token looks like ---------------------------------------


def test_a_well_formed_access_token_verifies_with_its_claims(codec: TokenCodec) -> None:
    claims = codec.decode_access(forge(access_claims()))

    assert (claims.sub, claims.sid, claims.jti) == ("user-1", "session-1", "access-jti")
    assert (claims.iat, claims.exp) == (NOW, NOW + 900)


def test_a_well_formed_refresh_token_verifies_with_its_claims(codec: TokenCodec) -> None:
    claims = codec.decode_refresh(forge(refresh_claims(), typ="rt+jwt"))

    assert (claims.sub, claims.sid, claims.jti) == ("user-1", "session-1", "refresh-jti")


# -- algorithm and key -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", [b"", b"anything"], ids=["unsigned", "junk-signature"])
def test_invariant_7_rejects_alg_none(codec: TokenCodec, alg: str, signature: bytes) -> None:
    header = {"alg": alg, "typ": "at+jwt"}

    with pytest.raises(InvalidToken):
        codec.decode_access(assemble(header, access_claims(), signature))
    with pytest.raises(InvalidToken):
        codec.decode_refresh(assemble({**header, "typ": "rt+jwt"}, refresh_claims(), signature))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_invariant_7_rejects_other_hmac_algorithms_even_with_the_right_secret(
    codec: TokenCodec, algorithm: str
) -> None:
    token = forge(access_claims(), algorithm=algorithm)

    with pytest.raises(InvalidToken):
        codec.decode_access(token)


@pytest.fixture(scope="module")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_invariant_7_rejects_hs_rs_key_confusion(
    codec: TokenCodec, rsa_private_key: rsa.RSAPrivateKey
) -> None:
    public_pem = rsa_private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The classic confusion: an HS256 token whose HMAC key is the (public) RSA key.
    # PyJWT refuses to sign that, so the token is assembled by hand.
    hs_with_public_key = hs256_by_hand(
        {"alg": "HS256", "typ": "at+jwt"}, access_claims(), public_pem
    )
    rs_with_private_key = forge(access_claims(), key=rsa_private_key, algorithm="RS256")

    with pytest.raises(InvalidToken):
        codec.decode_access(hs_with_public_key)
    with pytest.raises(InvalidToken):
        codec.decode_access(rs_with_private_key)


def test_the_hand_assembled_hs256_helper_makes_tokens_the_codec_accepts(codec: TokenCodec) -> None:
    # Guards the forgery helper above: with the right key, hand-made tokens verify.
    token = hs256_by_hand({"alg": "HS256", "typ": "at+jwt"}, access_claims(), KEY)

    assert codec.decode_access(token).sub == "user-1"


@pytest.mark.parametrize("kid", ["other-key", "", 7, ["a"], {"k": "v"}])
def test_invariant_7_rejects_unknown_kid(codec: TokenCodec, kid: Any) -> None:
    # Signed with the right secret: only the kid is wrong. By hand, because PyJWT
    # refuses to put a kid that is not a string into a header.
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    token = hs256_by_hand(header, access_claims(), KEY)

    with pytest.raises(InvalidToken):
        codec.decode_access(token)


def attacker_key_headers() -> dict[str, Any]:
    attacker_jwk = {"kty": "oct", "k": b64url(ATTACKER_SECRET.encode())}
    return {
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": attacker_jwk,
    }


def test_invariant_7_ignores_keys_named_by_jku_x5u_and_jwk_headers(codec: TokenCodec) -> None:
    signed_by_attacker = forge(access_claims(), key=ATTACKER_SECRET, **attacker_key_headers())
    signed_by_us = forge(access_claims(), **attacker_key_headers())

    with pytest.raises(InvalidToken):
        codec.decode_access(signed_by_attacker)
    assert codec.decode_access(signed_by_us).sub == "user-1"


# -- claims ------------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", ["https://evil.example", "", None, ["https://auth.example"]])
def test_invariant_7_rejects_wrong_issuer(codec: TokenCodec, issuer: Any) -> None:
    # By hand, because PyJWT refuses to sign an issuer that is not a string.
    access = hs256_by_hand({"alg": "HS256", "typ": "at+jwt"}, access_claims(iss=issuer), KEY)
    refresh = hs256_by_hand({"alg": "HS256", "typ": "rt+jwt"}, refresh_claims(iss=issuer), KEY)

    with pytest.raises(InvalidToken):
        codec.decode_access(access)
    with pytest.raises(InvalidToken):
        codec.decode_refresh(refresh)


@pytest.mark.parametrize("audience", ["other-api", ["other-api", "third-api"], "", None])
def test_invariant_7_rejects_wrong_audience(codec: TokenCodec, audience: Any) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(aud=audience)))


def test_rfc7519_4_1_3_an_audience_list_that_names_us_verifies(codec: TokenCodec) -> None:
    token = forge(access_claims(aud=["other-api", AUDIENCE]))

    assert codec.decode_access(token).sub == "user-1"


def test_invariant_7_rejects_refresh_token_as_access_token(codec: TokenCodec) -> None:
    refresh = codec.encode_refresh(
        sub="user-1", sid="session-1", jti="refresh-jti", iat=NOW, exp=NOW + 3600
    )

    with pytest.raises(InvalidToken):
        codec.decode_access(refresh)


def test_invariant_7_rejects_access_token_as_refresh_token(codec: TokenCodec) -> None:
    access = encode_access(codec)

    with pytest.raises(InvalidToken):
        codec.decode_refresh(access)


@pytest.mark.parametrize("typ", [None, "JWT", "at+JWT ", "application/jwt", "text/at+jwt", 1])
def test_invariant_7_rejects_a_missing_or_wrong_typ(codec: TokenCodec, typ: Any) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(), typ=typ))
    with pytest.raises(InvalidToken):
        codec.decode_refresh(forge(refresh_claims(), typ=typ))


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+JWT"])
def test_rfc9068_4_an_access_token_typed_application_at_jwt_verifies(
    codec: TokenCodec, typ: str
) -> None:
    # RFC 7515 §4.1.9: "at+jwt" is short for "application/at+jwt"; media types ignore case.
    assert codec.decode_access(forge(access_claims(), typ=typ)).sub == "user-1"


@pytest.mark.parametrize("typ", ["rt+jwt", "application/rt+jwt", "RT+JWT"])
def test_rfc9068_4_refresh_typed_tokens_are_still_refused_as_access_tokens(
    codec: TokenCodec, typ: str
) -> None:
    # Access claims, so only the type tells them apart.
    with pytest.raises(InvalidToken, match="type"):
        codec.decode_access(forge(access_claims(), typ=typ))
    assert codec.decode_refresh(forge(refresh_claims(), typ=typ)).sid == "session-1"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt"])
def test_rfc9068_4_access_typed_tokens_are_still_refused_as_refresh_tokens(
    codec: TokenCodec, typ: str
) -> None:
    with pytest.raises(InvalidToken, match="type"):
        codec.decode_refresh(forge(refresh_claims(), typ=typ))


def test_invariant_7_rejects_expired_token(codec: TokenCodec, clock: FakeClock) -> None:
    access = forge(access_claims(exp=NOW + 900))
    refresh = forge(refresh_claims(exp=NOW + 3600), typ="rt+jwt")
    clock.now = NOW + 3600 + LEEWAY + 60

    with pytest.raises(TokenExpired):
        codec.decode_access(access)
    with pytest.raises(TokenExpired):
        codec.decode_refresh(refresh)


def test_invariant_7_an_expired_token_verifies_only_within_the_leeway(
    codec: TokenCodec, clock: FakeClock
) -> None:
    exp = NOW + 900
    token = forge(access_claims(exp=exp))

    clock.now = exp + LEEWAY - 1
    assert codec.decode_access(token).exp == exp

    clock.now = exp + LEEWAY + 1
    with pytest.raises(TokenExpired):
        codec.decode_access(token)


def test_invariant_7_rejects_not_yet_valid_nbf(codec: TokenCodec) -> None:
    slightly_early = forge(access_claims(nbf=NOW + LEEWAY - 1))
    too_early = forge(access_claims(nbf=NOW + LEEWAY + 60))

    assert codec.decode_access(slightly_early).sub == "user-1"
    with pytest.raises(InvalidToken):
        codec.decode_access(too_early)


@pytest.mark.parametrize("nbf", ["soon", 1.5e9, True])
def test_a_non_integer_nbf_is_refused(codec: TokenCodec, nbf: Any) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(nbf=nbf)))


def test_invariant_7_rejects_iat_in_the_future(codec: TokenCodec) -> None:
    skewed = forge(access_claims(iat=NOW + LEEWAY - 1))
    from_the_future = forge(access_claims(iat=NOW + LEEWAY + 60))

    assert codec.decode_access(skewed).iat == NOW + LEEWAY - 1
    with pytest.raises(InvalidToken):
        codec.decode_access(from_the_future)


# -- integrity ---------------------------------------------------------------------------


def test_invariant_7_rejects_tampered_payload(codec: TokenCodec) -> None:
    header, _, signature = forge(access_claims()).split(".")
    promoted = b64url(json.dumps(access_claims(sub="admin")).encode())

    with pytest.raises(InvalidToken):
        codec.decode_access(f"{header}.{promoted}.{signature}")


def test_invariant_7_rejects_tampered_signature(codec: TokenCodec) -> None:
    header, payload, signature = forge(access_claims()).split(".")
    # Flip one bit of the decoded signature: editing the last base64url character
    # could touch only padding bits and leave the signature unchanged.
    flipped = bytearray(b64url_decode(signature))
    flipped[0] ^= 0x01

    with pytest.raises(InvalidToken):
        codec.decode_access(f"{header}.{payload}.{b64url(bytes(flipped))}")
    with pytest.raises(InvalidToken):
        codec.decode_access(f"{header}.{payload}.")


@pytest.mark.parametrize(
    "token", ["", "not-a-jwt", "a.b", "a.b.c.d", "...", "e30.e30.", "\x00\x01.\x02.\x03"]
)
def test_a_token_that_is_not_a_compact_jws_is_refused(codec: TokenCodec, token: str) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(token)


def padded_token(length_at_most: int) -> str:
    """The longest valid access token no longer than ``length_at_most`` characters."""
    low, high = 0, length_at_most
    best = ""
    while low <= high:
        middle = (low + high) // 2
        token = forge(access_claims(pad="x" * middle))
        if len(token) <= length_at_most:
            best, low = token, middle + 1
        else:
            high = middle - 1
    return best


def test_an_oversized_token_is_refused_before_parsing(codec: TokenCodec) -> None:
    just_fits = padded_token(MAX_TOKEN_BYTES)
    oversized = forge(access_claims(pad="x" * MAX_TOKEN_BYTES))

    assert len(just_fits) > MAX_TOKEN_BYTES - 4
    assert codec.decode_access(just_fits).sub == "user-1"
    with pytest.raises(InvalidToken) as refused:
        codec.decode_access(oversized)
    # Refused by the size check itself, not by the JWT library failing on it.
    assert refused.value.__cause__ is None


@pytest.mark.parametrize("exp", [str(NOW + 900), float(NOW + 900), True, None, [NOW + 900]])
def test_a_missing_or_non_integer_exp_is_refused(codec: TokenCodec, exp: Any) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(exp=exp)))
    with pytest.raises(InvalidToken):
        codec.decode_refresh(forge(refresh_claims(exp=exp), typ="rt+jwt"))


@pytest.mark.parametrize("iat", [str(NOW), float(NOW), None])
def test_a_missing_or_non_integer_iat_is_refused(codec: TokenCodec, iat: Any) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(iat=iat)))


@pytest.mark.parametrize("claim", ["sid", "jti", "sub"])
@pytest.mark.parametrize("value", [None, "", 42], ids=["missing", "empty", "not-a-string"])
def test_a_missing_empty_or_non_string_sub_sid_or_jti_is_refused(
    codec: TokenCodec, claim: str, value: Any
) -> None:
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(**{claim: value})))
    with pytest.raises(InvalidToken):
        codec.decode_refresh(forge(refresh_claims(**{claim: value}), typ="rt+jwt"))


@pytest.mark.parametrize("crit", [["exp"], ["b64x"], []])
def test_rfc7515_4_1_11_a_token_with_a_crit_header_is_refused(
    codec: TokenCodec, crit: list[str]
) -> None:
    token = forge(access_claims(), crit=crit)

    with pytest.raises(InvalidToken):
        codec.decode_access(token)


# -- keys and encoding -------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 16, 31])
def test_rfc7518_3_2_a_secret_under_32_bytes_is_refused(length: int) -> None:
    with pytest.raises(ConfigurationError):
        KeyRing.symmetric(b"k" * length)


def test_rfc7518_3_2_a_secret_of_32_bytes_is_accepted() -> None:
    assert KeyRing.symmetric(b"k" * 32).algorithm == "HS256"


def test_refresh_token_encoding_is_deterministic_for_the_grace_window(codec: TokenCodec) -> None:
    # The grace window re-creates the child token from the session record alone.
    def encode(jti: str) -> str:
        return codec.encode_refresh(sub="user-1", sid="session-1", jti=jti, iat=NOW, exp=NOW + 60)

    first = encode("j")

    assert encode("j") == first
    assert encode("k") != first


ALICE = AccessClaims(
    sub="user-1",
    sid="session-1",
    jti="access-jti",
    iat=NOW,
    exp=NOW + 900,
    client_id="my-app",
    username="alice",
)
"""The claims of the access tokens these tests sign, issued at ``NOW``."""


def encode_access(codec: TokenCodec, iat: int = NOW) -> str:
    return codec.encode_access(dataclasses.replace(ALICE, iat=iat, exp=iat + 900))


def test_rfc9068_an_access_token_is_an_at_jwt_with_the_registered_claims(codec: TokenCodec) -> None:
    token = encode_access(codec)

    header = jwt.get_unverified_header(token)
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    assert claims.keys() >= {"iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id"}
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["client_id"] == "my-app"
    assert claims["sub"] == "user-1"


def test_a_third_party_verifies_access_tokens_with_plain_pyjwt(
    codec: TokenCodec, clock: FakeClock
) -> None:
    # PyJWT checks exp and iat against the real clock, so the codec uses real time here.
    now = int(time.time())
    clock.now = now
    token = encode_access(codec, iat=now)

    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)

    assert claims["sub"] == "user-1"
    assert claims["sid"] == "session-1"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, ATTACKER_SECRET, algorithms=["HS256"], audience=AUDIENCE)


# -- the access claims are defined once ---------------------------------------------------


def test_every_declared_access_claim_is_signed_into_the_token_and_read_back(
    codec: TokenCodec,
) -> None:
    claims = ALICE

    token = codec.encode_access(claims)

    payload = json.loads(b64url_decode(token.split(".")[1]))
    assert payload == access_claims(client_id="my-app")
    assert codec.decode_access(token) == claims


@pytest.mark.parametrize(
    "claim", ["sub", "sid", "jti", "iat", "exp", "client_id", "preferred_username"]
)
def test_an_access_token_without_any_one_declared_claim_is_refused(
    codec: TokenCodec, claim: str
) -> None:
    assert codec.decode_access(forge(access_claims())).sub == "user-1"
    with pytest.raises(InvalidToken):
        codec.decode_access(forge(access_claims(**{claim: None})))


@pytest.mark.parametrize(("claim", "value"), [("client_id", 7), ("preferred_username", ["alice"])])
def test_an_access_token_whose_claim_has_the_wrong_type_is_refused(
    codec: TokenCodec, claim: str, value: Any
) -> None:
    with pytest.raises(InvalidToken, match=claim):
        codec.decode_access(forge(access_claims(**{claim: value})))


def test_introspection_reports_each_access_claim_under_its_introspection_name() -> None:
    claims = AccessClaims(sub="u", sid="s", jti="j", iat=1, exp=2, client_id="c", username="alice")

    assert introspection_members(claims) == {
        "sub": "u",
        "sid": "s",
        "jti": "j",
        "iat": 1,
        "exp": 2,
        "client_id": "c",
        "username": "alice",
    }


# -- reading a token without trusting it ---------------------------------------------------


def test_the_unverified_readers_return_what_even_a_forged_token_states() -> None:
    forged = forge(access_claims(sub="admin"), key=ATTACKER_SECRET, kid="their-key")

    assert unverified_header(forged) == {"alg": "HS256", "typ": "at+jwt", "kid": "their-key"}
    assert unverified_claims(forged) == access_claims(sub="admin")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "e30",
        f"{b64url(b'[1]')}.e30.",
        f"{forge(access_claims())}=",
        "\udcff.e30.",
        "x" * (MAX_TOKEN_BYTES + 1),
        None,
    ],
    ids=[
        "empty",
        "no-dots",
        "one-part",
        "header-not-object",
        "padded",
        "surrogate",
        "oversized",
        "not-a-string",
    ],
)
def test_the_unverified_readers_refuse_what_is_not_a_compact_jws(token: Any) -> None:
    with pytest.raises(InvalidToken):
        unverified_header(token)
    with pytest.raises(InvalidToken):
        unverified_claims(token)


# -- the verified-token cache ------------------------------------------------------------


def test_a_tampered_token_is_refused_even_when_its_untampered_twin_is_cached(
    codec: TokenCodec,
) -> None:
    token = encode_access(codec)
    assert codec.decode_access(token).sub == "user-1"
    head, body, signature = token.split(".")
    claims = json.loads(b64url_decode(body))
    forged_body = b64url(json.dumps({**claims, "sub": "someone-else"}).encode())

    for forged in (
        f"{head}.{forged_body}.{signature}",
        f"{head}.{body}.{signature[:-2]}AA",
        f"{token} ",
        f"{head}.{body}",
    ):
        with pytest.raises(InvalidToken):
            codec.decode_access(forged)
    assert codec.decode_access(token).sub == "user-1"


def test_an_expired_token_is_refused_even_when_it_is_cached(
    codec: TokenCodec, clock: FakeClock
) -> None:
    token = encode_access(codec)
    assert codec.decode_access(token).exp == NOW + 900

    clock.now = NOW + 900 + LEEWAY - 1
    assert codec.decode_access(token).sub == "user-1"
    clock.now = NOW + 900 + LEEWAY
    with pytest.raises(TokenExpired):
        codec.decode_access(token)


def test_a_cached_token_is_not_valid_before_its_nbf_or_iat_when_the_clock_goes_back(
    clock: FakeClock,
) -> None:
    codec = TokenCodec(
        KeyRing.symmetric(KEY), issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, clock=clock
    )
    token = jwt.encode(access_claims(nbf=NOW), SECRET, "HS256", headers={"typ": "at+jwt"})
    assert codec.decode_access(token).sub == "user-1"

    clock.now = NOW - LEEWAY - 1  # e.g. NTP stepping the clock back
    with pytest.raises(InvalidToken):
        codec.decode_access(token)


def test_a_cache_hit_does_not_verify_the_signature_again(
    codec: TokenCodec, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = encode_access(codec)
    first = codec.decode_access(token)

    def must_not_run(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the cached token was decoded again")

    monkeypatch.setattr(jwt, "decode_complete", must_not_run)

    assert codec.decode_access(token) == first


def test_the_verified_token_cache_stays_at_its_bound_and_never_holds_forgeries(
    clock: FakeClock,
) -> None:
    codec = TokenCodec(
        KeyRing.symmetric(KEY),
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=LEEWAY,
        clock=clock,
        cache_size=8,
    )
    attacker = TokenCodec(
        KeyRing.symmetric(ATTACKER_SECRET.encode()),
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=LEEWAY,
        clock=clock,
    )

    for iat in range(NOW - 100, NOW):
        codec.decode_access(encode_access(codec, iat=iat))
    for iat in range(NOW - 100, NOW):
        with pytest.raises(InvalidToken):
            codec.decode_access(encode_access(attacker, iat=iat))

    cache = codec._verified
    assert len(cache) == 8
    assert all(cached.key == KEY for cached in cache._entries.values())
