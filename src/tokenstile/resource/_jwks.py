"""A remote issuer's public keys: fetched over HTTP, cached, refetched sparingly.

The cache answers with a verify-only :class:`~tokenstile.core.keys.KeyRing` and fetches
in three cases, one fetch at a time however many requests wait:

- there are no keys yet, or they are older than ``cache_ttl``: the keys must be renewed,
  and a failed attempt is retried at most once per ``retry_interval`` — meanwhile the
  answer is :class:`~tokenstile.errors.StoreUnavailable` (fail closed);
- a token names a ``kid`` the keys lack (the issuer may have rotated): the keys are
  refetched at most once per ``min_refetch_interval``, so tokens with made-up kids cannot
  make a resource server hammer the issuer.

Keys of another algorithm or type than the pinned one, symmetric (``oct``) keys among
them, are left out of the ring: they could never verify a token here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from tokenstile.core import jwk
from tokenstile.core.clock import Clock, system_clock
from tokenstile.core.keys import ASYMMETRIC_ALGORITHMS, KeyRing
from tokenstile.errors import ConfigurationError, StoreUnavailable

MAX_JWKS_BYTES = 256 * 1024
"""A key set larger than this is refused unread."""

logger = logging.getLogger("tokenstile.resource")

_UNAVAILABLE = "The token issuer's signing keys cannot be fetched; try again shortly."


class JwksCache:
    """The keys published at ``url`` for one pinned asymmetric ``algorithm``.

    ``clock`` judges keys' own expiry; fetch intervals are measured on a monotonic clock.
    """

    def __init__(
        self,
        url: str,
        algorithm: str,
        *,
        http_client: httpx.AsyncClient,
        cache_ttl: float,
        min_refetch_interval: float,
        retry_interval: float,
        clock: Clock = system_clock,
    ) -> None:
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigurationError(
                f"a remote issuer's tokens must use one of {', '.join(ASYMMETRIC_ALGORITHMS)}; "
                f"{algorithm!r} keys are never published"
            )
        try:
            scheme = httpx.URL(url).scheme
        except httpx.InvalidURL as exc:
            raise ConfigurationError(f"the JWKS URL {url!r} is invalid: {exc}") from None
        if scheme not in ("https", "http"):
            raise ConfigurationError(f"the JWKS URL {url!r} must be an https:// URL")
        self.url = url
        self.algorithm = algorithm
        self._http = http_client
        self._cache_ttl = cache_ttl
        self._min_refetch_interval = min_refetch_interval
        self._retry_interval = retry_interval
        self._clock = clock
        self._ring: KeyRing | None = None
        self._kids: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")
        """When the keys in the ring were fetched (monotonic seconds)."""
        self._attempted_at = float("-inf")
        """When the last fetch began, whether it succeeded or not."""
        self._failed = False
        self._lock = asyncio.Lock()

    async def keys(self) -> KeyRing:
        """The current keys, renewed first if missing or older than ``cache_ttl``.

        Raises :class:`~tokenstile.errors.StoreUnavailable` when they must be renewed and
        cannot be.
        """
        ring = self._fresh_ring()
        if ring is not None:
            return ring
        async with self._lock:
            ring = self._fresh_ring()  # renewed while this request waited
            if ring is not None:
                return ring
            if self._failed and time.monotonic() - self._attempted_at < self._retry_interval:
                raise StoreUnavailable(_UNAVAILABLE)
            return await self._fetch()

    async def refetch_for(self, kid: str) -> KeyRing | None:
        """Keys that know ``kid``, fetched anew if allowed; ``None`` if there are none.

        Fetches only when the last fetch began ``min_refetch_interval`` or more ago.
        Raises :class:`~tokenstile.errors.StoreUnavailable` if that fetch fails.
        """
        async with self._lock:
            if kid not in self._kids:
                if time.monotonic() - self._attempted_at < self._min_refetch_interval:
                    return None
                await self._fetch()
            return self._ring if kid in self._kids else None

    def knows(self, kid: str) -> bool:
        """Whether the cached keys include ``kid``."""
        return kid in self._kids

    def _fresh_ring(self) -> KeyRing | None:
        if self._ring is not None and time.monotonic() - self._fetched_at < self._cache_ttl:
            return self._ring
        return None

    async def _fetch(self) -> KeyRing:
        started = time.monotonic()
        self._attempted_at = started
        try:
            jwks = await self._download()
            ring = KeyRing.verify_only(
                self.algorithm, _usable(jwks, self.algorithm), clock=self._clock
            )
        except (httpx.HTTPError, ConfigurationError, ValueError) as exc:
            self._failed = True
            logger.warning("cannot use the key set at %s: %s", self.url, _reason(exc))
            raise StoreUnavailable(_UNAVAILABLE) from exc
        self._failed = False
        self._ring = ring
        self._kids = frozenset(key["kid"] for key in ring.jwks()["keys"])
        self._fetched_at = started
        return ring

    async def _download(self) -> Any:
        async with self._http.stream(
            "GET", self.url, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(body)


def _usable(jwks: Any, algorithm: str) -> dict[str, list[Mapping[str, Any]]]:
    """The entries of ``jwks`` that can verify ``algorithm``; ``ValueError`` if none."""
    entries = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the response is not a JWK set (no 'keys' list)")
    usable: list[Mapping[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            jwk.load_public_key(entry, algorithm)
        except ConfigurationError as exc:
            logger.info("leaving out key %r: %s", entry.get("kid"), exc.detail)
            continue
        usable.append(jwk.without_private_part(entry))
    if not usable:
        raise ValueError(f"the key set has no {algorithm} signing key")
    return {"keys": usable}


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConfigurationError):
        return exc.detail
    return str(exc) or type(exc).__name__
