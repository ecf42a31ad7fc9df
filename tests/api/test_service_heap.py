"""The standalone service keeps full garbage collections off its startup heap."""

from __future__ import annotations

import gc
import secrets
from pathlib import Path

from tests.api.conftest import FAST_HASHING, make_settings
from tests.servers import LiveServer
from tokenstile.api import create_app


def test_the_service_freezes_what_startup_left_alive(tmp_path: Path) -> None:
    gc.unfreeze()
    settings = make_settings(
        {"data_dir": str(tmp_path), "secret_key": secrets.token_urlsafe(32), **FAST_HASHING}
    )
    server = LiveServer(create_app(settings)).start()
    try:
        frozen = gc.get_freeze_count()
        assert server.client.get("/healthz").status_code == 200
    finally:
        server.stop()
        gc.unfreeze()
    # Everything the app and its runtime hold was alive then; thousands of objects.
    assert frozen > 10_000
