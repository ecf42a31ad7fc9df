"""Fixed GET phases driven by wrk (a C client leaves the server more of the CPU).

wrk runs one thread with ``concurrency`` keep-alive connections; ``wrk_report.lua``
cycles through the given bearer tokens and prints a JSON summary. wrk has no warm-up,
so a short unmeasured wrk run comes first.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.connection import HOST
from bench.driver import PhaseResult, cpu_percent, server_cpu_seconds
from bench.errors import BenchError

SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
MARKER = b"BENCH_WRK "
SOCKET_TIMEOUT = "10s"  # a slow response is a latency, not an error


def wrk_path() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkPhase:
    name: str
    path: str
    tokens: list[str] | None
    concurrency: int
    duration: float
    warmup: float


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_tokens(path: Path, tokens: list[str]) -> str:
    path.write_text("\n".join(tokens) + "\n")
    return str(path)


async def run_wrk_phase(spec: WrkPhase, port: int, server_pgid: int) -> PhaseResult:
    wrk = wrk_path()
    if wrk is None:
        raise BenchError("wrk is not on PATH")
    with tempfile.TemporaryDirectory(prefix="tokenstile-wrk-") as tmp:
        env = dict(os.environ)
        if spec.tokens is not None:
            env["BENCH_WRK_TOKENS"] = write_tokens(Path(tmp, "tokens"), spec.tokens)
        if spec.warmup > 0:
            await _wrk(wrk, spec, port, env, seconds=spec.warmup)
        server_before, client_before = server_cpu_seconds(server_pgid), children_cpu_seconds()
        summary = await _wrk(wrk, spec, port, env, seconds=spec.duration)
        server_after, client_after = server_cpu_seconds(server_pgid), children_cpu_seconds()
    seconds = summary["duration_us"] / 1e6
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return PhaseResult(
        phase=spec.name,
        concurrency=spec.concurrency,
        duration_s=round(seconds, 3),
        requests=summary["requests"],
        throughput_rps=summary["requests"] / seconds,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=errors,
        server_cpu_pct=cpu_percent(server_before, server_after, seconds),
        client_cpu_pct=100 * (client_after - client_before) / seconds,
        client="wrk",
    )


async def _wrk(
    wrk: str, spec: WrkPhase, port: int, env: dict[str, str], *, seconds: float
) -> dict[str, int]:
    command = [wrk, "-t1", f"-c{spec.concurrency}", f"-d{max(1, math.ceil(seconds))}s"]
    command += ["--timeout", SOCKET_TIMEOUT, "-s", str(SCRIPT), f"http://{HOST}:{port}{spec.path}"]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            summary: dict[str, int] = orjson.loads(line[len(MARKER) :])
            return summary
    output = (stdout + stderr).decode(errors="replace")
    raise BenchError(f"wrk exited {process.returncode} without a summary:\n{output}")
