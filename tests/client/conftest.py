"""The client suite runs against live servers, on SQLite and on Redis."""

from __future__ import annotations

import pytest

from tests.api.conftest import serve, server, store_settings  # noqa: F401  (fixtures)
from tests.conftest import store_modes


@pytest.fixture(params=store_modes("sqlite", "redis"))
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
