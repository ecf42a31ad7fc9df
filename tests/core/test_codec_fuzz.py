"""The token decoder under hostile input (issue 11 item 3): whatever it is given —
arbitrary text or bytes, JWT-shaped nonsense, tokens we signed with arbitrary claims and
headers, or real tokens flipped, truncated, padded or spliced — it answers with
``InvalidToken`` or ``TokenExpired`` and nothing else, and it never accepts a token that
differs from one it issued (SPEC §1 invariant 7).
"""

from __future__ import annotations

import base64
import json
import string
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.core.clocks import FakeClock
from tokenstile.core.codec import AccessClaims, RefreshClaims, TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.errors import InvalidToken, TokenExpired
from tokenstile.keyfiles import load_or_create_keys, rotate_keys

SECRET = b"a fuzzing secret of at least thirty-two bytes, for HS256"
ISSUER = "https://auth.example"
AUDIENCE = "api.example"
LEEWAY = 5
NOW = 1_700_000_000
DAY = 86_400
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BASE64URL = string.ascii_letters + string.digits + "-_"
# Characters a mutation may put into a token: its own alphabet, what base64 decoders
# are lenient about (padding, the other alphabet, whitespace) and what they are not.
MUTANT_CHARS = BASE64URL + "=+/. \t\n\x00é한\udcff"


def codec_for(ring: KeyRing) -> TokenCodec:
    return TokenCodec(ring, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, clock=FakeClock(NOW))


@pytest.fixture(scope="module")
def rings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyRing]:
    """HS256 with its one key, and ES256 with two (the header's ``kid`` picks one)."""
    data_dir: Path = tmp_path_factory.mktemp("keys")
    load_or_create_keys(data_dir, "ES256", now=NOW)
    rotate_keys(data_dir, "ES256", now=NOW, retain_for=DAY)
    jwks = load_or_create_keys(data_dir, "ES256", now=NOW).read()
    return {
        "HS256": KeyRing.symmetric(SECRET),
        "ES256": KeyRing.from_jwks("ES256", jwks, clock=lambda: NOW),
    }


@pytest.fixture(scope="module")
def codecs(rings: dict[str, KeyRing]) -> dict[str, TokenCodec]:
    return {algorithm: codec_for(ring) for algorithm, ring in rings.items()}


def issued(codec: TokenCodec, kind: str, n: int = 0) -> str:
    """A valid token of ``kind`` (``access`` or ``refresh``); ``n`` varies its ids."""
    if kind == "access":
        return codec.encode_access(
            AccessClaims(
                sub=f"user-{n}",
                sid=f"sid-{n}",
                jti=f"access-{n}",
                iat=NOW,
                exp=NOW + 900,
                client_id="web",
                username=f"name-{n}",
            )
        )
    return codec.encode_refresh(
        sub=f"user-{n}", sid=f"sid-{n}", jti=f"refresh-{n}", iat=NOW, exp=NOW + DAY
    )


def decode(codec: TokenCodec, kind: str, token: Any) -> AccessClaims | RefreshClaims:
    return codec.decode_access(token) if kind == "access" else codec.decode_refresh(token)


def refused(codec: TokenCodec, kind: str, token: Any) -> type[Exception]:
    """The error decoding ``token`` raised; fails if it was accepted or raised another."""
    try:
        claims = decode(codec, kind, token)
    except (InvalidToken, TokenExpired) as exc:
        return type(exc)
    raise AssertionError(f"accepted {token!r} as {claims!r}")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: dict[str, Any], claims: dict[str, Any], algorithm: str, key: Any) -> str:
    """A JWS over exactly these header and claims, which ``jwt.encode`` would refuse to
    write for some (a non-string ``iss``, a ``NaN``)."""
    signing_input = ".".join(
        b64(json.dumps(part).encode()) for part in ({**header, "alg": algorithm}, claims)
    )
    signer = jwt.get_algorithm_by_name(algorithm)
    signature = signer.sign(signing_input.encode(), signer.prepare_key(key))
    return f"{signing_input}.{b64(signature)}"


algorithms = st.sampled_from(["HS256", "ES256"])
kinds = st.sampled_from(["access", "refresh"])


# -- anything at all -----------------------------------------------------------------------


@FUZZ
@given(algorithm=algorithms, kind=kinds, text=st.text(max_size=300))
@example(algorithm="HS256", kind="access", text="")
@example(algorithm="HS256", kind="refresh", text="..")
@example(algorithm="ES256", kind="access", text="a.b.c.d")
@example(algorithm="HS256", kind="access", text="x" * 9000)
def test_arbitrary_text_is_an_invalid_token(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, text: str
) -> None:
    assert refused(codecs[algorithm], kind, text) is InvalidToken


@FUZZ
@given(algorithm=algorithms, kind=kinds, data=st.binary(max_size=300))
def test_arbitrary_bytes_are_an_invalid_token_as_bytes_or_as_text(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, data: bytes
) -> None:
    codec = codecs[algorithm]
    assert refused(codec, kind, data) is InvalidToken
    assert refused(codec, kind, data.decode("latin-1")) is InvalidToken
    assert refused(codec, kind, data.decode("utf-8", "surrogateescape")) is InvalidToken


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
segments = st.one_of(
    st.binary(max_size=80).map(b64),
    json_values.map(lambda value: b64(json.dumps(value).encode())),
    st.text(alphabet=BASE64URL, max_size=80),
)


@FUZZ
@given(algorithm=algorithms, kind=kinds, parts=st.lists(segments, min_size=1, max_size=5))
def test_jwt_shaped_nonsense_is_an_invalid_token(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, parts: list[str]
) -> None:
    assert refused(codecs[algorithm], kind, ".".join(parts)) is InvalidToken


# -- tokens signed with our own key, but with claims and headers of any shape --------------


def claim_values(good: Any) -> st.SearchStrategy[Any]:
    """The right value of a claim, usually, or anything else, or nothing."""
    return st.one_of(st.just(good), st.just(good), json_values, st.just(_MISSING))


_MISSING = object()


@st.composite
def claim_sets(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    good: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "exp": NOW + 900,
        "iat": NOW,
        "jti": "jti-1",
        "sid": "sid-1",
    }
    if kind == "access":
        good |= {"aud": AUDIENCE, "client_id": "web", "preferred_username": "name"}
    good["nbf"] = _MISSING
    claims = {name: draw(claim_values(value)) for name, value in good.items()}
    extra = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    return {name: value for name, value in {**extra, **claims}.items() if value is not _MISSING}


@st.composite
def header_sets(draw: st.DrawFn, kind: str, kids: list[str]) -> dict[str, Any]:
    typ = "at+jwt" if kind == "access" else "rt+jwt"
    header: dict[str, Any] = {
        "typ": draw(claim_values(typ) | st.sampled_from(["at+jwt", "rt+jwt", "JWT"])),
        "kid": draw(claim_values(kids[0] if kids else _MISSING) | st.sampled_from(kids or [""])),
        "crit": draw(st.just(_MISSING) | json_values),
    }
    return {name: value for name, value in header.items() if value is not _MISSING}


@FUZZ
@given(algorithm=algorithms, kind=kinds, data=st.data())
def test_our_signature_over_any_claims_gives_valid_claims_or_our_errors(
    codecs: dict[str, TokenCodec],
    rings: dict[str, KeyRing],
    algorithm: str,
    kind: str,
    data: st.DataObject,
) -> None:
    codec, ring = codecs[algorithm], rings[algorithm]
    kids = [key["kid"] for key in ring.jwks()["keys"]]
    claims = data.draw(claim_sets(kind))
    header = data.draw(header_sets(kind, kids))
    token = signed(header, claims, algorithm, ring.signer.key)

    try:
        decoded = decode(codec, kind, token)
    except (InvalidToken, TokenExpired):
        return
    assert claims["iss"] == ISSUER
    for name in ("sub", "sid", "jti"):
        assert isinstance(getattr(decoded, name), str)
        assert getattr(decoded, name)
    for name in ("exp", "iat"):
        value = getattr(decoded, name)
        assert isinstance(value, int)
        assert not isinstance(value, bool)
    assert decoded.exp + LEEWAY > NOW >= decoded.iat - LEEWAY
    if isinstance(decoded, AccessClaims):
        audience = claims["aud"]
        assert audience == AUDIENCE or (isinstance(audience, list) and AUDIENCE in audience)


# -- real tokens, modified -----------------------------------------------------------------


@st.composite
def mutants(draw: st.DrawFn, token: str, other: str) -> str:
    """``token`` flipped, truncated, cut, grown, padded or spliced with ``other``."""
    position = draw(st.integers(0, len(token)))
    char = draw(st.sampled_from(MUTANT_CHARS))
    segments, foreign = token.split("."), other.split(".")
    how = draw(
        st.sampled_from(
            ["flip", "truncate", "delete", "insert", "splice", "pad", "drop", "repeat", "case"]
        )
    )
    if how == "flip":
        return token[:position] + char + token[position + 1 :]
    if how == "truncate":
        return token[:position]
    if how == "delete":
        return token[:position] + token[position + 1 :]
    if how == "insert":
        return token[:position] + char + token[position:]
    if how == "splice":  # header, payload and signature each from either token
        picks = draw(st.lists(st.booleans(), min_size=3, max_size=3))
        return ".".join(
            f if pick else s for s, f, pick in zip(segments, foreign, picks, strict=True)
        )
    if how == "pad":  # base64 padding or whitespace after a segment
        index = draw(st.integers(0, 2))
        segments[index] += draw(st.sampled_from(["=", "==", "===", " ", "\n", "+", "/"]))
        return ".".join(segments)
    if how == "drop":
        del segments[draw(st.integers(0, 2))]
        return ".".join(segments)
    if how == "repeat":
        index = draw(st.integers(0, 2))
        segments.insert(index, segments[index])
        return ".".join(segments)
    return token[:position] + token[position : position + 1].swapcase() + token[position + 1 :]


@settings(FUZZ, max_examples=1_000)
@given(algorithm=algorithms, kind=kinds, other_kind=kinds, data=st.data())
def test_a_modified_token_is_never_accepted(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, other_kind: str, data: st.DataObject
) -> None:
    codec = codecs[algorithm]
    token = issued(codec, kind)
    other = issued(codecs[data.draw(algorithms)], other_kind, n=1)
    assert decode(codec, kind, token)  # the original is valid, so only the change refuses

    mutant = data.draw(mutants(token, other))

    if mutant not in (token, other):  # a splice may give back either one whole
        assert refused(codec, kind, mutant) is InvalidToken


@pytest.mark.parametrize("algorithm", ["HS256", "ES256"])
@pytest.mark.parametrize("kind", ["access", "refresh"])
@pytest.mark.parametrize("padding", ["=", "=="])
def test_a_signature_with_base64_padding_is_refused(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, padding: str
) -> None:
    # Found by the fuzzer: PyJWT decodes a padded signature segment, so the same token
    # with "=" appended verified. JWS compact segments are unpadded (RFC 7515 §2); a
    # second spelling of a token would slip past anything keyed by the token's string.
    codec = codecs[algorithm]
    token = issued(codec, kind)

    assert refused(codec, kind, token + padding) is InvalidToken
    assert decode(codec, kind, token)


@pytest.mark.parametrize("algorithm", ["HS256", "ES256"])
@pytest.mark.parametrize("kind", ["access", "refresh"])
@pytest.mark.parametrize("where", ["alone", "header", "signature"])
def test_a_token_with_a_lone_surrogate_is_an_invalid_token(
    codecs: dict[str, TokenCodec], algorithm: str, kind: str, where: str
) -> None:
    # Found by the fuzzer: PyJWT encodes the token to UTF-8 first, so a lone surrogate
    # raised UnicodeEncodeError out of the codec. The API's request schemas refuse such
    # strings already; a library caller passing any ``str`` did not have that guard.
    codec = codecs[algorithm]
    token = issued(codec, kind)
    header, payload, signature = token.split(".")
    text = {
        "alone": "\udc80",
        "header": f"{header}\ud800.{payload}.{signature}",
        "signature": f"{token}\udfff",
    }[where]

    assert refused(codec, kind, text) is InvalidToken


@pytest.mark.parametrize("algorithm", ["HS256", "ES256"])
def test_each_token_type_is_refused_by_the_other_decoder(
    codecs: dict[str, TokenCodec], algorithm: str
) -> None:
    codec = codecs[algorithm]

    assert refused(codec, "access", issued(codec, "refresh")) is InvalidToken
    assert refused(codec, "refresh", issued(codec, "access")) is InvalidToken
