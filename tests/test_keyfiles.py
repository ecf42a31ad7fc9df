"""Key material on disk (``tokenstile.keyfiles``): workers starting together agree on it.

Several processes sharing one DATA_DIR (two ``tokenstile serve`` processes, two supervisord
programs) create the HS256 secret and the key set on first start. Each must end up with the
same complete key, never an empty or partial file another worker is still writing.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tokenstile.keyfiles import KEYS_FILE, SECRET_FILE, load_or_create_keys, load_or_create_secret

T = TypeVar("T")

SECRET_LENGTH = 64  # secrets.token_urlsafe(48)
WORKERS = 8
ROUNDS = 40


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads every microsecond, so that callers interleave inside the function."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def all_at_once(call: Callable[[], T], workers: int = WORKERS) -> list[T]:
    """``call()`` from ``workers`` threads released together by a barrier."""
    barrier = threading.Barrier(workers)

    def worker() -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(worker) for _ in range(workers)]
        return [future.result() for future in futures]


@pytest.mark.usefixtures("busy_switching")
def test_threads_creating_the_secret_together_all_get_the_same_complete_secret(
    tmp_path: Path,
) -> None:
    for round_ in range(ROUNDS):
        data_dir = tmp_path / f"data{round_}"
        seen = all_at_once(partial(load_or_create_secret, data_dir))
        assert {len(secret) for secret in seen} == {SECRET_LENGTH}, f"round {round_}: {seen}"
        assert len(set(seen)) == 1, f"round {round_}: workers got different secrets"
        assert (data_dir / SECRET_FILE).read_bytes() == seen[0]


def secret_in_child(
    data_dir: Path,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[bytes],
) -> None:
    barrier.wait()
    results.put(load_or_create_secret(data_dir))


def test_processes_creating_the_secret_together_all_get_the_same_complete_secret(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(ROUNDS // 2):
        data_dir = tmp_path / f"data{round_}"
        barrier = context.Barrier(WORKERS)
        results: multiprocessing.queues.Queue[bytes] = context.Queue()
        children = [
            context.Process(target=secret_in_child, args=(data_dir, barrier, results))
            for _ in range(WORKERS)
        ]
        for child in children:
            child.start()
        seen = [results.get(timeout=30) for _ in children]
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        assert {len(secret) for secret in seen} == {SECRET_LENGTH}, f"round {round_}: {seen}"
        assert len(set(seen)) == 1, f"round {round_}: workers got different secrets"


def test_the_secret_file_is_private_and_holds_nothing_but_the_secret(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == secret
    assert sorted(os.listdir(tmp_path / "data")) == [SECRET_FILE]


def test_an_existing_secret_is_read_not_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / SECRET_FILE).write_bytes(b"operator-provided-secret\n")
    assert load_or_create_secret(data_dir) == b"operator-provided-secret"
    assert (data_dir / SECRET_FILE).read_bytes() == b"operator-provided-secret\n"


def read_new_key_set(data_dir: Path) -> dict[str, Any]:
    return load_or_create_keys(data_dir, "EdDSA", now=1.0).read()


@pytest.mark.usefixtures("busy_switching")
def test_threads_creating_the_key_set_together_all_read_the_same_single_key(
    tmp_path: Path,
) -> None:
    for round_ in range(ROUNDS // 4):
        data_dir = tmp_path / f"data{round_}"
        seen = all_at_once(partial(read_new_key_set, data_dir))
        kids = {entry["kid"] for jwks in seen for entry in jwks["keys"]}
        assert len(kids) == 1, f"round {round_}: workers read different keys {kids}"
        assert sorted(os.listdir(data_dir)) == [KEYS_FILE]
