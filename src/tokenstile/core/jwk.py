"""Asymmetric keys as JSON Web Keys: generation, RFC 7517/7518/8037 form, RFC 7638 ids.

Built on ``cryptography`` alone, so the codec stays the only module that imports the
JWT library; the base64url helpers here read and write key members, never tokens, which
only the codec reads. Each supported algorithm has exactly one key type and curve:
RS256 — RSA of at least 2048 bits; ES256 — EC P-256; EdDSA — OKP Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tokenstile.errors import ConfigurationError

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

RSA_KEY_BITS = 2048
"""Size of generated RSA keys; RFC 7518 §3.3 requires at least this much."""

_KEY_TYPE = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}
_CURVE = {"ES256": "P-256", "EdDSA": "Ed25519"}
_P256_BYTES = 32
_ED25519_BYTES = 32
_RSA_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")
_PRIVATE_MEMBERS = frozenset({*_RSA_PRIVATE_MEMBERS, "oth", "k"})
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def generate_private_key(algorithm: str) -> PrivateKey:
    """A new private key for ``algorithm`` (RS256, ES256 or EdDSA)."""
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigurationError(f"no asymmetric keys for algorithm {algorithm!r}")


def public_members(key: PublicKey) -> dict[str, str]:
    """The members that define a public key: ``kty`` and ``n``/``e`` or ``crv``/``x``[/``y``]."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _encode_int(numbers.n), "e": _encode_int(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _encode_int(point.x, _P256_BYTES),
            "y": _encode_int(point.y, _P256_BYTES),
        }
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    raise TypeError(f"not a supported public key: {type(key).__name__}")


def private_members(key: PrivateKey) -> dict[str, str]:
    """The public members of ``key`` plus its private ones (``d``, and RSA's CRT values)."""
    members = public_members(key.public_key())
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        values = (numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp)
        members.update(zip(_RSA_PRIVATE_MEMBERS, map(_encode_int, values), strict=True))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        members["d"] = _encode_int(key.private_numbers().private_value, _P256_BYTES)
    else:
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        members["d"] = _b64url(raw)
    return members


def thumbprint(key: PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url): a deterministic key id."""
    canonical = json.dumps(public_members(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def without_private_part(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``jwk`` without its private members (``d``, RSA's CRT values, ``k``)."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}


def load_public_key(jwk: Mapping[str, Any], algorithm: str) -> PublicKey:
    """The public key a JWK describes; ``ConfigurationError`` unless it suits ``algorithm``."""
    _check_type(jwk, algorithm)
    if algorithm == "RS256":
        try:
            key = rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
        except ValueError:
            raise ConfigurationError("an RSA key's n or e is invalid") from None
        if key.key_size < RSA_KEY_BITS:
            raise ConfigurationError(
                f"an RSA key of {key.key_size} bits is too short; RS256 needs {RSA_KEY_BITS}"
            )
        return key
    if algorithm == "ES256":
        x = _int(jwk, "x", _P256_BYTES)
        y = _int(jwk, "y", _P256_BYTES)
        try:
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise ConfigurationError("an EC key's point is not on the P-256 curve") from None
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(_bytes(jwk, "x", _ED25519_BYTES))
    except ValueError:
        raise ConfigurationError("an Ed25519 key's x is not a valid public key") from None


def load_private_key(jwk: Mapping[str, Any], algorithm: str) -> PrivateKey:
    """The private key a JWK holds; ``ConfigurationError`` if absent, malformed or
    not matching the JWK's own public members."""
    public = load_public_key(jwk, algorithm)
    if "d" not in jwk:
        raise ConfigurationError("the signing key has no private part ('d')")
    try:
        key = _private_key(jwk, algorithm, public)
    except ValueError:
        raise ConfigurationError("a key's private part is malformed") from None
    if public_members(key.public_key()) != public_members(public):
        raise ConfigurationError("a key's private part does not match its public part")
    return key


def _private_key(jwk: Mapping[str, Any], algorithm: str, public: PublicKey) -> PrivateKey:
    if isinstance(public, rsa.RSAPublicKey):
        if "oth" in jwk:
            raise ConfigurationError("multi-prime RSA keys ('oth') are not supported")
        numbers = public.public_numbers()
        d = _int(jwk, "d")
        if all(name in jwk for name in _RSA_PRIVATE_MEMBERS):
            p, q, dp, dq, qi = (_int(jwk, name) for name in _RSA_PRIVATE_MEMBERS[1:])
        else:  # RFC 7518 §6.3.2: the CRT members may be left out
            p, q = rsa.rsa_recover_prime_factors(numbers.n, numbers.e, d)
            dp, dq, qi = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q)
        return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, numbers).private_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ec.derive_private_key(_int(jwk, "d", _P256_BYTES), ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.from_private_bytes(_bytes(jwk, "d", _ED25519_BYTES))


def _check_type(jwk: Mapping[str, Any], algorithm: str) -> None:
    if algorithm not in _KEY_TYPE:
        raise ConfigurationError(f"no asymmetric keys for algorithm {algorithm!r}")
    if jwk.get("alg", algorithm) != algorithm:
        raise ConfigurationError(f"a key is for {jwk.get('alg')}, but ALGORITHM is {algorithm}")
    if jwk.get("use", "sig") != "sig":
        raise ConfigurationError(f"a key has use {jwk.get('use')!r}; signing keys need 'sig'")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty != _KEY_TYPE[algorithm] or crv != _CURVE.get(algorithm, crv):
        found = f"{kty}/{crv}" if crv is not None else f"{kty}"
        wanted = "/".join(filter(None, (_KEY_TYPE[algorithm], _CURVE.get(algorithm))))
        raise ConfigurationError(f"a {found} key cannot sign {algorithm}; it needs {wanted}")


def _bytes(jwk: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    text = jwk.get(name)
    if not isinstance(text, str) or not text or not _BASE64URL.fullmatch(text):
        raise ConfigurationError(f"a key's {name!r} is missing or not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ConfigurationError(f"a key's {name!r} is not base64url") from None
    if length is not None and len(raw) != length:
        raise ConfigurationError(f"a key's {name!r} must be {length} bytes long")
    return raw


def _int(jwk: Mapping[str, Any], name: str, length: int | None = None) -> int:
    return int.from_bytes(_bytes(jwk, name, length), "big")


def _encode_int(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(size, "big"))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
