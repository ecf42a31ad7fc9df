"""Key material on disk: the HS256 development secret and the asymmetric key set.

``DATA_DIR/keys.json`` is a JWK set (RFC 7517) with private parts, mode 0600, written only
here: created once (exclusively, so workers starting together agree on one key) and
replaced atomically by :func:`rotate_keys`. Each key carries ``kid`` (its RFC 7638
thumbprint), ``use``, ``alg`` and ``"tokenstile:created_at"``; a rotated-out key also
carries ``"tokenstile:retired_at"`` and ``"tokenstile:not_after"`` and loses its private
part. The first key without ``not_after`` signs (see :mod:`tokenstile.core.keys`).

``KEYS_FILE`` is the same format, provided and rotated by the operator; it is only read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenstile.core import jwk
from tokenstile.core.keys import CREATED_AT, NOT_AFTER, RETIRED_AT, KeyRing
from tokenstile.errors import ConfigurationError

SECRET_FILE = "secret_key"
KEYS_FILE = "keys.json"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The secret kept in ``data_dir``, created (mode 0600) on first use.

    The new secret is written whole to a temporary file and linked into place, so several
    workers starting at once agree on one secret and none reads a partial file.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    if not path.exists():
        _write_whole(path, secrets.token_urlsafe(48).encode(), exclusive=True)
    return path.read_bytes().strip()


@dataclass
class KeySetFile:
    """A JWK set file, which can be re-read only when it has changed."""

    path: Path
    _seen: tuple[int, int, int] | None = field(default=None, init=False, repr=False)
    """Inode, size and mtime of the file last read."""

    def read(self) -> dict[str, Any]:
        """The parsed key set; ``ConfigurationError`` if it cannot be read or parsed."""
        jwks = self._read(unless_seen=False)
        if jwks is None:  # pragma: no cover - only ``unless_seen`` skips reading
            raise ConfigurationError(f"cannot read the key set {self.path}")
        return jwks

    def read_if_changed(self) -> dict[str, Any] | None:
        """The key set if the file changed since it was last read, else ``None``."""
        return self._read(unless_seen=True)

    def _read(self, *, unless_seen: bool) -> dict[str, Any] | None:
        try:
            with self.path.open("rb") as file:
                status = os.fstat(file.fileno())
                stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
                if unless_seen and stamp == self._seen:
                    return None
                content = file.read()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the key set {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            jwks = json.loads(content)
        except ValueError:
            raise ConfigurationError(f"the key set {self.path} is not valid JSON") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ConfigurationError(f"the key set {self.path} is not a JWK set (no 'keys' list)")
        self._seen = stamp
        return jwks


@dataclass(frozen=True, slots=True)
class Rotation:
    """What :func:`rotate_keys` did."""

    signer: str
    """The kid of the new signing key."""
    retired: dict[str, float]
    """The kid of the previous signer, if any, and its new ``not_after``."""
    removed: list[str]
    """Kids of keys dropped because their ``not_after`` had passed."""


def load_or_create_keys(data_dir: Path, algorithm: str, *, now: float) -> KeySetFile:
    """``DATA_DIR/keys.json``, created with one new key on first use.

    Raises ``ConfigurationError`` if the file holds keys of another algorithm.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = KeySetFile(data_dir / KEYS_FILE)
    if not keys.path.exists():
        _write(keys.path, {"keys": [_new_key(algorithm, now)]}, exclusive=True)
    _check_algorithm(keys.path, keys.read(), algorithm)
    return keys


def rotate_keys(data_dir: Path, algorithm: str, *, now: float, retain_for: float) -> Rotation:
    """Make a new key the signer of ``DATA_DIR/keys.json``.

    The previous signer keeps verifying until ``now + retain_for`` (its ``not_after``),
    then leaves the ring; keys whose ``not_after`` has passed are removed from the file.
    Rotations are serialised by a lock file; the file is replaced atomically.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / KEYS_FILE
    with _locked(data_dir / f"{KEYS_FILE}.lock"):
        if not path.exists():
            key = _new_key(algorithm, now)
            _write(path, {"keys": [key]}, exclusive=True)
            return Rotation(signer=key["kid"], retired={}, removed=[])
        jwks = KeySetFile(path).read()
        _check_algorithm(path, jwks, algorithm)
        try:  # never rotate a set that would not load
            KeyRing.from_jwks(algorithm, jwks, clock=lambda: now)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc.detail}") from None
        kept: list[dict[str, Any]] = []
        retired: dict[str, float] = {}
        removed: list[str] = []
        for entry in jwks["keys"]:
            kid = entry.get("kid") or jwk.thumbprint(jwk.load_public_key(entry, algorithm))
            not_after = entry.get(NOT_AFTER)
            if not_after is None:
                not_after = int(now + retain_for) + 1
                retired[kid] = not_after
                entry = {**jwk.without_private_part(entry), RETIRED_AT: int(now)}
                entry[NOT_AFTER] = not_after
            elif now >= not_after:
                removed.append(kid)
                continue
            kept.append(entry)
        key = _new_key(algorithm, now)
        _write(path, {"keys": [key, *kept]}, exclusive=False)
    return Rotation(signer=key["kid"], retired=retired, removed=removed)


def _new_key(algorithm: str, now: float) -> dict[str, Any]:
    private_key = jwk.generate_private_key(algorithm)
    return {
        "kid": jwk.thumbprint(private_key.public_key()),
        "use": "sig",
        "alg": algorithm,
        **jwk.private_members(private_key),
        CREATED_AT: int(now),
    }


def _check_algorithm(path: Path, jwks: dict[str, Any], algorithm: str) -> None:
    found = {entry.get("alg") for entry in jwks["keys"] if isinstance(entry, dict)}
    if found and found != {algorithm}:
        other = ", ".join(sorted(str(alg) for alg in found - {algorithm}))
        raise ConfigurationError(
            f"{path} holds {other} keys but ALGORITHM is {algorithm}: set ALGORITHM back, "
            f"or move the file away to start over with new keys (which ends every session)"
        )


def _write(path: Path, jwks: dict[str, Any], *, exclusive: bool) -> None:
    _write_whole(path, (json.dumps(jwks, indent=2) + "\n").encode(), exclusive=exclusive)


def _write_whole(path: Path, content: bytes, *, exclusive: bool) -> None:
    """Write ``content`` to ``path`` whole (mode 0600): a reader sees the old file or the
    new one, never a part. ``exclusive``: leave an existing file alone."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        if exclusive:
            with contextlib.suppress(FileExistsError):  # another worker was first
                os.link(temporary, path)
        else:
            os.replace(temporary, path)
        _fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
