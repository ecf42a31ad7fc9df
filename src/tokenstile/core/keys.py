"""The key ring: which key signs, which keys verify, and what is published as JWKS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenstile.errors import ConfigurationError, InvalidToken

MIN_SECRET_BYTES = 32
SUPPORTED_ALGORITHMS = ("HS256",)


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    key: Any
    """What PyJWT signs with: bytes for HMAC, a private key object otherwise."""


class KeyRing:
    """Signing and verification keys for one pinned algorithm."""

    def __init__(
        self, algorithm: str, signer: SigningKey, verifiers: dict[str | None, Any]
    ) -> None:
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(f"unsupported algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.signer = signer
        self._verifiers = verifiers

    @classmethod
    def symmetric(cls, secret: bytes) -> KeyRing:
        """An HS256 ring; raises ``ConfigurationError`` for a secret under 32 bytes."""
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes long (RFC 7518 §3.2)"
            )
        return cls("HS256", SigningKey(kid=None, key=secret), {None: secret})

    @property
    def sole_verification_key(self) -> Any | None:
        """The only key that verifies anything, or ``None`` when a ``kid`` must choose."""
        if len(self._verifiers) == 1:
            return next(iter(self._verifiers.values()))
        return None

    def verification_key(self, kid: str | None) -> Any:
        """The key that verifies a token with this ``kid``; ``InvalidToken`` if unknown."""
        try:
            return self._verifiers[kid]
        except (KeyError, TypeError):
            raise InvalidToken("The token was signed with an unknown key.") from None

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Public keys as an RFC 7517 key set; empty for a symmetric ring."""
        return {"keys": []}
