"""Private redis-servers (one, or a three-master Cluster) for tests that take Redis away
and bring it back."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port, port_is_free


class PrivateRedis:
    """A throwaway redis-server on a free port, without persistence by default.

    ``stop()`` and ``start()`` may alternate; the port stays the same, so clients
    built from ``url`` reconnect once the server is back (with its data gone).
    ``persistent=True`` configures what a deployment that keeps sessions would: an
    append-only file fsynced on every write (``appendfsync always``), so even after
    ``kill()`` the server comes back with every write it acknowledged.
    """

    def __init__(self, binary: str = "redis-server", *, persistent: bool = False) -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed")
        self._binary = found
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._directory = Path(tempfile.mkdtemp(prefix="tokenstile-redis-")) if persistent else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 5.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self._process is not None:
            return
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *self._persistence(),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server; clients see connection errors until ``start()``."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGCONT)  # a frozen server cannot exit
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, nothing written beyond what it already had."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None

    def close(self) -> None:
        """Stop the server and delete its files (a persistent server's append-only file)."""
        self.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open, nothing is answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server: it runs whatever waited in its sockets."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def _persistence(self) -> list[str]:
        if self._directory is None:
            return ["--appendonly", "no"]
        return [
            "--dir",
            str(self._directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, 55_535)
        if port not in ports and port_is_free(port) and port_is_free(port + 10_000):
            ports.append(port)
    return ports


class PrivateRedisCluster:
    """Three redis-server masters joined into a Redis Cluster, for tests.

    Each node keeps its cluster config and an append-only file in its own directory,
    so ``stop_node(i)`` then ``start_node(i)`` brings the same node back with its data
    and slots. A low ``cluster-node-timeout`` makes the others mark a stopped master
    as failed (the cluster goes down) within about a second.
    """

    NODE_TIMEOUT_MS = 1000

    def __init__(self, masters: int = 3, *, appendfsync: str = "everysec") -> None:
        found = shutil.which("redis-server"), shutil.which("redis-cli")
        if found[0] is None or found[1] is None:
            raise FileNotFoundError("redis-server and redis-cli are needed for a Redis Cluster")
        self._server, self._cli = found
        self.ports = _cluster_ports(masters)
        self._root = Path(tempfile.mkdtemp(prefix="tokenstile-cluster-"))
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * masters
        # "always" keeps every acknowledged write across kill_node(), as a deployment
        # that must not lose rotations would configure.
        self._appendfsync = appendfsync

    @property
    def url(self) -> str:
        """The first node's URL: a cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 15.0) -> None:
        """Start every node, join them (slots split evenly) and wait for ``cluster_state:ok``."""
        try:
            for index in range(len(self.ports)):
                self._spawn(index, timeout)
            subprocess.run(
                [
                    self._cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_until_ok(timeout)
        except BaseException:
            self.close()
            raise

    def stop_node(self, index: int) -> None:
        """Stop node ``index``; once the others notice, the whole cluster answers
        CLUSTERDOWN."""
        process = self._processes[index]
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen server cannot exit
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._processes[index] = None

    def start_node(self, index: int, timeout: float = 15.0) -> None:
        """Restart node ``index`` with its data and wait until the cluster is whole."""
        self._spawn(index, timeout)
        self.wait_until_ok(timeout)

    def freeze_node(self, index: int) -> None:
        """SIGSTOP node ``index``: its connections stay open, nothing is answered."""
        process = self._processes[index]
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def thaw_node(self, index: int) -> None:
        """SIGCONT a frozen node: it runs whatever waited in its sockets."""
        process = self._processes[index]
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``: it keeps only what its append-only file already holds."""
        process = self._processes[index]
        if process is None:
            return
        process.kill()
        process.wait()
        self._processes[index] = None

    def cli(self, index: int, *args: str) -> str:
        """The reply of ``redis-cli`` on node ``index`` to ``args``, as text."""
        result = subprocess.run(
            [self._cli, "-p", str(self.ports[index]), *args],
            check=True,
            capture_output=True,
            timeout=10,
        )
        return result.stdout.decode()

    def wait_until_ok(self, timeout: float = 15.0) -> None:
        """Wait until every node reports ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every node and delete their files."""
        for index in range(len(self.ports)):
            self.stop_node(index)
        shutil.rmtree(self._root, ignore_errors=True)

    def _spawn(self, index: int, timeout: float) -> None:
        if self._processes[index] is not None:
            return
        port = self.ports[index]
        directory = self._root / str(port)
        directory.mkdir(exist_ok=True)
        process = subprocess.Popen(
            [
                self._server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.NODE_TIMEOUT_MS),
                "--appendonly",
                "yes",
                "--appendfsync",
                self._appendfsync,
                "--save",
                "",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._processes[index] = process
        deadline = time.monotonic() + timeout
        while not (_reply(port, b"PING\r\n") or b"").startswith(b"+PONG"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)

    @staticmethod
    def _state_ok(port: int) -> bool:
        reply = _reply(port, b"CLUSTER INFO\r\n")
        return reply is not None and b"cluster_state:ok" in reply


def _reply(port: int, command: bytes) -> bytes | None:
    """The first bytes of a loopback Redis's reply to ``command``; ``None`` if it is down."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(command)
            return conn.recv(4096)
    except OSError:
        return None
