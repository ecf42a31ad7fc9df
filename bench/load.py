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

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import secrets
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from bench.connection import HOST, HttpConnection, build_request, post_json
from bench.driver import PhaseResult, PhaseSpec, run_async, run_phase
from bench.errors import BenchError
from bench.load_report import PHASES, build_report, print_report
from bench.profiling import PROFILE_FORMATS
from bench.scenarios import FixedRequest, RefreshChain
from bench.servers import (
    Server,
    flush_redis,
    free_port,
    running_server,
    tokenstile_env,
    tokenstile_serve,
    wait_healthy,
)

MODES = ("sqlite", "redis")


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


def run_mode(args: argparse.Namespace, mode: str) -> list[PhaseResult]:
    redis_url = args.redis_url if mode == "redis" else None
    profile_to = None
    if args.profile is not None:
        profile_to = Path(tempfile.gettempdir(), f"tokenstile-profile-{mode}{args.profile}")
    if redis_url is not None:
        flush_redis(redis_url)
    with tempfile.TemporaryDirectory(prefix=f"tokenstile-bench-{mode}-") as tmp:
        work_dir = Path(tmp)
        data_dir = work_dir / "data"
        data_dir.mkdir()
        port = free_port()
        env = tokenstile_env(data_dir, redis_url=redis_url)
        with running_server(work_dir, port, tokenstile_serve(port, workers=1), env) as server:
            print(f"[{mode}] server pid {server.process.pid} on {HOST}:{server.port}", flush=True)
            results = run_async(bench_mode(server, args, profile_to))
    if profile_to is not None and profile_to.exists():
        print(f"  profile of the protected phase: {profile_to}")
    return results


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
