"""Key material on disk: the development secret generated once into ``DATA_DIR``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "secret_key"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The secret kept in ``data_dir``, created (mode 0600) on first use.

    Creation is exclusive, so several workers starting at once agree on one secret.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    secret = secrets.token_urlsafe(48).encode()
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    return secret
