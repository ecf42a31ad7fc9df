"""A private PostgreSQL server for tests that stop, freeze or kill it (never the shared one
at 127.0.0.1:5432)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port

# initdb and postgres refuse to run as root: as root, the server runs as this account.
SERVER_ACCOUNT = "postgres"


def _binaries() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and postgres."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "postgres").exists():
            return directory
    found = shutil.which("initdb")
    if found is not None and shutil.which("postgres") is not None:
        return Path(found).parent
    raise FileNotFoundError("PostgreSQL server binaries (initdb, postgres) are not installed")


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port,
    trust authentication, durable (``fsync`` on) like a deployment.

    Signals go to the whole server, the postmaster and every process it forked (each
    backend calls ``setsid()``, so a process group would reach the postmaster alone):
    ``freeze()`` stops every process, ``kill()`` is a crash of the machine's database
    server, after which ``start()`` runs PostgreSQL's crash recovery on the same files.
    """

    def __init__(self) -> None:
        self._bin = _binaries()
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="tokenstile-pg-"))
        self._data = self._root / "data"
        self._user: str | None = SERVER_ACCOUNT if os.geteuid() == 0 else None
        if self._user is not None:
            try:
                account = pwd.getpwnam(self._user)
            except KeyError:
                raise FileNotFoundError(f"running as root needs a {self._user!r} account") from None
            os.chown(self._root, account.pw_uid, account.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None
        self._initialised = False

    @property
    def url(self) -> str:
        """The ``postgres`` database, in asyncpg form."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def sqlalchemy_url(self) -> str:
        return self.url.replace("postgresql://", "postgresql+asyncpg://", 1)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Create the cluster on first use, start the server, wait until it accepts
        connections (after a crash, that includes its recovery)."""
        if self._process is not None:
            return
        if not self._initialised:
            self._run(
                str(self._bin / "initdb"),
                "-D",
                str(self._data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            )
            self._initialised = True
        log = (self._root / "server.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                [
                    str(self._bin / "postgres"),
                    "-D",
                    str(self._data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self._root}",
                    "-c",
                    "max_connections=100",
                    "-c",
                    "shared_buffers=16MB",
                ],
                stdout=log,
                stderr=log,
                user=self._user,
                start_new_session=True,  # Ctrl-C in the test's terminal is not for it
            )
        deadline = time.monotonic() + timeout
        while not self._accepts():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"postgres did not start on port {self.port}: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, the server exits cleanly.

        SIGTERM would be PostgreSQL's *smart* shutdown, which waits for every client to
        disconnect, and a connection pool never does.
        """
        self._signal_and_wait(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL every process of the server, as a crash would."""
        self._signal_and_wait(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP every process of the server: connections stay open, nothing answers."""
        assert self._process is not None
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        assert self._process is not None
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> None:
        """``signum`` to the postmaster first (it forks no more), then its descendants."""
        assert self._process is not None
        for pid in [self._process.pid, *_descendants(self._process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def close(self) -> None:
        """Stop the server and delete its files."""
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)

    def log(self) -> str:
        try:
            return (self._root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _signal_and_wait(self, signum: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        children = _descendants(process.pid)
        self._signal_all(signal.SIGCONT)  # a frozen server cannot exit
        if signum == signal.SIGKILL:
            self._signal_all(signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._signal_all(signal.SIGKILL)
            process.wait()
        # A restart needs the old backends gone (they hold the shared memory).
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        self._process = None

    def _run(self, *command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=60, user=self._user)

    def _accepts(self) -> bool:
        assert self._process is not None
        done = subprocess.run(
            [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
            timeout=10,
        )
        return done.returncode == 0


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, parents before children (from /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
