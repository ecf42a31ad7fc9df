"""Server processes on loopback, shared by the tests and the benchmarks: a free
127.0.0.1 port, the ``tokenstile serve`` command line, a server started in its own
process group and waited for until it answers, stopped again (SIGTERM, then SIGKILL),
its log and the pids of its workers.

It lives in ``tests/`` because the two trees already depend on each other one way only:
``bench/`` imports ``tests`` (``bench/faults.py`` runs the scenarios of ``tests/faults``)
and nothing in ``tests/`` imports ``bench``; a module in ``bench/`` would make that a
cycle. It imports only the standard library (no pytest, nothing else from ``tests``), so
a benchmark that uses it reaches into none of the suite's fixtures or helpers. What only
one side needs stays there: the in-thread ``LiveServer`` and the ``TOKENSTILE_*``
settings of a test service in ``tests/servers.py``; the benchmark's environment, store
resets and uvicorn apps in ``bench/servers.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class ServerFailed(RuntimeError):
    """A server exited before it answered, or did not answer in time."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound right now."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def tokenstile_executable() -> str:
    """The ``tokenstile`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "tokenstile"
    if script.exists():
        return str(script)
    found = shutil.which("tokenstile")
    if found is None:
        raise FileNotFoundError("the `tokenstile` command is not installed in this environment")
    return found


def serve_command(port: int, workers: int = 1) -> list[str]:
    """``tokenstile serve`` on 127.0.0.1:``port`` with ``workers`` worker processes."""
    return [
        tokenstile_executable(),
        *("serve", "--host", HOST, "--port", str(port), "--workers", str(workers)),
    ]


def answers(base_url: str, path: str = "/healthz", timeout: float = 0.5) -> bool:
    """Whether ``GET path`` on ``base_url`` (plain HTTP, no proxy) answers 200."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or HOST, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_until_healthy(
    base_url: str,
    *,
    path: str = "/healthz",
    timeout: float = STARTUP_TIMEOUT,
    exited: Callable[[], bool] = lambda: False,
) -> None:
    """Wait until ``GET path`` answers 200; :class:`ServerFailed` once ``exited()`` is
    true or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited():
            raise ServerFailed(f"the server at {base_url} exited before it answered {path}")
        if answers(base_url, path):
            return
        time.sleep(0.05)
    raise ServerFailed(f"no healthy {path} at {base_url} within {timeout:g} s")


class ServerProcess:
    """``command`` (a server listening on 127.0.0.1:``port``) as a subprocess.

    It runs in its own process group, so its workers are measured and stopped with it
    and a Ctrl-C meant for the caller does not reach it; in ``cwd``, so a stray ``.env``
    in the caller's directory cannot change it; stdout and stderr appended to
    ``log_path``.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
    ) -> None:
        self.command = list(command)
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The started process (it stays readable after :meth:`stop`)."""
        if self._popen is None:
            raise RuntimeError(f"the server on port {self.port} was never started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def start(self) -> Self:
        """Start the process (without waiting for it: see :meth:`wait_until_healthy`)."""
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until_healthy(self, path: str = "/healthz", timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the server answers ``GET path`` with 200; :class:`ServerFailed`,
        with the tail of its log, when it exits first or takes longer than ``timeout``."""
        try:
            wait_until_healthy(self.base_url, path=path, timeout=timeout, exited=self.exited)
        except ServerFailed as exc:
            raise ServerFailed(f"{exc}:\n{self.log_tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; a no-op when
        it is not running."""
        if self._popen is None or self._popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signal.SIGTERM)
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()

    def worker_pids(self) -> list[int]:
        """The pids of the server's uvicorn workers (its children running
        multiprocessing's ``spawn_main``, which leaves out the resource tracker)."""
        pid = self.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        workers = []
        for child in map(int, children):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(child)
        return workers

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"
