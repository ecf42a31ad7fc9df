"""A resource server trusting a remote tokenstile through its JWKS (issue #3, item 6).

Every issuer here is a live tokenstile server with keys generated into its own DATA_DIR;
tokens come from logging in over HTTP, and keys from its real ``/.well-known/jwks.json``.
"""

# No `from __future__ import annotations`: FastAPI resolves the resource app's route
# annotations, which name a dependency local to its factory.

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, FastAPI, Request, Response

import tests.servers
import tokenstile.resource
from tests.accounts import bearer, signed_in
from tests.api.conftest import FAST_HASHING, make_settings
from tests.servers import LiveServer, free_port
from tokenstile.api import AccessClaims, create_app, install_error_handlers
from tokenstile.core.codec import TokenCodec
from tokenstile.core.keys import KeyRing
from tokenstile.errors import (
    ConfigurationError,
    InvalidToken,
    StoreUnavailable,
    TokenExpired,
    TokenRevoked,
)
from tokenstile.keyfiles import rotate_keys
from tokenstile.resource import RemoteUser, RemoteVerifier
from tokenstile.stores.redis import RedisSessionStore

ALGORITHMS = ["ES256", "RS256", "EdDSA"]
JWKS_PATH = "/.well-known/jwks.json"


class Issuer:
    """A live tokenstile server and the requests its JWKS route has answered."""

    def __init__(self, server: LiveServer, settings: dict[str, Any], hits: list[float]) -> None:
        self.server = server
        self.settings = settings
        self.jwks_hits = hits
        self.jwks_url = f"{server.base_url}{JWKS_PATH}"

    def login(self) -> dict[str, Any]:
        return signed_in(self.server.client)


StartIssuer = Callable[..., Issuer]


@pytest.fixture
def issuer_servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def start_issuer(tmp_path: Path, issuer_servers: list[LiveServer]) -> StartIssuer:
    """Start a tokenstile server with keys of its own; ``name`` picks its DATA_DIR."""

    def start(algorithm: str = "ES256", *, name: str = "issuer", **overrides: Any) -> Issuer:
        settings = {
            "data_dir": str(tmp_path / name),
            "algorithm": algorithm,
            "rate_limit_enabled": "false",
            **FAST_HASHING,
            **overrides,
        }
        app = create_app(make_settings(settings))
        hits: list[float] = []

        @app.middleware("http")
        async def count_jwks(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path == JWKS_PATH:
                hits.append(time.monotonic())
            return await call_next(request)

        server = LiveServer(app).start()
        issuer_servers.append(server)
        return Issuer(server, settings, hits)

    return start


@pytest.fixture
def issuer(start_issuer: StartIssuer) -> Issuer:
    return start_issuer("ES256")


@contextlib.asynccontextmanager
async def verifier_for(server: Issuer, /, **options: Any) -> AsyncIterator[RemoteVerifier]:
    """A verifier of ``server``'s tokens with its settings, unless ``options`` say otherwise."""
    options = {
        "algorithm": server.settings["algorithm"],
        "issuer": "tokenstile",
        "audience": "tokenstile",
        **options,
    }
    async with RemoteVerifier(server.jwks_url, **options) as verifier:
        yield verifier


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A compact JWS built by hand: HMAC-SHA256 with ``secret``, or unsigned."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


def with_made_up_kid(token: str) -> str:
    """The token's claims, signed by a key nobody published, under a random kid."""
    header, claims = unverified(token)
    return jwt.encode(
        claims,
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={**header, "kid": secrets.token_urlsafe(16)},
    )


def test_the_public_names_are_listed() -> None:
    public = {name for name in vars(tokenstile.resource) if not name.startswith("_")}
    assert public == set(tokenstile.resource.__all__)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pyjwt_jwks_client_verifies_our_access_tokens_as_a_third_party_would(
    start_issuer: StartIssuer, algorithm: str
) -> None:
    issuer = start_issuer(algorithm)
    token = issuer.login()["access_token"]

    client = jwt.PyJWKClient(issuer.jwks_url)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, key, algorithms=[algorithm], audience="tokenstile", issuer="tokenstile"
    )

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == algorithm
    assert header["kid"] == key.key_id
    assert {"sub", "sid", "jti", "client_id", "exp", "iat"} <= claims.keys()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_a_valid_access_token_verifies(start_issuer: StartIssuer, algorithm: str) -> None:
    issuer = start_issuer(algorithm)
    tokens = issuer.login()
    _, expected = unverified(tokens["access_token"])

    async with verifier_for(issuer) as verifier:
        claims = await verifier.verify(tokens["access_token"])

    assert isinstance(claims, AccessClaims)
    assert (claims.sub, claims.sid, claims.jti) == (
        expected["sub"],
        expected["sid"],
        expected["jti"],
    )
    assert claims.username == expected["preferred_username"]


async def test_a_refresh_token_is_refused(issuer: Issuer) -> None:
    tokens = issuer.login()

    async with verifier_for(issuer) as verifier:
        with pytest.raises(InvalidToken, match="expected type"):
            await verifier.verify(tokens["refresh_token"])


async def test_a_token_for_another_audience_is_refused(issuer: Issuer) -> None:
    token = issuer.login()["access_token"]

    async with verifier_for(issuer, audience="orders") as verifier:
        with pytest.raises(InvalidToken, match="another audience"):
            await verifier.verify(token)


async def test_a_token_from_another_issuer_name_is_refused(issuer: Issuer) -> None:
    token = issuer.login()["access_token"]

    async with verifier_for(issuer, issuer="https://auth.example") as verifier:
        with pytest.raises(InvalidToken, match="issued by someone else"):
            await verifier.verify(token)


async def test_an_expired_token_is_refused(start_issuer: StartIssuer) -> None:
    issuer = start_issuer("ES256", access_ttl="2")
    token = issuer.login()["access_token"]
    expires = unverified(token)[1]["exp"]  # iat is whole seconds: a 2 s token lives 1-2 s

    async with verifier_for(issuer, leeway=0) as verifier:
        await verifier.verify(token)
        await asyncio.sleep(expires - time.time() + 0.05)
        with pytest.raises(TokenExpired):
            await verifier.verify(token)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_alg_none_and_hs256_signed_with_the_published_key_are_refused(
    start_issuer: StartIssuer, algorithm: str
) -> None:
    """RFC 8725 §2.1 and §3.1: the header's alg never chooses how a token is checked."""
    issuer = start_issuer(algorithm)
    header, claims = unverified(issuer.login()["access_token"])
    published = issuer.server.client.get(JWKS_PATH).content
    (public_jwk,) = json.loads(published)["keys"]
    forged = [
        forge({**header, "alg": "none"}, claims, None),
        forge({**header, "alg": "HS256"}, claims, published),
        forge({**header, "alg": "HS256"}, claims, json.dumps(public_jwk).encode()),
        forge(
            {**header, "alg": "HS256"}, claims, public_jwk.get("x", public_jwk.get("n")).encode()
        ),
    ]

    async with verifier_for(issuer) as verifier:
        for token in forged:
            with pytest.raises(InvalidToken):
                await verifier.verify(token)


async def test_a_token_signed_by_another_tokenstile_is_refused_after_one_refetch(
    start_issuer: StartIssuer,
) -> None:
    ours = start_issuer("ES256", name="ours")
    theirs = start_issuer("ES256", name="theirs")
    foreign = theirs.login()["access_token"]

    async with verifier_for(ours, min_refetch_interval=0.5) as verifier:
        await verifier.verify(ours.login()["access_token"])
        assert len(ours.jwks_hits) == 1
        await asyncio.sleep(0.6)

        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(foreign)
        assert len(ours.jwks_hits) == 2  # looked once for a rotation, then refused
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(foreign)
        assert len(ours.jwks_hits) == 2


async def test_made_up_kids_fetch_the_keys_at_most_once_per_interval(issuer: Issuer) -> None:
    token = issuer.login()["access_token"]
    interval = 1.0

    async with verifier_for(issuer, min_refetch_interval=interval) as verifier:
        await verifier.verify(token)
        fetches = [len(issuer.jwks_hits)]
        for _ in range(2):
            flood = [with_made_up_kid(token) for _ in range(30)]
            outcomes = await asyncio.gather(
                *(verifier.verify(forged) for forged in flood), return_exceptions=True
            )
            for forged in flood[:10]:  # one after another, too
                with pytest.raises(InvalidToken):
                    await verifier.verify(forged)
            assert all(isinstance(outcome, InvalidToken) for outcome in outcomes), outcomes
            fetches.append(len(issuer.jwks_hits))
            await asyncio.sleep(interval + 0.1)

        # The first flood came within the interval of the first fetch: nothing was fetched.
        # After the interval, a whole flood, parallel and serial, cost exactly one fetch.
        flood = [with_made_up_kid(token) for _ in range(30)]
        await asyncio.gather(*(verifier.verify(forged) for forged in flood), return_exceptions=True)
        fetches.append(len(issuer.jwks_hits))
        assert await verifier.verify(token)

    assert fetches == [1, 1, 2, 3]
    assert len(issuer.jwks_hits) == 3


async def test_a_key_rotation_on_the_issuer_is_picked_up_by_refetching(
    start_issuer: StartIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = start_issuer("EdDSA")
    before = issuer.login()["access_token"]

    async with verifier_for(issuer, min_refetch_interval=0.5) as verifier:
        await verifier.verify(before)
        rotation = rotate_keys(
            Path(issuer.settings["data_dir"]), "EdDSA", now=time.time(), retain_for=3600
        )
        # Restarted on the same address, as a deployment would be, to read the new key.
        issuer.server.stop()
        monkeypatch.setattr(tests.servers, "free_port", lambda: issuer.server.port)
        restarted = start_issuer("EdDSA")
        after = restarted.login()["access_token"]
        assert jwt.get_unverified_header(after)["kid"] == rotation.signer
        await asyncio.sleep(0.6)

        claims = await verifier.verify(after)
        assert claims.sub == unverified(after)[1]["sub"]
        assert len(restarted.jwks_hits) == 1  # the one refetch for the new kid
        assert await verifier.verify(before)  # the retired key still verifies its tokens
        assert len(restarted.jwks_hits) == 1


@pytest.mark.redis
async def test_a_logout_on_the_issuer_is_immediate_with_the_shared_redis(
    start_issuer: StartIssuer, redis_url: str, redis_prefix: str
) -> None:
    issuer = start_issuer("ES256", redis_url=redis_url, redis_prefix=redis_prefix)
    tokens = issuer.login()
    sessions = RedisSessionStore.from_url(redis_url, prefix=redis_prefix)
    try:
        async with verifier_for(issuer, sessions=sessions) as verifier:
            assert await verifier.verify(tokens["access_token"])

            logout = issuer.server.client.post(
                "/auth/logout",
                headers=bearer(tokens["access_token"]),
                json={"refresh_token": tokens["refresh_token"]},
            )
            assert logout.status_code == 204, logout.text

            with pytest.raises(TokenRevoked):
                await verifier.verify(tokens["access_token"])
    finally:
        await sessions.aclose()


async def test_without_a_session_store_a_logout_reaches_the_resource_server_at_expiry(
    issuer: Issuer,
) -> None:
    """The documented limit: signature and claims alone cannot know of a logout."""
    tokens = issuer.login()
    logout = issuer.server.client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    assert logout.status_code == 204, logout.text

    async with verifier_for(issuer) as verifier:
        assert await verifier.verify(tokens["access_token"])


async def test_no_reachable_keys_fails_closed(issuer: Issuer, start_issuer: StartIssuer) -> None:
    token = issuer.login()["access_token"]
    symmetric = start_issuer("HS256", name="symmetric")
    unusable = [
        f"http://127.0.0.1:{free_port()}{JWKS_PATH}",  # nobody listens
        f"{issuer.server.base_url}/no-such-jwks.json",  # 404
        f"{issuer.server.base_url}/healthz",  # not a key set
        symmetric.jwks_url,  # an empty set: HS256 keys are never published
    ]
    for url in unusable:
        async with RemoteVerifier(
            url, algorithm="ES256", issuer="tokenstile", audience="tokenstile"
        ) as verifier:
            with pytest.raises(StoreUnavailable):
                await verifier.verify(token)


async def test_cached_keys_serve_while_fresh_then_an_unreachable_issuer_fails_closed(
    issuer: Issuer,
) -> None:
    token = issuer.login()["access_token"]

    async with verifier_for(issuer, cache_ttl=1.0, retry_interval=0.5) as verifier:
        await verifier.verify(token)
        issuer.server.stop()

        assert await verifier.verify(token)  # the cached keys are still fresh
        await asyncio.sleep(1.1)
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                await verifier.verify(token)


async def test_keys_of_another_algorithm_are_not_used(start_issuer: StartIssuer) -> None:
    issuer = start_issuer("EdDSA")
    token = issuer.login()["access_token"]

    async with verifier_for(issuer, algorithm="ES256") as verifier:
        with pytest.raises(StoreUnavailable):  # the set holds no ES256 key at all
            await verifier.verify(token)


def test_hs256_cannot_be_pinned_for_a_remote_issuer() -> None:
    with pytest.raises(ConfigurationError, match="never published"):
        RemoteVerifier(
            "http://127.0.0.1/.well-known/jwks.json",
            algorithm="HS256",
            issuer="tokenstile",
            audience="tokenstile",
        )


@pytest.mark.parametrize("url", ["file:///etc/jwks.json", "http://[::1", "jwks.json"])
def test_a_jwks_url_that_is_not_http_is_refused_at_once(url: str) -> None:
    with pytest.raises(ConfigurationError, match="JWKS URL"):
        RemoteVerifier(url, algorithm="ES256", issuer="tokenstile", audience="tokenstile")


def resource_app(verifier: RemoteVerifier) -> FastAPI:
    """A service of its own that trusts the issuer's tokens: one protected route."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with verifier:
            yield

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    current_user = RemoteUser(verifier)

    @app.get("/orders")
    async def orders(user: Annotated[AccessClaims, Depends(current_user)]) -> dict[str, str]:
        return {"owner": user.sub}

    return app


@pytest.fixture
def resource_servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.stop()


def test_a_resource_app_protects_its_routes_with_remote_user(
    issuer: Issuer, resource_servers: list[LiveServer]
) -> None:
    tokens = issuer.login()
    verifier = RemoteVerifier(
        issuer.jwks_url, algorithm="ES256", issuer="tokenstile", audience="tokenstile"
    )
    resource = LiveServer(resource_app(verifier)).start()
    resource_servers.append(resource)

    ok = resource.client.get("/orders", headers=bearer(tokens["access_token"]))
    missing = resource.client.get("/orders")
    refresh = resource.client.get("/orders", headers=bearer(tokens["refresh_token"]))
    garbage = resource.client.get("/orders", headers=bearer("not.a.token"))

    assert ok.status_code == 200, ok.text
    assert ok.json() == {"owner": unverified(tokens["access_token"])[1]["sub"]}
    assert missing.status_code == 401
    assert missing.json()["error"] == "invalid_token"
    assert missing.headers["www-authenticate"] == "Bearer"
    for refused in (refresh, garbage):
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_token"
        assert refused.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert resource.client.get("/openapi.json").json()["components"]["securitySchemes"] == {
        "tokenstile": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }


def test_a_resource_app_answers_503_while_the_issuers_keys_are_unreachable(
    issuer: Issuer, resource_servers: list[LiveServer]
) -> None:
    tokens = issuer.login()
    verifier = RemoteVerifier(
        f"http://127.0.0.1:{free_port()}{JWKS_PATH}",
        algorithm="ES256",
        issuer="tokenstile",
        audience="tokenstile",
    )
    resource = LiveServer(resource_app(verifier)).start()
    resource_servers.append(resource)

    answer = resource.client.get("/orders", headers=bearer(tokens["access_token"]))

    assert answer.status_code == 503
    assert answer.json()["error"] == "store_unavailable"
    assert answer.headers["retry-after"] == "1"


def test_a_verify_only_ring_from_a_published_jwks_verifies_and_cannot_sign(
    issuer: Issuer,
) -> None:
    """``KeyRing.verify_only``, the core piece the verifier builds on (public keys only)."""
    published = issuer.server.client.get(JWKS_PATH).json()
    token = issuer.login()["access_token"]
    ring = KeyRing.verify_only("ES256", published)
    codec = TokenCodec(ring, issuer="tokenstile", audience="tokenstile", leeway=5, clock=time.time)

    assert codec.decode_access(token).sub == unverified(token)[1]["sub"]
    with pytest.raises(ConfigurationError, match="only verifies"):
        _ = ring.signer
    with pytest.raises(ConfigurationError):
        KeyRing.verify_only("HS256", published)
    with pytest.raises(ConfigurationError):
        KeyRing.verify_only("RS256", published)  # an EC key cannot verify RS256
    with pytest.raises(ConfigurationError):
        KeyRing.verify_only("ES256", {"keys": []})
