"""The hot-path benchmark: tokenstile side by side with a stateless peer and the seed example.

Usage (from the repository root)::

    .venv/bin/python bench/hot_path.py [--duration 5] [--warmup 1] [--concurrency 32]
        [--workers 1,2] [--stores sqlite,postgres,redis] [--client auto|wrk|asyncio]

For each worker count, one server at a time: ``tokenstile serve`` on each store
(``/healthz``, ``/users/me``, chained refresh, login, and ``/users/me`` during a login
storm), the stateless peer (``bench/stateless_peer.py``: ``/healthz`` and ``/users/me``
with tokenstile's tokens) and the seed example (``bench/seed_example.py``: chained
refresh). Writes ``bench/results/hot-path.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

import orjson

from bench.connection import HOST, HttpConnection, build_request, post_json
from bench.driver import PhaseResult, PhaseSpec, run_async, run_phase
from bench.errors import BenchError
from bench.hot_path_report import Measurement, build_report, write_chart, write_markdown
from bench.machine import describe
from bench.scenarios import FixedRequest, RefreshChain, Scenario
from bench.servers import (
    Server,
    flush_redis,
    free_port,
    recreate_postgres,
    running_server,
    tokenstile_env,
    tokenstile_serve,
    upgrade_database,
    uvicorn_app,
    wait_healthy,
)
from bench.wrk import WrkPhase, run_wrk_phase, wrk_path

STORES = ("sqlite", "postgres", "redis")
PEER, SEED = "stateless-peer", "seed-example"
STORM_MARGIN = 0.5  # the logins outlast the measured protected window
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Account:
    username: str
    password: str


class HotPath:
    """One run: the servers one after another, every measurement collected."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.use_wrk = args.client == "wrk" or (args.client == "auto" and wrk_path() is not None)
        self.secret = secrets.token_urlsafe(48)  # shared by tokenstile and the peer
        self.password = "bench-" + secrets.token_urlsafe(24)
        self.measurements: list[Measurement] = []
        self.failures: dict[str, str] = {}
        self.tokens: dict[int, list[str]] = {}  # access tokens for the peer, by workers

    # -- phases ---------------------------------------------------------------------

    async def get_phase(
        self, name: str, server: Server, path: str, tokens: list[str] | None
    ) -> PhaseResult:
        """A fixed GET, each virtual user with its own token: by wrk, or the driver."""
        args = self.args
        if self.use_wrk:
            spec = WrkPhase(name, path, tokens, args.concurrency, args.duration, args.warmup)
            return await run_wrk_phase(spec, server.port, server.process.pid)
        scenarios: list[Scenario] = [
            FixedRequest(
                build_request(server.port, "GET", path, token=tokens[i] if tokens else None)
            )
            for i in range(args.concurrency)
        ]
        spec_ = PhaseSpec(name, scenarios, args.duration, args.warmup)
        return await run_phase(spec_, server.port, server.process.pid)

    def chains(self, port: int, accounts: list[Account]) -> PhaseSpec:
        chains: list[Scenario] = [
            RefreshChain(port, accounts[i % len(accounts)].username, self.password)
            for i in range(self.args.concurrency)
        ]
        return PhaseSpec("refresh", chains, self.args.duration, self.args.warmup)

    def logins(self, port: int, accounts: list[Account], *, duration: float) -> PhaseSpec:
        scenarios: list[Scenario] = [
            FixedRequest(
                post_json(
                    port,
                    "/auth/login",
                    {"username": accounts[i % len(accounts)].username, "password": self.password},
                )
            )
            for i in range(self.args.login_concurrency)
        ]
        warmup = 0.0 if duration != self.args.duration else self.args.warmup
        return PhaseSpec("login", scenarios, duration, warmup)

    async def storm(
        self, server: Server, accounts: list[Account], tokens: list[str]
    ) -> tuple[PhaseResult, PhaseResult]:
        """``/users/me`` under the usual load while ``login_concurrency`` users log in."""
        args = self.args
        logins = self.logins(server.port, accounts, duration=args.warmup + args.duration)
        logins.duration += STORM_MARGIN
        protected, login = await asyncio.gather(
            self.get_phase("storm_users_me", server, "/users/me", tokens),
            run_phase(logins, server.port, server.process.pid),
        )
        login.phase = "storm_login"
        return protected, login

    # -- servers --------------------------------------------------------------------

    def record(self, system: str, workers: int, result: PhaseResult) -> None:
        self.measurements.append(Measurement(system, workers, result.phase, result))
        r = result
        print(
            f"    {r.phase:<15} {r.throughput_rps:>9.1f} req/s  p50 {r.p50_ms:7.2f} ms"
            f"  p99 {r.p99_ms:7.2f} ms  errors {r.errors}",
            flush=True,
        )

    def check_alive(self, server: Server, phase: str) -> None:
        if server.process.poll() is not None:
            raise BenchError(f"the server died during {phase}:\n{server.log_tail()}")

    def tokenstile(self, store: str, workers: int) -> None:
        system = f"tokenstile-{store}"
        with tempfile.TemporaryDirectory(prefix=f"tokenstile-hot-{store}-") as tmp:
            work_dir = Path(tmp)
            data_dir = work_dir / "data"
            data_dir.mkdir()
            redis_url = self.args.redis_url if store == "redis" else None
            database_url = self.args.postgres_url if store == "postgres" else None
            env = tokenstile_env(
                data_dir, secret_key=self.secret, redis_url=redis_url, database_url=database_url
            )
            if redis_url is not None:
                flush_redis(redis_url)
            if database_url is not None:
                run_async(recreate_postgres(database_url))
                upgrade_database(env, work_dir)
            port = free_port()
            with running_server(work_dir, port, tokenstile_serve(port, workers), env) as server:
                print(f"[{system}, {workers}w] pid {server.process.pid} on {HOST}:{port}")
                run_async(self.tokenstile_phases(system, workers, server))

    async def tokenstile_phases(self, system: str, workers: int, server: Server) -> None:
        await wait_healthy(server)
        accounts = await self.register(server.port)
        tokens = await self.open_sessions(server.port, accounts)
        self.tokens.setdefault(workers, tokens)
        pid = server.process.pid
        steps: list[Callable[[], Awaitable[PhaseResult]]] = [
            lambda: self.get_phase("healthz", server, "/healthz", None),
            lambda: self.get_phase("users_me", server, "/users/me", tokens),
            lambda: run_phase(self.chains(server.port, accounts), server.port, pid),
            lambda: run_phase(
                self.logins(server.port, accounts, duration=self.args.duration), server.port, pid
            ),
        ]
        for step in steps:
            result = await step()
            self.record(system, workers, result)
            self.check_alive(server, result.phase)
        for result in await self.storm(server, accounts, tokens):
            self.record(system, workers, result)
        self.check_alive(server, "the login storm")

    async def register(self, port: int) -> list[Account]:
        conn = HttpConnection(port)
        accounts = []
        try:
            for index in range(self.args.users):
                account = Account(f"bench{index}", self.password)
                response = await conn.send(post_json(port, "/auth/register", asdict(account)))
                if response.status != 201:
                    raise BenchError(f"register failed: HTTP {response.status} {response.body!r}")
                accounts.append(account)
        finally:
            conn.close()
        return accounts

    async def open_sessions(self, port: int, accounts: list[Account]) -> list[str]:
        """One session (access token) per virtual user, ``login_concurrency`` at a time."""
        tokens: list[str] = []
        queue = list(range(self.args.concurrency))

        async def log_in() -> None:
            conn = HttpConnection(port)
            try:
                while queue:
                    account = accounts[queue.pop() % len(accounts)]
                    response = await conn.send(post_json(port, "/auth/login", asdict(account)))
                    if response.status != 200:
                        raise BenchError(f"login failed: HTTP {response.status} {response.body!r}")
                    tokens.append(orjson.loads(response.body)["access_token"])
            finally:
                conn.close()

        await asyncio.gather(*(log_in() for _ in range(self.args.login_concurrency)))
        return tokens

    def peer(self, workers: int) -> None:
        tokens = self.tokens.get(workers)
        if not tokens:
            raise BenchError("no tokenstile server issued tokens for the peer to verify")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSTILE_")}
        env["TOKENSTILE_SECRET_KEY"] = self.secret
        with tempfile.TemporaryDirectory(prefix="tokenstile-hot-peer-") as tmp:
            port = free_port()
            command = uvicorn_app("stateless_peer:app", port, workers)
            with running_server(Path(tmp), port, command, env) as server:
                print(f"[{PEER}, {workers}w] pid {server.process.pid} on {HOST}:{port}")
                run_async(self.peer_phases(workers, server, tokens))

    async def peer_phases(self, workers: int, server: Server, tokens: list[str]) -> None:
        await wait_healthy(server)
        for phase, path, with_tokens in (
            ("healthz", "/healthz", None),
            ("users_me", "/users/me", tokens),
        ):
            self.record(PEER, workers, await self.get_phase(phase, server, path, with_tokens))
            self.check_alive(server, phase)

    def seed(self, workers: int) -> None:
        flush_redis(self.args.redis_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENSTILE_", "SEED_"))}
        env["SEED_REDIS_URL"] = self.args.redis_url
        env["SEED_SECRET_KEY"] = secrets.token_urlsafe(48)
        with tempfile.TemporaryDirectory(prefix="tokenstile-hot-seed-") as tmp:
            port = free_port()
            command = uvicorn_app("seed_example:app", port, workers)
            with running_server(Path(tmp), port, command, env) as server:
                print(f"[{SEED}, {workers}w] pid {server.process.pid} on {HOST}:{port}")
                run_async(self.seed_phases(workers, server))

    async def seed_phases(self, workers: int, server: Server) -> None:
        await wait_healthy(server, "/openapi.json")  # the example has no health route
        spec = self.chains(server.port, [Account("seed", self.password)])
        self.record(SEED, workers, await run_phase(spec, server.port, server.process.pid))
        self.check_alive(server, "refresh")

    def run(self) -> None:
        for workers in self.args.workers:
            for store in self.args.stores:
                self.attempt(f"tokenstile-{store}, {workers}w", self.tokenstile, store, workers)
            self.attempt(f"{PEER}, {workers}w", self.peer, workers)
            self.attempt(f"{SEED}, {workers}w", self.seed, workers)

    def attempt(self, name: str, bench: Callable[..., None], *args: object) -> None:
        try:
            bench(*args)
        except BenchError as exc:
            print(f"[{name}] FAILED: {exc}", file=sys.stderr)
            self.failures[name] = str(exc)


def parse_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items or any(item not in choices for item in items):
            raise argparse.ArgumentTypeError(f"a subset of {','.join(choices)}")
        return items

    return parse


def parse_workers(text: str) -> list[int]:
    try:
        workers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("worker counts such as 1,2") from None
    if not workers or min(workers) < 1:
        raise argparse.ArgumentTypeError("worker counts such as 1,2")
    return workers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="connections per phase")
    parser.add_argument(
        "--login-concurrency", type=int, default=4, help="virtual users logging in (and storm)"
    )
    parser.add_argument("--users", type=int, default=4, help="accounts to register")
    parser.add_argument("--workers", type=parse_workers, default=[1, 2], help="e.g. 1,2")
    parser.add_argument(
        "--stores", type=parse_list(STORES), default=list(STORES), help=",".join(STORES)
    )
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "asyncio"],
        default="auto",
        help="who drives the fixed GET phases (auto: wrk when on PATH)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="dedicated Redis database (tokenstile and the seed); FLUSHDB-ed before use",
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/tokenstile_bench",
        help="a database that is dropped and created again before use",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    if min(args.duration, args.concurrency, args.login_concurrency, args.users) <= 0:
        parser.error("--duration, --concurrency, --login-concurrency and --users must be > 0")
    return args


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    run = HotPath(args)
    started = time.monotonic()
    load_at_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    interrupted = False
    try:
        run.run()
    except KeyboardInterrupt:
        print("\ninterrupted; the servers were stopped", file=sys.stderr)
        interrupted = True
        run.failures["interrupted"] = "the run was interrupted; later servers are missing"
    redis_url = args.redis_url
    postgres_url = args.postgres_url if "postgres" in args.stores else None
    report = build_report(
        config={
            "command": " ".join(
                ["bench/hot_path.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "login_concurrency": args.login_concurrency,
            "workers": args.workers,
            "stores": args.stores,
            "client": "wrk" if run.use_wrk else "asyncio",
            "elapsed_s": round(time.monotonic() - started),
            "load_average_at_start": load_at_start,
        },
        machine=describe(redis_url, postgres_url),
        measurements=run.measurements,
        failures=run.failures,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = write_markdown(report, args.out / "hot-path.md", chart_name="hot-path.png")
    (args.out / "hot-path.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_chart(report, args.out / "hot-path.png")
    print()
    print(markdown)
    print(f"written: {args.out}/hot-path.md, .json, .png")
    if interrupted:
        return 130
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
