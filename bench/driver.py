"""Running one timed phase: virtual users on keep-alive connections, one event loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.connection import HttpConnection
from bench.errors import REQUEST_ERRORS, BenchError
from bench.profiling import finish_profiler, start_profiler
from bench.scenarios import Scenario

T = TypeVar("T")

STRAGGLER_TIMEOUT = 10.0
ERROR_BACKOFF = 0.01


@dataclass(slots=True)
class Window:
    start: float
    end: float


@dataclass(slots=True)
class Recorder:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0  # every failed request of the phase, warm-up included


@dataclass
class PhaseResult:
    phase: str
    concurrency: int
    duration_s: float
    requests: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_pct: float | None
    client_cpu_pct: float
    client: str = "asyncio"


@dataclass
class PhaseSpec:
    name: str
    scenarios: list[Scenario]
    duration: float
    warmup: float
    profile_to: Path | None = None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def server_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU time of every live process in group ``pgid`` (the server and
    its workers) from /proc; None where /proc is unavailable."""
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def cpu_percent(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    return 100 * (after - before) / seconds


async def virtual_user(
    scenario: Scenario, conn: HttpConnection, window: Window, recorder: Recorder
) -> None:
    clock = time.perf_counter
    while (started := clock()) < window.end:
        try:
            ok = await scenario.step(conn)
        except REQUEST_ERRORS:
            ok = False
            conn.close()
        if started >= window.start:
            recorder.latencies.append(clock() - started)
        if not ok:
            recorder.errors += 1
            await recover(scenario, conn)


async def recover(scenario: Scenario, conn: HttpConnection) -> None:
    try:
        await scenario.recover(conn)
    except (*REQUEST_ERRORS, BenchError):
        conn.close()
    await asyncio.sleep(ERROR_BACKOFF)  # never spin on a failing server


async def run_phase(spec: PhaseSpec, port: int, server_pid: int) -> PhaseResult:
    conns = [HttpConnection(port) for _ in spec.scenarios]
    try:
        await asyncio.gather(*(s.setup(c) for s, c in zip(spec.scenarios, conns, strict=True)))
        for conn in conns:
            conn.close()  # idle setup connections could hit the server's keep-alive timeout
        recorder = Recorder()
        now = time.perf_counter()
        window = Window(now + spec.warmup, now + spec.warmup + spec.duration)
        tasks = [
            asyncio.create_task(virtual_user(s, c, window, recorder))
            for s, c in zip(spec.scenarios, conns, strict=True)
        ]
        await asyncio.sleep(spec.warmup)
        cpu = await measure_window(spec, server_pid)
        await finish(tasks, recorder)
    finally:
        for conn in conns:
            conn.close()
    return summarize(spec, recorder, cpu)


async def measure_window(spec: PhaseSpec, server_pid: int) -> tuple[float | None, float]:
    """Sleep through the measured window; return server and client CPU percentages."""
    profiler = start_profiler(server_pid, spec.duration, spec.profile_to)
    server_before, client_before = server_cpu_seconds(server_pid), time.process_time()
    await asyncio.sleep(spec.duration)
    server_after, client_after = server_cpu_seconds(server_pid), time.process_time()
    await finish_profiler(profiler)
    client_pct = 100 * (client_after - client_before) / spec.duration
    return cpu_percent(server_before, server_after, spec.duration), client_pct


async def finish(tasks: list[asyncio.Task[None]], recorder: Recorder) -> None:
    """Wait for the virtual users to stop; stragglers are cancelled and count as errors."""
    done, pending = await asyncio.wait(tasks, timeout=STRAGGLER_TIMEOUT)
    for task in pending:
        task.cancel()
    recorder.errors += len(pending)
    for task in done:
        task.result()  # surface bugs in the load generator itself


def summarize(spec: PhaseSpec, recorder: Recorder, cpu: tuple[float | None, float]) -> PhaseResult:
    latencies = sorted(recorder.latencies)
    return PhaseResult(
        phase=spec.name,
        concurrency=len(spec.scenarios),
        duration_s=spec.duration,
        requests=len(latencies),
        throughput_rps=len(latencies) / spec.duration,
        p50_ms=1000 * percentile(latencies, 0.50),
        p99_ms=1000 * percentile(latencies, 0.99),
        errors=recorder.errors,
        server_cpu_pct=cpu[0],
        client_cpu_pct=cpu[1],
    )


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (a cheaper event loop for the load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)
