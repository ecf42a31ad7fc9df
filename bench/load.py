"""Load benchmark for a live ``tokenstile serve`` process.

Usage::

    .venv/bin/python bench/load.py [--duration 10] [--concurrency 32]
        [--modes sqlite,redis] [--redis-url redis://127.0.0.1:6379/14] [--json out.json]

For each store mode a fresh server (one worker, temporary DATA_DIR, rate limits off) is
started on a free 127.0.0.1 port and four phases are measured: ``GET /healthz``,
``GET /users/me``, chained ``POST /auth/refresh`` and ``POST /auth/login``.

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per
virtual user) so that it leaves as much CPU as possible to the server on the same machine.
Redis mode runs ``FLUSHDB`` on the database of ``--redis-url`` (default db 14) first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import redis

HOST = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MODES = ("sqlite", "redis")
PROTECTED_TARGET = 0.85
STARTUP_TIMEOUT = 30.0
STRAGGLER_TIMEOUT = 10.0
ERROR_BACKOFF = 0.01
SERVER_STOP_TIMEOUT = 5.0
PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}

PHASES = {
    "healthz": "GET /healthz (unauthenticated)",
    "users_me": "GET /users/me (protected)",
    "refresh": "POST /auth/refresh (chained)",
    "login": "POST /auth/login (Argon2)",
}


class BenchError(Exception):
    """A failure that stops the benchmark of one store mode."""


class MalformedResponse(ValueError):
    """The server sent something that is not an HTTP/1.1 response."""


# Errors a single request may raise (transport, malformed HTTP or JSON, a missing field);
# the virtual user counts them and reconnects.
REQUEST_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    KeyError,
)


# --------------------------------------------------------------------------------------
# A minimal HTTP/1.1 keep-alive client
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Response:
    status: int
    body: bytes


def build_request(
    port: int, method: str, path: str, *, body: bytes | None = None, token: str | None = None
) -> bytes:
    """The raw bytes of one request (JSON body when ``body`` is given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


def post_json(port: int, path: str, payload: dict[str, str]) -> bytes:
    return build_request(port, "POST", path, body=orjson.dumps(payload))


def parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, keep-alive from a response head."""
    if not head.startswith(b"HTTP/1."):
        raise MalformedResponse(f"not an HTTP/1.x response: {head[:40]!r}")
    status = int(head[9:12])
    headers = head.lower()
    length = None
    start = headers.find(b"\r\ncontent-length:")
    if start >= 0:
        end = headers.index(b"\r\n", start + 2)
        length = int(headers[start + len(b"\r\ncontent-length:") : end])
    chunked = b"\r\ntransfer-encoding: chunked" in headers
    keep_alive = b"\r\nconnection: close" not in headers
    return status, length, chunked, keep_alive


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


class HttpConnection:
    """One persistent connection to the server, opened lazily, reopened after errors."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> Response:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        reader = self._reader
        self._writer.write(request)
        status, length, chunked, keep_alive = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if length is not None:
            body = await reader.readexactly(length)
        elif chunked:
            body = await read_chunked(reader)
        else:
            body, keep_alive = b"", False
        if not keep_alive:
            self.close()
        return Response(status, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


# --------------------------------------------------------------------------------------
# Scenarios: what one virtual user does in a phase
# --------------------------------------------------------------------------------------


class Scenario(Protocol):
    async def setup(self, conn: HttpConnection) -> None:
        """Untimed preparation before the phase starts."""

    async def step(self, conn: HttpConnection) -> bool:
        """One timed request; True when it succeeded."""

    async def recover(self, conn: HttpConnection) -> None:
        """Untimed repair after a failed step."""


class FixedRequest:
    """Sends the same prebuilt request again and again."""

    def __init__(self, request: bytes, expected_status: int = 200) -> None:
        self._request = request
        self._expected = expected_status

    async def setup(self, conn: HttpConnection) -> None:
        return

    async def step(self, conn: HttpConnection) -> bool:
        return (await conn.send(self._request)).status == self._expected

    async def recover(self, conn: HttpConnection) -> None:
        return


class RefreshChain:
    """Logs in once, then refreshes with the refresh token it last received."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self._port = port
        self._login = post_json(port, "/auth/login", {"username": username, "password": password})
        self._refresh_token = ""

    async def setup(self, conn: HttpConnection) -> None:
        await self._log_in(conn)

    async def step(self, conn: HttpConnection) -> bool:
        request = post_json(self._port, "/auth/refresh", {"refresh_token": self._refresh_token})
        response = await conn.send(request)
        if response.status != 200:
            return False
        self._refresh_token = orjson.loads(response.body)["refresh_token"]
        return True

    async def recover(self, conn: HttpConnection) -> None:
        await self._log_in(conn)  # a broken chain starts over with a new session

    async def _log_in(self, conn: HttpConnection) -> None:
        response = await conn.send(self._login)
        if response.status != 200:
            raise BenchError(f"login failed: HTTP {response.status} {response.body[:200]!r}")
        self._refresh_token = orjson.loads(response.body)["refresh_token"]


# --------------------------------------------------------------------------------------
# Running a phase
# --------------------------------------------------------------------------------------


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


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


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


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None where unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class PhaseSpec:
    name: str
    scenarios: list[Scenario]
    duration: float
    warmup: float
    profile_to: Path | None = None


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
    if server_before is None or server_after is None:
        return None, client_pct
    return 100 * (server_after - server_before) / spec.duration, client_pct


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


# --------------------------------------------------------------------------------------
# Optional profiling with py-spy
# --------------------------------------------------------------------------------------


def start_profiler(
    pid: int, duration: float, output: Path | None
) -> subprocess.Popen[bytes] | None:
    if output is None:
        return None
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  --profile: py-spy is not installed; skipping the profile", file=sys.stderr)
        return None
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration)))]
    command += ["--rate", "200", "--nonblocking", "--output", str(output)]
    command += ["--format", PROFILE_FORMATS[output.suffix]]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def finish_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None:
        return
    try:
        _, stderr = await asyncio.to_thread(profiler.communicate, timeout=STRAGGLER_TIMEOUT)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()
        print("  --profile: py-spy did not finish; profile skipped", file=sys.stderr)
        return
    if profiler.returncode != 0:
        print(f"  --profile: py-spy failed: {stderr.decode(errors='replace')}", file=sys.stderr)


# --------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tokenstile_command() -> list[str]:
    """The ``tokenstile`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "tokenstile"
    if script.exists():
        return [str(script)]
    found = shutil.which("tokenstile")
    if found is None:
        raise BenchError("the `tokenstile` command is not installed in this environment")
    return [found]


def server_env(data_dir: Path, redis_url: str | None) -> dict[str, str]:
    """The environment minus inherited TOKENSTILE_* settings, plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")}
    env["TOKENSTILE_DATA_DIR"] = str(data_dir)
    env["TOKENSTILE_RATE_LIMIT_ENABLED"] = "false"
    env["TOKENSTILE_SECRET_KEY"] = secrets.token_urlsafe(48)
    if redis_url is not None:
        env["TOKENSTILE_REDIS_URL"] = redis_url
    return env


@contextlib.contextmanager
def running_server(work_dir: Path, redis_url: str | None) -> Iterator[Server]:
    """Start ``tokenstile serve`` in its own process group and always stop it again."""
    data_dir = work_dir / "data"
    data_dir.mkdir()
    port = free_port()
    log_path = work_dir / "server.log"
    command = [*tokenstile_command(), "serve", "--host", HOST, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--workers", "1"],
            env=server_env(data_dir, redis_url),
            cwd=work_dir,  # keep a stray .env file in the caller's directory out of it
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Server(process, port, log_path)
        finally:
            stop_server(process)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def wait_healthy(server: Server) -> None:
    deadline = time.perf_counter() + STARTUP_TIMEOUT
    request = build_request(server.port, "GET", "/healthz")
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"the server exited early:\n{server.log_tail()}")
        conn = HttpConnection(server.port)
        try:
            if (await conn.send(request)).status == 200:
                return
        except REQUEST_ERRORS:
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise BenchError(f"no healthy /healthz within {STARTUP_TIMEOUT:.0f}s:\n{server.log_tail()}")


def flush_redis(url: str) -> None:
    """FLUSHDB the dedicated benchmark database (never db 0, never a remote host)."""
    if urlsplit(url).hostname not in LOOPBACK_NAMES:
        raise BenchError(f"refusing to use a non-loopback Redis: {url}")
    client = redis.Redis.from_url(url)
    try:
        if int(client.connection_pool.connection_kwargs.get("db", 0)) == 0:
            raise BenchError("refusing to FLUSHDB Redis db 0; use a dedicated db such as /14")
        client.flushdb()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} is not usable: {exc}") from exc
    finally:
        client.close()


# --------------------------------------------------------------------------------------
# One store mode
# --------------------------------------------------------------------------------------


@dataclass
class Account:
    username: str
    password: str
    access_token: str


async def create_accounts(port: int, count: int) -> list[Account]:
    conn = HttpConnection(port)
    password = "bench-" + secrets.token_urlsafe(24)
    accounts = []
    try:
        for index in range(count):
            credentials = {"username": f"bench{index}", "password": password}
            response = await conn.send(post_json(port, "/auth/register", credentials))
            if response.status != 201:
                raise BenchError(f"register failed: HTTP {response.status} {response.body!r}")
            response = await conn.send(post_json(port, "/auth/login", credentials))
            if response.status != 200:
                raise BenchError(f"login failed: HTTP {response.status} {response.body!r}")
            token = orjson.loads(response.body)["access_token"]
            accounts.append(Account(credentials["username"], password, token))
    finally:
        conn.close()
    return accounts


def phase_specs(
    args: argparse.Namespace, port: int, accounts: list[Account], profile_to: Path | None
) -> list[PhaseSpec]:
    def account(index: int) -> Account:
        return accounts[index % len(accounts)]

    def login_request(index: int) -> bytes:
        credentials = {"username": account(index).username, "password": account(index).password}
        return post_json(port, "/auth/login", credentials)

    vus = range(args.concurrency)
    healthz = build_request(port, "GET", "/healthz")
    me = [build_request(port, "GET", "/users/me", token=account(i).access_token) for i in vus]
    chains = [RefreshChain(port, account(i).username, account(i).password) for i in vus]
    logins = [FixedRequest(login_request(i)) for i in range(args.login_concurrency)]
    common = {"duration": args.duration, "warmup": args.warmup}
    return [
        PhaseSpec("healthz", [FixedRequest(healthz) for _ in vus], **common),
        PhaseSpec("users_me", [FixedRequest(r) for r in me], **common, profile_to=profile_to),
        PhaseSpec("refresh", list(chains), **common),
        PhaseSpec("login", list(logins), **common),
    ]


async def bench_mode(
    server: Server, args: argparse.Namespace, profile_to: Path | None
) -> list[PhaseResult]:
    await wait_healthy(server)
    accounts = await create_accounts(server.port, args.users)
    results = []
    for spec in phase_specs(args, server.port, accounts, profile_to):
        print(f"  {PHASES[spec.name]} ...", flush=True)
        results.append(await run_phase(spec, server.port, server.process.pid))
        if server.process.poll() is not None:
            raise BenchError(f"the server died during {spec.name}:\n{server.log_tail()}")
    return results


def run_async(coroutine: Coroutine[Any, Any, list[PhaseResult]]) -> list[PhaseResult]:
    """Run on uvloop when it is installed (a cheaper event loop for the load generator)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def run_mode(args: argparse.Namespace, mode: str) -> list[PhaseResult]:
    redis_url = args.redis_url if mode == "redis" else None
    profile_to = None
    if args.profile is not None:
        profile_to = Path(tempfile.gettempdir(), f"tokenstile-profile-{mode}{args.profile}")
    if redis_url is not None:
        flush_redis(redis_url)
    with (
        tempfile.TemporaryDirectory(prefix=f"tokenstile-bench-{mode}-") as tmp,
        running_server(Path(tmp), redis_url) as server,
    ):
        print(f"[{mode}] server pid {server.process.pid} on {HOST}:{server.port}", flush=True)
        results = run_async(bench_mode(server, args, profile_to))
    if profile_to is not None and profile_to.exists():
        print(f"  profile of the protected phase: {profile_to}")
    return results


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rps(results: dict[str, dict[str, PhaseResult]], mode: str, phase: str) -> float | None:
    result = results.get(mode, {}).get(phase)
    return None if result is None else result.throughput_rps


def build_report(
    args: argparse.Namespace,
    results: dict[str, dict[str, PhaseResult]],
    failures: dict[str, str],
) -> dict[str, Any]:
    ratios = {
        mode: {
            "protected/unauthenticated": ratio(
                rps(results, mode, "users_me"), rps(results, mode, "healthz")
            ),
            "refresh/unauthenticated": ratio(
                rps(results, mode, "refresh"), rps(results, mode, "healthz")
            ),
        }
        for mode in results
    }
    redis_vs_sqlite = {
        phase: ratio(rps(results, "redis", phase), rps(results, "sqlite", phase))
        for phase in PHASES
    }
    return {
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "login_concurrency": args.login_concurrency,
            "modes": args.modes,
            "redis_url": args.redis_url if "redis" in args.modes else None,
        },
        "modes": {
            mode: {"phases": {p: asdict(r) for p, r in phases.items()}, "ratios": ratios[mode]}
            for mode, phases in results.items()
        },
        "redis_vs_sqlite": redis_vs_sqlite,
        "failures": failures,
        "targets": targets(results, ratios, failures),
    }


def targets(
    results: dict[str, dict[str, PhaseResult]],
    ratios: dict[str, dict[str, float | None]],
    failures: dict[str, str],
) -> list[dict[str, Any]]:
    protected = ratios.get("redis", {}).get("protected/unauthenticated")
    if protected is None:
        protected_status = "n/a (redis mode not measured)"
    else:
        protected_status = "PASS" if protected >= PROTECTED_TARGET else "MISS"
    broken = sum(phases["refresh"].errors for phases in results.values() if "refresh" in phases)
    measured = any("refresh" in phases for phases in results.values())
    if not measured:
        chain_status = "n/a (no refresh phase measured)"
    else:
        chain_status = "PASS" if broken == 0 and not failures else "MISS"
    return [
        {
            "target": f"protected ≥ {PROTECTED_TARGET}× unauthenticated (redis mode)",
            "value": protected,
            "status": protected_status,
        },
        {"target": "refresh chains never break", "value": broken, "status": chain_status},
    ]


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    header = f"{'mode':<7} {'phase':<32} {'vus':>4} {'requests':>9} {'req/s':>9}"
    header += f" {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'srv cpu':>8} {'gen cpu':>8}"
    print()
    print(header)
    print("-" * len(header))
    for mode, data in report["modes"].items():
        for phase, r in data["phases"].items():
            print(
                f"{mode:<7} {PHASES[phase]:<32} {r['concurrency']:>4} {r['requests']:>9}"
                f" {r['throughput_rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                f" {r['errors']:>7} {fmt(r['server_cpu_pct'], 0) + '%':>8}"
                f" {r['client_cpu_pct']:>7.0f}%"
            )
    print()
    print("ratios (throughput)")
    for mode, data in report["modes"].items():
        for name, value in data["ratios"].items():
            print(f"  {mode:<7} {name:<28} {fmt(value)}")
    for phase, value in report["redis_vs_sqlite"].items():
        if value is not None:
            print(f"  redis/sqlite {PHASES[phase]:<32} {fmt(value)}")
    for mode, message in report["failures"].items():
        print(f"\n[{mode}] FAILED: {message}")
    print()
    print("targets")
    for target in report["targets"]:
        value = target["value"]
        shown = fmt(value) if isinstance(value, float) else str(value)
        print(f"  {target['status']:<5} {target['target']}  (measured: {shown})")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes must be a subset of {','.join(MODES)}")
    return modes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="virtual users per phase")
    parser.add_argument(
        "--login-concurrency", type=int, default=4, help="virtual users of the login phase"
    )
    parser.add_argument("--users", type=int, default=4, help="accounts to register")
    parser.add_argument("--modes", type=parse_modes, default=list(MODES), help="sqlite,redis")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="dedicated Redis database; it is FLUSHDB-ed before the run",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--profile",
        nargs="?",
        const=".svg",
        choices=list(PROFILE_FORMATS),
        help="py-spy the server during the protected phase into $TMPDIR/tokenstile-profile-MODE"
        " + .svg (flamegraph, the default), .txt (collapsed stacks) or .json (speedscope)",
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.concurrency, args.login_concurrency, args.users) <= 0:
        parser.error("--duration, --concurrency, --login-concurrency and --users must be > 0")
    return args


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    results: dict[str, dict[str, PhaseResult]] = {}
    failures: dict[str, str] = {}
    try:
        for mode in args.modes:
            try:
                results[mode] = {r.phase: r for r in run_mode(args, mode)}
            except BenchError as exc:
                failures[mode] = str(exc)
    except KeyboardInterrupt:
        print("\ninterrupted; the server was stopped", file=sys.stderr)
        if not results:
            return 130
        failures["interrupted"] = "the run was interrupted; the modes after it are missing"
    report = build_report(args, results, failures)
    print_report(report)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"\nJSON written to {args.json}")
    if "interrupted" in failures:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
