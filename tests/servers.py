"""Live tokenstile servers for tests: in a thread of this process, or as `tokenstile serve`.

The process side (free port, command line, start, wait, stop, log, workers) is
``tests/processes.py``, shared with the benchmarks; what is here is the tests' own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import httpx
import uvicorn
from fastapi import FastAPI

# LiveServer calls free_port through this module (a test patches it to reuse a port).
from tests.processes import ServerProcess, free_port, serve_command

STARTUP_TIMEOUT = 15.0


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


class ServiceProcess(ServerProcess):
    """`tokenstile serve` as a subprocess, configured through TOKENSTILE_* variables
    (none inherited from the environment), its log ``serve-<port>.log`` in ``cwd``."""

    def __init__(self, settings: Mapping[str, str], *, workers: int = 1, cwd: Path) -> None:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")},
            **{f"TOKENSTILE_{name.upper()}": value for name, value in settings.items()},
        }
        super().__init__(
            serve_command(port, workers),
            port=port,
            env=env,
            cwd=cwd,
            log_path=cwd / f"serve-{port}.log",
        )

    @property
    def log(self) -> Path:
        return self.log_path

    def start(self) -> Self:
        """Start the server and wait until it is healthy (stopped again if it is not)."""
        super().start()
        try:
            self.wait_until_healthy(timeout=STARTUP_TIMEOUT)
        except RuntimeError:
            self.stop()
            raise
        return self
