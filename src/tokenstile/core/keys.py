"""The key ring: which key signs, which keys verify, and what is published as JWKS.

Under HS256 the ring holds one secret, tokens carry no ``kid`` and nothing is published.
Under RS256, ES256 and EdDSA it is built from a JWK set (RFC 7517) with private parts:

- the **signer** is the first key without ``"tokenstile:not_after"``; it needs its
  private part, every other key may be public only;
- every key **verifies** tokens whose header names its ``kid`` until its
  ``"tokenstile:not_after"`` (POSIX seconds) has passed: by then no token it signed can
  still be valid, so it leaves the ring, and the published JWKS, by itself;
- a ``kid`` given in the set is kept; a key without one gets its RFC 7638 thumbprint.

A **verify-only** ring (:meth:`KeyRing.verify_only`) is built from a public set, such as
another server's published JWKS: it has no signer, and every key verifies.

A ring may be given a ``reload`` function that returns the set anew when its source has
changed (or ``None``). The ring calls it at most once per ``reload_interval`` seconds, when
a token names an unknown ``kid``, when it signs and when the JWKS is asked for, so running
processes adopt a rotation made elsewhere without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenstile.core import jwk
from tokenstile.core.clock import Clock, system_clock
from tokenstile.errors import ConfigurationError, InvalidToken

MIN_SECRET_BYTES = 32
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256", "EdDSA")
SUPPORTED_ALGORITHMS = ("HS256", *ASYMMETRIC_ALGORITHMS)
RELOAD_INTERVAL = 30.0
"""Seconds between two looks at a ring's source for a rotation made elsewhere."""

CREATED_AT = "tokenstile:created_at"
RETIRED_AT = "tokenstile:retired_at"
NOT_AFTER = "tokenstile:not_after"
"""JWK members (RFC 7517 §4 collision-resistant names) that are never published."""

_PUBLISHED_ORDER = ("kty", "kid", "use", "alg", "n", "e", "crv", "x", "y")

JwkSet = Mapping[str, Any]
Reload = Callable[[], JwkSet | None]

logger = logging.getLogger("tokenstile.keys")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    key: Any
    """What PyJWT signs with: bytes for HMAC, a private key object otherwise."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that verifies tokens naming ``kid`` until ``not_after`` (``None``: no end)."""

    kid: str | None
    key: Any
    """What PyJWT verifies with: bytes for HMAC, a public key object otherwise."""
    public_jwk: Mapping[str, str] | None
    """What the JWKS publishes; ``None`` for a secret, which is never published."""
    not_after: float | None = None


@dataclass(frozen=True, slots=True)
class _Keys:
    signer: SigningKey | None
    verifiers: Mapping[str | None, VerificationKey]


class KeyRing:
    """Signing and verification keys for one pinned algorithm."""

    def __init__(
        self,
        algorithm: str,
        signer: SigningKey | None,
        verifiers: Iterable[VerificationKey],
        *,
        clock: Clock = system_clock,
        reload: Reload | None = None,
        reload_interval: float = RELOAD_INTERVAL,
    ) -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(f"unsupported algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._keys = _Keys(signer, {v.kid: v for v in verifiers})
        self._clock = clock
        self._reload = reload
        self._reload_interval = reload_interval
        self._checked_at = clock()
        self.generation = 0
        """Counts the reloads that changed the keys, so caches of verified tokens can tell."""

    @classmethod
    def symmetric(cls, secret: bytes) -> KeyRing:
        """An HS256 ring; raises ``ConfigurationError`` for a secret under 32 bytes."""
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes long (RFC 7518 §3.2)"
            )
        return cls(
            "HS256",
            SigningKey(kid=None, key=secret),
            [VerificationKey(kid=None, key=secret, public_jwk=None)],
        )

    @classmethod
    def from_jwks(
        cls,
        algorithm: str,
        jwks: JwkSet,
        *,
        clock: Clock = system_clock,
        reload: Reload | None = None,
        reload_interval: float = RELOAD_INTERVAL,
    ) -> KeyRing:
        """An asymmetric ring from a JWK set with private parts (see the module docstring).

        Keys whose ``not_after`` has passed are left out. Raises ``ConfigurationError``
        for an algorithm other than RS256/ES256/EdDSA, a key that does not suit it, a
        duplicate ``kid``, or a set with no key to sign with.
        """
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(f"{algorithm} does not use a JWK set")
        keys = _parse(algorithm, jwks, clock(), known={})
        return cls(
            algorithm,
            keys.signer,
            keys.verifiers.values(),
            clock=clock,
            reload=reload,
            reload_interval=reload_interval,
        )

    @classmethod
    def verify_only(cls, algorithm: str, jwks: JwkSet, *, clock: Clock = system_clock) -> KeyRing:
        """A ring that verifies with every key of a public JWK set and signs nothing.

        For a JWKS fetched from another server: private parts are neither needed nor
        read, and ``kid`` rules are those of :meth:`from_jwks`. Raises
        ``ConfigurationError`` for an algorithm other than RS256/ES256/EdDSA (a secret is
        never published), an empty set, a key that does not suit the algorithm, or a
        duplicate ``kid``.
        """
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(f"{algorithm} does not use a JWK set")
        keys = _parse(algorithm, jwks, clock(), known={}, signing=False)
        return cls(algorithm, None, keys.verifiers.values(), clock=clock)

    @property
    def signer(self) -> SigningKey:
        """The key new tokens are signed with; ``ConfigurationError`` for a verify-only ring."""
        self._reload_if_due()
        if self._keys.signer is None:
            raise ConfigurationError("this key ring only verifies tokens; it cannot sign")
        return self._keys.signer

    @property
    def sole_verification_key(self) -> Any | None:
        """The only key that verifies anything, or ``None`` when a ``kid`` must choose.

        Only a key without ``kid`` (the HS256 secret) is ever sole: asymmetric tokens
        always name their key, and an unknown name may mean a rotation to pick up.
        """
        verifiers = self._keys.verifiers
        if len(verifiers) == 1 and None in verifiers:
            return verifiers[None].key
        return None

    def verification_key(self, kid: str | None) -> Any:
        """The key that verifies a token with this ``kid``; ``InvalidToken`` if unknown
        or retired."""
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("The token was signed with an unknown key.")
        found = self._keys.verifiers.get(kid)
        if found is None and self._reload_if_due():
            found = self._keys.verifiers.get(kid)
        if found is None or not _live(found, self._clock()):
            raise InvalidToken("The token was signed with an unknown key.")
        return found.key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public keys as an RFC 7517 key set: exactly the keys that may still verify a
        token, with no private part; empty for a symmetric ring."""
        self._reload_if_due()
        now = self._clock()
        return {
            "keys": [
                dict(v.public_jwk)
                for v in self._keys.verifiers.values()
                if v.public_jwk is not None and _live(v, now)
            ]
        }

    def _reload_if_due(self) -> bool:
        """Re-read the source if it is time to look; whether the keys changed."""
        if self._reload is None:
            return False
        now = self._clock()
        if now - self._checked_at < self._reload_interval:
            return False
        self._checked_at = now
        try:
            jwks = self._reload()
            if jwks is None:
                return False
            # Keys already known keep their objects, so a reload between the codec's
            # two lookups of one kid cannot make them differ.
            self._keys = _parse(self.algorithm, jwks, now, known=self._keys.verifiers)
        except (ConfigurationError, OSError, ValueError) as exc:
            logger.warning("keeping the current signing keys; reloading them failed: %s", exc)
            return False
        self.generation += 1
        signer = self._keys.signer
        logger.info("signing keys reloaded; signing with %s", signer and signer.kid)
        return True


def _live(key: VerificationKey, now: float) -> bool:
    return key.not_after is None or now < key.not_after


def _parse(
    algorithm: str,
    jwks: JwkSet,
    now: float,
    *,
    known: Mapping[str | None, VerificationKey],
    signing: bool = True,
) -> _Keys:
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError("the key set has no keys")
    signer: SigningKey | None = None
    verifiers: dict[str | None, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ConfigurationError("every entry of the key set must be a JSON object")
        public = jwk.load_public_key(entry, algorithm)
        kid = entry.get("kid", jwk.thumbprint(public))
        if not isinstance(kid, str) or not kid:
            raise ConfigurationError("a key's kid must be a non-empty string")
        if kid in verifiers:
            raise ConfigurationError(f"two keys have the kid {kid!r}")
        not_after = _not_after(entry, kid)
        if signing and signer is None and not_after is None:
            signer = SigningKey(kid, jwk.load_private_key(entry, algorithm))
        elif not_after is not None and now >= not_after:
            continue  # retired: the last token it signed has expired
        published = _ordered(
            {"kid": kid, "use": "sig", "alg": algorithm, **jwk.public_members(public)}
        )
        previous = known.get(kid)
        if previous is not None and previous.public_jwk == published:
            public = previous.key
        verifiers[kid] = VerificationKey(kid, public, published, not_after)
    if signing and signer is None:
        raise ConfigurationError(
            f"the key set has no key to sign with: every key has a {NOT_AFTER!r}"
        )
    return _Keys(signer, verifiers)


def _not_after(entry: Mapping[str, Any], kid: str) -> float | None:
    value = entry.get(NOT_AFTER)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigurationError(f"key {kid}: {NOT_AFTER!r} must be POSIX seconds")
    return float(value)


def _ordered(members: Mapping[str, str]) -> dict[str, str]:
    return {name: members[name] for name in _PUBLISHED_ORDER if name in members}
