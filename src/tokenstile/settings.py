"""Settings from ``TOKENSTILE_*`` environment variables or a ``.env`` file (SPEC §3).

Read only by the app factory and the command line; the core takes plain arguments.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokenstile.core.keys import SUPPORTED_ALGORITHMS
from tokenstile.core.ratelimit import parse_rate
from tokenstile.errors import ConfigurationError

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_DATABASE_DRIVERS = {
    "sqlite://": "sqlite+aiosqlite://",
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
}


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error must never print REDIS_URL's password
    # (or any other secret) back into a log.
    model_config = SettingsConfigDict(
        env_prefix="TOKENSTILE_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    secret_key: SecretStr | None = None
    algorithm: str = "HS256"
    keys_file: Path | None = None
    access_ttl: int = Field(900, gt=0)
    refresh_ttl: int = Field(604_800, gt=0)
    remember_me_ttl: int = Field(2_592_000, gt=0)
    session_max_age: int = Field(7_776_000, gt=0)
    refresh_grace: int = Field(10, ge=0)
    leeway: int = Field(5, ge=0)
    issuer: str = "tokenstile"
    audience: str = "tokenstile"
    data_dir: Path = Path(".tokenstile")
    database_url: str | None = None
    redis_url: SecretStr | None = None
    redis_cluster: bool = False
    redis_prefix: str = "ts:"
    store_timeout: float = Field(2.0, gt=0)
    allow_registration: bool = True
    allowed_origins: str | None = None
    cookie_secure: bool = True
    introspection_secret: SecretStr | None = None
    login_rate_limit: str = "5/minute"
    register_rate_limit: str = "10/minute"
    refresh_rate_limit: str = "600/minute"
    rate_limit_enabled: bool = True
    purge_interval: int = Field(600, gt=0)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65_536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    trusted_proxies: str | None = None
    max_body_bytes: int = Field(65_536, gt=0)
    body_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(1000, gt=0)
    public_url: str | None = None
    audit_log: str = "stderr"

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        for algorithm in SUPPORTED_ALGORITHMS:
            if value.lower() == algorithm.lower():
                return algorithm
        raise ValueError(f"must be one of {', '.join(SUPPORTED_ALGORITHMS)}")

    @field_validator("keys_file", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("trusted_proxies", "public_url", mode="before")
    @classmethod
    def _unset_when_blank(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("audit_log")
    @classmethod
    def _audit_log(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be stderr, off, or the path of a file to append to")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str | None) -> str | None:
        # Normalised for uvicorn, which silently ignores a network with host bits set
        # (10.0.0.1/8) and any entry that is not an address or a network.
        if value is None:
            return None
        proxies = []
        for entry in (part.strip() for part in value.split(",")):
            try:
                if "/" in entry:
                    proxies.append(str(ipaddress.ip_network(entry, strict=False)))
                else:
                    proxies.append(str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; list the proxies' addresses"
                ) from None
        return ",".join(proxies)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return parts.geturl().rstrip("/")

    @field_validator("login_rate_limit", "register_rate_limit", "refresh_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse_rate(value)
        except ConfigurationError as exc:
            raise ValueError(exc.detail) from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(_REDIS_SCHEMES):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _redis_cluster_url(self) -> Settings:
        # The messages name the problem, never the URL: it may carry a password.
        if not self.redis_cluster or self.redis_url is None:
            return self
        parts = urlsplit(self.redis_url.get_secret_value())
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("REDIS_CLUSTER needs a redis:// or rediss:// REDIS_URL of one node")
        databases = {parts.path.strip("/") or "0"}
        databases.update(parse_qs(parts.query).get("db", []))
        if databases != {"0"}:
            raise ValueError("a Redis Cluster has only database 0; drop the number from REDIS_URL")
        return self

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for plain, driver in _DATABASE_DRIVERS.items():
            if value.startswith(plain):
                return driver + value[len(plain) :]
        if not value.startswith(tuple(_DATABASE_DRIVERS.values())):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @property
    def resolved_database_url(self) -> str:
        """``DATABASE_URL``, or the embedded SQLite file in ``DATA_DIR``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tokenstile.db').resolve()}"

    @property
    def resolved_issuer(self) -> str:
        """``ISSUER``; when only ``PUBLIC_URL`` is set, that URL (RFC 8414 §2)."""
        if self.public_url is not None and "issuer" not in self.model_fields_set:
            return self.public_url
        return self.issuer

    @property
    def external_url(self) -> str:
        """The base of the URLs tokenstile publishes: ``PUBLIC_URL``, else ``ISSUER`` when
        it is an http(s) URL, else ``""`` (the URLs stay relative). Never the request's
        ``Host``, which the client chooses."""
        if self.public_url is not None:
            return self.public_url
        if urlsplit(self.issuer).scheme in ("http", "https"):
            return self.issuer.rstrip("/")
        return ""
