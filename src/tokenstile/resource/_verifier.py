"""Verifying a remote tokenstile's access tokens on a resource server."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

import httpx

from tokenstile.core.clock import Clock, system_clock
from tokenstile.core.codec import AccessClaims, TokenCodec, unverified_header
from tokenstile.core.keys import KeyRing
from tokenstile.errors import InvalidToken, TokenRevoked
from tokenstile.resource._jwks import JwksCache


class ActiveSessions(Protocol):
    """What revocation checks need of a session store shared with the issuer, such as
    :class:`~tokenstile.stores.redis.RedisSessionStore` on the issuer's URL and prefix."""

    async def is_active(self, sid: str, *, now: float) -> bool: ...


class RemoteVerifier:
    """Verifies access tokens issued by a tokenstile server that this process reaches
    only through its published keys (``GET /.well-known/jwks.json``).

    Checks are the issuer's own (:class:`~tokenstile.core.codec.TokenCodec`, RFC 8725):
    exactly one pinned asymmetric ``algorithm``, a known ``kid``, the signature, ``typ``
    ``at+jwt``, ``iss``, ``aud``, and ``exp``/``nbf``/``iat`` with ``leeway`` seconds.

    Keys are cached for ``cache_ttl`` seconds (the issuer's own ``max-age``). A token
    naming an unknown ``kid`` makes the verifier refetch them at most once per
    ``min_refetch_interval`` seconds, so a rotation on the issuer is picked up (within
    that interval) and made-up kids cost the issuer nothing. When the keys cannot be
    fetched and no fresh copy is cached, verification fails closed with
    :class:`~tokenstile.errors.StoreUnavailable`, and the fetch is retried at most once
    per ``retry_interval``.

    Logout: given ``sessions``, a store shared with the issuer, every token is also
    checked against it, so a token of an ended session is refused at once (one round
    trip per token). Without it, a resource server learns of a logout only when the
    access token expires (``ACCESS_TTL``); introspection (``POST /auth/introspect``) is
    the other way to ask. Close the verifier with :meth:`aclose` (or ``async with``);
    it leaves ``sessions`` and a given ``http_client`` open.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        algorithm: str,
        issuer: str,
        audience: str,
        leeway: float = 5.0,
        sessions: ActiveSessions | None = None,
        cache_ttl: float = 300.0,
        min_refetch_interval: float = 30.0,
        retry_interval: float = 1.0,
        timeout: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock = system_clock,
    ) -> None:
        """Raises :class:`~tokenstile.errors.ConfigurationError` for an ``algorithm``
        other than RS256, ES256 or EdDSA (HS256 keys are never published) or a
        ``jwks_url`` that is not an http(s) URL; use https outside local development."""
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._jwks = JwksCache(
            jwks_url,
            algorithm,
            http_client=self._http,
            cache_ttl=cache_ttl,
            min_refetch_interval=min_refetch_interval,
            retry_interval=retry_interval,
            clock=clock,
        )
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._sessions = sessions
        self._clock = clock
        self._codec: tuple[KeyRing, TokenCodec] | None = None

    @property
    def algorithm(self) -> str:
        """The one algorithm tokens may be signed with."""
        return self._jwks.algorithm

    async def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token.

        Raises :class:`~tokenstile.errors.InvalidToken` (forged, malformed, unknown key,
        wrong type, issuer or audience), ``TokenExpired``, ``TokenRevoked`` (only with
        ``sessions``), or ``StoreUnavailable`` when the keys or the session store cannot
        be reached.
        """
        codec = self._codec_for(await self._jwks.keys())
        try:
            claims = codec.decode_access(token)
        except InvalidToken:
            kid = _unverified_kid(token)
            if kid is None or self._jwks.knows(kid):
                raise
            ring = await self._jwks.refetch_for(kid)
            if ring is None:
                raise
            claims = self._codec_for(ring).decode_access(token)
        if self._sessions is not None and not await self._sessions.is_active(
            claims.sid, now=self._clock()
        ):
            raise TokenRevoked()
        return claims

    async def aclose(self) -> None:
        """Close the HTTP client, unless it was given."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> RemoteVerifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _codec_for(self, ring: KeyRing) -> TokenCodec:
        if self._codec is None or self._codec[0] is not ring:
            codec = TokenCodec(
                ring,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                clock=self._clock,
            )
            self._codec = (ring, codec)
        return self._codec[1]


def _unverified_kid(token: str) -> str | None:
    """The ``kid`` a compact JWS names, read only to decide whether to refetch keys;
    ``None`` if the header cannot be read or names none."""
    try:
        kid = unverified_header(token).get("kid")
    except InvalidToken:
        return None
    return kid if isinstance(kid, str) and kid else None
