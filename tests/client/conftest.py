"""The client suite runs against live servers, on SQLite and on Redis (the ``serve`` and
``server`` fixtures of ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from tests.conftest import store_modes


@pytest.fixture(params=store_modes("sqlite", "redis"))
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)
