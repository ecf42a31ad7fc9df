"""Live servers over every store mode: SQLite, PostgreSQL, Redis and a Redis Cluster (users
in SQLite with either Redis).

The fixtures that start them (``store_settings``, ``serve``, ``server``) are in
``tests/conftest.py``, shared with the client suite; here is which store modes the API
tests run on.
"""

from __future__ import annotations

import pytest

from tests.conftest import FAST_HASHING as FAST_HASHING
from tests.conftest import make_settings as make_settings
from tests.conftest import store_modes

STORE_MODES = store_modes("sqlite", "postgres", "redis")
"""What every API test runs on (params marked with the service they need)."""
WITH_CLUSTER = [*STORE_MODES, *store_modes("redis-cluster")]
"""What the SPEC §1 invariant tests and the multi-process tests run on (each such module
overrides ``store_mode``). The other API tests check behaviour above the store, which a
Redis Cluster does not change, so they keep to one Redis."""
REDIS_MODES = ("redis", "redis-cluster")


@pytest.fixture(params=STORE_MODES)
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
