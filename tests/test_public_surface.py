"""The public surface is small and listed: each package's ``__all__`` names exactly
its public attributes, sorted (the httpx habit)."""

from __future__ import annotations

import importlib
import types

import pytest

import tokenstile

PACKAGES = ["tokenstile", "tokenstile.api", "tokenstile.client", "tokenstile.resource"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)

    public = {
        attribute
        for attribute, value in vars(package).items()
        if not attribute.startswith("_") and not isinstance(value, types.ModuleType)
    }

    exported = set(package.__all__) - {"__version__"}
    assert exported == public
    assert list(package.__all__) == sorted(package.__all__)


def test_every_error_has_a_stable_code_and_status() -> None:
    errors = [
        value
        for value in (getattr(tokenstile, name) for name in tokenstile.__all__)
        if isinstance(value, type) and issubclass(value, tokenstile.TokenstileError)
    ]

    assert {error.__name__ for error in errors} == {
        "AuthenticationError",
        "ConfigurationError",
        "CsrfFailed",
        "InvalidCredentials",
        "InvalidRequest",
        "InvalidToken",
        "MissingToken",
        "NotFound",
        "RateLimited",
        "RegistrationClosed",
        "StoreUnavailable",
        "TokenExpired",
        "TokenReused",
        "TokenRevoked",
        "TokenstileError",
        "UsernameTaken",
        "WeakPassword",
    }
    for error in errors:
        assert error.code.isidentifier(), error
        assert 400 <= error.status_code < 600, error


def test_the_version_matches_the_distribution() -> None:
    from importlib.metadata import version

    assert tokenstile.__version__ == version("tokenstile")
