"""Live tokenstile servers for tests: in a thread of this process, or as `tokenstile serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_healthy(base_url: str, *, timeout: float = 15.0, alive: object = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"no healthy server at {base_url} after {timeout} s")


class LiveServer:
    """A real uvicorn server on a free 127.0.0.1 port, run in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.client = httpx.Client(base_url=self.base_url, timeout=10)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)


class ServiceProcess:
    """`tokenstile serve` as a subprocess, configured through TOKENSTILE_* variables."""

    def __init__(self, settings: Mapping[str, str], *, workers: int = 1, cwd: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")},
            **{f"TOKENSTILE_{name.upper()}": value for name, value in settings.items()},
        }
        executable = shutil.which("tokenstile", path=str(Path(sys.executable).parent))
        assert executable is not None, "the tokenstile command is not installed"
        self._command = [
            executable,
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self._cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"serve-{self.port}.log"

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self._command, env=self._env, cwd=self._cwd, stdout=log, stderr=log
            )
        try:
            wait_until_healthy(self.base_url)
        except RuntimeError:
            self.stop()
            raise RuntimeError(self.log.read_text()) from None
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
