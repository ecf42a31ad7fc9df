"""Encoding and verifying tokens: the only module that imports the JWT library.

Signature checking (PyJWT, algorithm pinned by the key ring) and claim checking
(here, one ``_validate_<claim>`` per claim, against the injected clock) are separate
steps, as RFC 8725 recommends. :class:`AccessClaims` is the one definition of what an
access token carries: encoding, decoding and introspection all read its fields.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

import jwt
from jwt.types import Options

from tokenstile.core.clock import Clock
from tokenstile.core.keys import KeyRing
from tokenstile.errors import InvalidToken, TokenExpired

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
REFRESH_TOKEN_TYPE = "rt+jwt"
MAX_TOKEN_BYTES = 8192
"""Tokens longer than this are refused before any parsing."""
VERIFIED_CACHE_SIZE = 4096
"""Access tokens whose verification is remembered (each about 2 KB)."""

_NO_CLAIM_CHECKS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}
_NO_CHECKS: Options = {**_NO_CLAIM_CHECKS, "verify_signature": False}


def _claim(name: str, *, introspected_as: str) -> Any:
    """An :class:`AccessClaims` field carried in tokens as claim ``name`` and reported by
    introspection (RFC 7662) as member ``introspected_as``."""
    return field(metadata={"claim": name, "introspected_as": introspected_as})


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says, besides the ``iss`` and ``aud`` the codec checks.

    Each field is one claim, a ``str`` or an ``int``, named as the field in tokens and in
    introspection unless ``_claim`` names it otherwise. A field added here is signed into
    access tokens, required and type-checked when they are verified, and introspected.
    """

    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    client_id: str
    username: str = _claim("preferred_username", introspected_as="username")


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    """What a verified refresh token says."""

    sub: str
    sid: str
    jti: str
    iat: int
    exp: int


def _integer(claims: dict[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidToken(f"The token's {name} claim is missing or malformed.")
    return value


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"The token's {name} claim is missing or malformed.")
    return value


@dataclass(frozen=True, slots=True)
class _ClaimField:
    """How one :class:`AccessClaims` field is named in a token and in introspection."""

    attribute: str
    claim: str
    introspected_as: str
    read: Callable[[dict[str, Any], str], Any]


def _claim_fields() -> tuple[_ClaimField, ...]:
    readers: dict[object, Callable[[dict[str, Any], str], Any]] = {str: _string, int: _integer}
    types = get_type_hints(AccessClaims)
    return tuple(
        _ClaimField(
            attribute=item.name,
            claim=item.metadata.get("claim", item.name),
            introspected_as=item.metadata.get("introspected_as", item.name),
            read=readers[types[item.name]],
        )
        for item in fields(AccessClaims)
    )


_ACCESS_CLAIMS = _claim_fields()


def introspection_members(claims: AccessClaims) -> dict[str, Any]:
    """``claims`` under their RFC 7662 §2.2 member names, as :class:`AccessClaims` declares."""
    return {item.introspected_as: getattr(claims, item.attribute) for item in _ACCESS_CLAIMS}


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header ``token`` states, not verified: fit only for choosing a key to verify
    it with. Raises ``InvalidToken`` when it is not a readable compact JWS."""
    _check_compact(token)
    try:
        return jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken() from exc


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims ``token`` states, with neither its signature nor any claim checked: fit
    only for what a forged token gains nothing from, such as a client timing its own
    refresh. Raises ``InvalidToken`` when it is not a readable compact JWS."""
    _check_compact(token)
    try:
        return jwt.decode(token, options=_NO_CHECKS)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken() from exc


def _check_compact(token: object) -> None:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken()
    # A compact JWS is unpadded base64url and dots (RFC 7515 §2, §7.1). PyJWT would
    # also read a padded signature, a second spelling of one token, and raises
    # UnicodeEncodeError on a lone surrogate, which any Python str may hold.
    if not token.isascii() or "=" in token:
        raise InvalidToken()


@dataclass(frozen=True, slots=True)
class _Verified:
    """What verifying one access token found."""

    claims: AccessClaims
    payload: dict[str, Any]
    kid: str | None
    key: Any


class _VerifiedTokens:
    """A bounded LRU of access tokens that passed every check, by their exact string.

    Only tokens that verified are put in, so forged ones can never fill it; valid ones
    push out the least recently used.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Verified] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> _Verified | None:
        entry = self._entries.get(token)
        if entry is not None:
            self._entries.move_to_end(token)
        return entry

    def put(self, token: str, entry: _Verified) -> None:
        if self._size <= 0:
            return
        self._entries[token] = entry
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def discard(self, token: str) -> None:
        self._entries.pop(token, None)

    def clear(self) -> None:
        self._entries.clear()


class TokenCodec:
    """Signs and verifies access and refresh tokens for one issuer and audience."""

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        leeway: float,
        clock: Clock,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._clock = clock
        self._verified = _VerifiedTokens(cache_size)
        self._key_generation = keys.generation

    @property
    def issuer(self) -> str:
        """The ``iss`` of every token, and the only one accepted."""
        return self._issuer

    @property
    def audience(self) -> str:
        """The ``aud`` of every access token, and the one an access token must name."""
        return self._audience

    def encode_access(self, access: AccessClaims) -> str:
        """A signed access token carrying ``access``, for this issuer and audience."""
        claims: dict[str, Any] = {"iss": self._issuer, "aud": self._audience}
        for item in _ACCESS_CLAIMS:
            claims[item.claim] = getattr(access, item.attribute)
        return self._sign(claims, ACCESS_TOKEN_TYPE)

    def encode_refresh(self, *, sub: str, sid: str, jti: str, iat: int, exp: int) -> str:
        """Deterministic: the same arguments give the same claims in the same order,
        so re-signing a session's current token reproduces it (byte-identical under HMAC)."""
        claims = {"iss": self._issuer, "sub": sub, "exp": exp, "iat": iat, "jti": jti, "sid": sid}
        return self._sign(claims, REFRESH_TOKEN_TYPE)

    def decode_access(self, token: str) -> AccessClaims:
        """Verify an access token; raises ``InvalidToken`` or ``TokenExpired``.

        A token that passed every check before is found in a bounded cache by its exact
        string; then only what can change since is checked again: that its key still
        verifies, and ``exp``, ``nbf`` and ``iat`` against the clock.
        """
        if self._keys.generation != self._key_generation:
            self._verified.clear()  # keys were added or removed
            self._key_generation = self._keys.generation
        cached = self._verified.get(token)
        if cached is not None:
            return self._recheck(token, cached)
        claims, kid, key = self._verify(token, ACCESS_TOKEN_TYPE)
        self._validate_aud(claims)
        # Positional, in field order (as _claim_fields lists them): the cheapest call.
        access = AccessClaims(*[item.read(claims, item.claim) for item in _ACCESS_CLAIMS])
        self._verified.put(token, _Verified(access, claims, kid, key))
        return access

    def _recheck(self, token: str, cached: _Verified) -> AccessClaims:
        try:
            if self._keys.verification_key(cached.kid) is not cached.key:
                raise InvalidToken("The token was signed with an unknown key.")
            self._validate_exp(cached.payload)
            self._validate_nbf(cached.payload)
            self._validate_iat(cached.payload)
        except (InvalidToken, TokenExpired):
            self._verified.discard(token)
            raise
        return cached.claims

    def decode_refresh(self, token: str) -> RefreshClaims:
        """Verify a refresh token; raises ``InvalidToken`` or ``TokenExpired``."""
        claims, _, _ = self._verify(token, REFRESH_TOKEN_TYPE)
        return RefreshClaims(
            sub=claims["sub"],
            sid=claims["sid"],
            jti=claims["jti"],
            iat=claims["iat"],
            exp=claims["exp"],
        )

    def _sign(self, claims: dict[str, Any], token_type: str) -> str:
        signer = self._keys.signer
        headers: dict[str, Any] = {"typ": token_type}
        if signer.kid is not None:
            headers["kid"] = signer.kid
        return jwt.encode(claims, signer.key, algorithm=self._keys.algorithm, headers=headers)

    def _verify(self, token: str, token_type: str) -> tuple[dict[str, Any], str | None, Any]:
        """The verified claims of ``token``, the ``kid`` it names and the key that verified it."""
        _check_compact(token)
        # With a single key the header need not be read before verifying; parsing
        # it twice is a measurable share of every request.
        key = self._keys.sole_verification_key
        if key is None:
            key = self._keys.verification_key(unverified_header(token).get("kid"))
        try:
            decoded = jwt.decode_complete(
                token, key, algorithms=[self._keys.algorithm], options=_NO_CLAIM_CHECKS
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken() from exc
        header = decoded["header"]
        kid = header.get("kid")
        if self._keys.verification_key(kid) is not key:
            raise InvalidToken("The token was signed with an unknown key.")
        if _media_type(header.get("typ")) != _media_type(token_type) or "crit" in header:
            raise InvalidToken("The token is not of the expected type.")
        claims: dict[str, Any] = decoded["payload"]
        self._validate_iss(claims)
        self._validate_exp(claims)
        self._validate_nbf(claims)
        self._validate_iat(claims)
        for name in ("sub", "sid", "jti"):
            _string(claims, name)
        return claims, kid, key

    def _validate_iss(self, claims: dict[str, Any]) -> None:
        if claims.get("iss") != self._issuer:
            raise InvalidToken("The token was issued by someone else.")

    def _validate_aud(self, claims: dict[str, Any]) -> None:
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._audience not in audiences:
            raise InvalidToken("The token is meant for another audience.")

    def _validate_exp(self, claims: dict[str, Any]) -> None:
        if self._clock() >= _integer(claims, "exp") + self._leeway:
            raise TokenExpired()

    def _validate_nbf(self, claims: dict[str, Any]) -> None:
        if "nbf" in claims and self._clock() + self._leeway < _integer(claims, "nbf"):
            raise InvalidToken("The token is not valid yet.")

    def _validate_iat(self, claims: dict[str, Any]) -> None:
        if _integer(claims, "iat") > self._clock() + self._leeway:
            raise InvalidToken("The token is not valid yet.")


def _media_type(typ: object) -> str | None:
    """``typ`` as a full, lower-case media type: RFC 7515 §4.1.9 lets producers drop the
    ``application/`` prefix and media types are case-insensitive, so ``at+jwt`` and
    ``application/at+jwt`` (which RFC 9068 §4 resource servers must accept) are one."""
    if not isinstance(typ, str):
        return None
    typ = typ.lower()
    return typ if "/" in typ else f"application/{typ}"
