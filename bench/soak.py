"""The soak: constant login/refresh/logout churn on one ``tokenstile serve``, sampled.

Usage (from the repository root)::

    .venv/bin/python bench/soak.py [--duration 600] [--rate 50] [--store sqlite|redis|postgres]
        [--interval 10] [--warmup 60] [--drain 150] [--out bench/results]

Starts ``tokenstile serve`` (1 worker, rate limits off, cheap Argon2, short lifetimes:
``ACCESS_TTL=30``, ``REFRESH_TTL=60``, ``SESSION_MAX_AGE=120``, ``PURGE_INTERVAL=20``) and
for ``--duration`` seconds starts journeys at a fixed rate, so that logins, refreshes and
logouts together come to ``--rate`` per second: log in, call ``/users/me``, refresh a few
times, log out — or, for ``--abandon`` of them, just stop, leaving the session to expire
(SPEC §1 invariant 6). A few long chains refresh every 15 s until ``SESSION_MAX_AGE`` ends
them. Every ``--interval`` seconds it samples the server's RSS and open descriptors and
the store's size; after the load it goes on sampling for ``--drain`` seconds, while the
last sessions expire. Writes ``bench/results/soak-<store>.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import os
import random
import secrets
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.connection import HttpConnection, Response, build_request, post_json
from bench.driver import run_async
from bench.errors import REQUEST_ERRORS, BenchError
from bench.machine import describe
from bench.servers import (
    Server,
    drop_postgres,
    flush_redis,
    free_port,
    recreate_postgres,
    running_server,
    tokenstile_env,
    tokenstile_serve,
    upgrade_database,
    wait_healthy,
)
from bench.soak_probes import PostgresProbe, RedisProbe, SqliteProbe, process_sample
from bench.soak_report import build_report, write_chart, write_markdown

STORES = ("sqlite", "redis", "postgres")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LIFETIMES = {
    "ACCESS_TTL": 30,
    "REFRESH_TTL": 60,
    "REMEMBER_ME_TTL": 120,
    "SESSION_MAX_AGE": 120,
    "PURGE_INTERVAL": 20,
}
CHEAP_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024", "ARGON2_PARALLELISM": "1"}
THINK_TIME = (0.3, 1.5)  # seconds between a journey's steps, below the 5 s keep-alive
LONG_CHAIN_PERIOD = 15.0
MAX_IN_FLIGHT = 2000
REMEMBER_ME_SHARE = 0.2
EXPECTED = {"login": 200, "users_me": 200, "refresh": 200, "logout": 204}


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # "refresh 503", "login error"
    journeys: int = 0
    abandoned: int = 0
    shed: int = 0  # journeys not started: too many in flight
    max_age_ends: int = 0  # long chains refused once SESSION_MAX_AGE had passed

    def counted_ops(self) -> int:
        return sum(self.ok[k] for k in ("login", "refresh", "logout"))


class Soak:
    def __init__(self, args: argparse.Namespace, server: Server, probe: Any) -> None:
        self.args = args
        self.server = server
        self.port = server.port
        self.probe = probe
        self.tally = Tally()
        self.samples: list[dict[str, Any]] = []
        self.rng = random.Random(4)
        self.password = "soak-" + secrets.token_urlsafe(18)
        self.usernames = [f"soak{i}" for i in range(args.users)]
        self.stop_at = 0.0

    # -- requests -------------------------------------------------------------------

    async def call(self, conn: HttpConnection, kind: str, request: bytes) -> Response | None:
        """Send ``request``; one retry on a dropped keep-alive connection. The response,
        or None after a transport failure (counted)."""
        for attempt in range(2):
            try:
                response = await conn.send(request)
            except REQUEST_ERRORS:
                conn.close()
                if attempt == 0:
                    continue
                self.tally.failed[f"{kind} error"] += 1
                return None
            if response.status == EXPECTED[kind]:
                self.tally.ok[kind] += 1
            else:
                self.tally.failed[f"{kind} {response.status}"] += 1
            return response
        return None

    async def log_in(self, conn: HttpConnection) -> dict[str, Any] | None:
        body = {
            "username": self.rng.choice(self.usernames),
            "password": self.password,
            "remember_me": self.rng.random() < REMEMBER_ME_SHARE,
        }
        request = build_request(self.port, "POST", "/auth/login", body=orjson.dumps(body))
        response = await self.call(conn, "login", request)
        if response is None or response.status != 200:
            return None
        tokens: dict[str, Any] = orjson.loads(response.body)
        return tokens

    async def refresh(self, conn: HttpConnection, refresh_token: str) -> Response | None:
        request = post_json(self.port, "/auth/refresh", {"refresh_token": refresh_token})
        return await self.call(conn, "refresh", request)

    async def journey(self) -> None:
        conn = HttpConnection(self.port)
        try:
            tokens = await self.log_in(conn)
            if tokens is None:
                return
            await self.think()
            me = build_request(self.port, "GET", "/users/me", token=tokens["access_token"])
            await self.call(conn, "users_me", me)
            for _ in range(self.args.refreshes):
                await self.think()
                response = await self.refresh(conn, tokens["refresh_token"])
                if response is None or response.status != 200:
                    return
                tokens = orjson.loads(response.body)
            if self.rng.random() < self.args.abandon:
                self.tally.abandoned += 1
                return  # the session is left to expire by itself
            await self.think()
            body = orjson.dumps({"refresh_token": tokens["refresh_token"]})
            logout = build_request(
                self.port, "POST", "/auth/logout", body=body, token=tokens["access_token"]
            )
            await self.call(conn, "logout", logout)
        finally:
            conn.close()

    async def long_chain(self) -> None:
        """Refresh every LONG_CHAIN_PERIOD s until the session's absolute age ends it."""
        while time.monotonic() < self.stop_at:
            conn = HttpConnection(self.port)
            try:
                tokens = await self.log_in(conn)
                if tokens is None:
                    await asyncio.sleep(1)
                    continue
                started = time.monotonic()
                while time.monotonic() < self.stop_at:
                    await asyncio.sleep(LONG_CHAIN_PERIOD)
                    conn.close()  # idle longer than the keep-alive timeout
                    request = post_json(
                        self.port, "/auth/refresh", {"refresh_token": tokens["refresh_token"]}
                    )
                    try:
                        response = await conn.send(request)
                    except REQUEST_ERRORS:
                        self.tally.failed["refresh error"] += 1
                        break
                    if response.status == 200:
                        self.tally.ok["refresh"] += 1
                        tokens = orjson.loads(response.body)
                        continue
                    age = time.monotonic() - started
                    if response.status == 401 and age >= LIFETIMES["SESSION_MAX_AGE"] - 1:
                        self.tally.max_age_ends += 1  # expected: the session is too old
                    else:
                        self.tally.failed[f"refresh {response.status}"] += 1
                    break
            finally:
                conn.close()

    async def think(self) -> None:
        await asyncio.sleep(self.rng.uniform(*THINK_TIME))

    # -- the run --------------------------------------------------------------------

    async def register(self) -> None:
        conn = HttpConnection(self.port)
        try:
            for username in self.usernames:
                request = post_json(
                    self.port, "/auth/register", {"username": username, "password": self.password}
                )
                response = await conn.send(request)
                if response.status != 201:
                    raise BenchError(f"register failed: HTTP {response.status} {response.body!r}")
        finally:
            conn.close()

    def journey_rate(self) -> float:
        """Journeys per second for ``--rate`` logins + refreshes + logouts per second."""
        per_journey = 1 + self.args.refreshes + (1 - self.args.abandon)
        return self.args.rate / per_journey

    async def run(self) -> None:
        await wait_healthy(self.server)
        await self.register()
        started = time.monotonic()
        self.stop_at = started + self.args.duration
        sampler = asyncio.create_task(self.sample_until(started, self.stop_at + self.args.drain))
        chains = [asyncio.create_task(self.long_chain()) for _ in range(self.args.long_chains)]
        in_flight: set[asyncio.Task[None]] = set()
        period = 1 / self.journey_rate()
        next_start = started
        while (now := time.monotonic()) < self.stop_at:
            if now >= next_start:
                next_start += period
                if len(in_flight) >= MAX_IN_FLIGHT:
                    self.tally.shed += 1
                    continue
                task = asyncio.create_task(self.journey())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                self.tally.journeys += 1
                continue
            await asyncio.sleep(next_start - now)
        await asyncio.gather(*in_flight, *chains)
        await sampler

    async def sample_until(self, started: float, end: float) -> None:
        next_sample = started
        previous_ops, previous_t = 0, started
        while True:
            now = time.monotonic()
            if self.server.process.poll() is not None:
                raise BenchError(f"the server died:\n{self.server.log_tail()}")
            sample: dict[str, Any] = {"t": round(now - started, 1)}
            sample.update(process_sample(self.server.process.pid))
            store = self.probe.sample()
            sample.update(await store if asyncio.iscoroutine(store) else store)
            ops = self.tally.counted_ops()
            sample["ops_per_s"] = (
                (ops - previous_ops) / (now - previous_t) if now > previous_t else 0
            )
            sample["failed"] = sum(self.tally.failed.values())
            sample["loaded"] = now <= self.stop_at
            previous_ops, previous_t = ops, now
            self.samples.append(sample)
            print(_sample_line(sample), flush=True)
            next_sample += self.args.interval
            if next_sample > end + 0.5:
                return
            await asyncio.sleep(max(0.0, next_sample - time.monotonic()))


def _sample_line(sample: dict[str, Any]) -> str:
    store = " ".join(
        f"{k}={sample[k]}"
        for k in ("keys", "key_bytes", "used_memory", "sessions_rows", "live_sessions")
        if k in sample
    )
    return (
        f"  t={sample['t']:>6.1f}s rss={sample['rss_bytes'] / 2**20:6.1f}MiB"
        f" fds={sample['open_fds']} ops/s={sample['ops_per_s']:.1f}"
        f" failed={sample['failed']} {store}"
    )


def server_env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = tokenstile_env(
        data_dir,
        redis_url=args.redis_url if args.store == "redis" else None,
        database_url=args.postgres_url if args.store == "postgres" else None,
    )
    for name, value in {**LIFETIMES, **CHEAP_ARGON2}.items():
        env[f"TOKENSTILE_{name}"] = str(value)
    return env


def soak(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"tokenstile-soak-{args.store}-") as tmp:
        work_dir = Path(tmp)
        data_dir = work_dir / "data"
        data_dir.mkdir()
        env = server_env(args, data_dir)
        if args.store == "redis":
            flush_redis(args.redis_url)
        if args.store == "postgres":
            run_async(recreate_postgres(args.postgres_url))
            upgrade_database(env, work_dir)
        port = free_port()
        with running_server(work_dir, port, tokenstile_serve(port, 1), env) as server:
            print(f"[soak {args.store}] pid {server.process.pid} on 127.0.0.1:{port}", flush=True)
            probe = make_probe(args, data_dir)
            run = Soak(args, server, probe)
            end_state: dict[str, Any] = {}
            try:
                run_async(run.run())
                end_state = run_async(final_state(args, probe))
            finally:
                close = getattr(probe, "close", None)
                if close is not None:
                    result = close()
                    if asyncio.iscoroutine(result):
                        run_async(result)
            log_lines = len(server.log_path.read_text(errors="replace").splitlines())
        if args.store == "postgres":
            run_async(drop_postgres(args.postgres_url))
        return {
            "samples": run.samples,
            "tally": {
                "ok": dict(run.tally.ok),
                "failed": dict(run.tally.failed),
                "journeys": run.tally.journeys,
                "abandoned": run.tally.abandoned,
                "shed": run.tally.shed,
                "max_age_ends": run.tally.max_age_ends,
            },
            "journey_rate": run.journey_rate(),
            "end_state": end_state,
            "server_log_lines": log_lines,
        }


def make_probe(args: argparse.Namespace, data_dir: Path) -> Any:
    if args.store == "redis":
        return RedisProbe(args.redis_url)
    if args.store == "postgres":
        return PostgresProbe(args.postgres_url)
    return SqliteProbe(data_dir / "tokenstile.db")


async def final_state(args: argparse.Namespace, probe: Any) -> dict[str, Any]:
    """What is left once the drain is over."""
    if isinstance(probe, RedisProbe):
        return {"stale_index_members": probe.stale_index_members(), **probe.sample()}
    store = probe.sample()
    return dict(await store if asyncio.iscoroutine(store) else store)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="logins + refreshes + logouts per second"
    )
    parser.add_argument("--store", choices=STORES, default="sqlite")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    parser.add_argument(
        "--drain",
        type=float,
        default=150.0,
        help="seconds sampled after load (SESSION_MAX_AGE + PURGE_INTERVAL lets all expire)",
    )
    parser.add_argument("--refreshes", type=int, default=3, help="refreshes per journey")
    parser.add_argument("--abandon", type=float, default=0.25, help="share never logged out")
    parser.add_argument("--long-chains", type=int, default=4)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/tokenstile_soak"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if min(args.duration, args.rate, args.interval, args.users) <= 0:
        parser.error("--duration, --rate, --interval and --users must be > 0")
    if not 0 <= args.abandon <= 1 or args.refreshes < 0 or args.warmup >= args.duration:
        parser.error("--abandon in [0, 1], --refreshes >= 0, --warmup < --duration")
    return args


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    load_at_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    started = time.monotonic()
    try:
        outcome = soak(args)
    except BenchError as exc:
        print(f"[soak {args.store}] FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the server was stopped", file=sys.stderr)
        return 130
    config = {
        "command": " ".join(["bench/soak.py", *(argv if argv is not None else sys.argv[1:])]),
        "store": args.store,
        "duration_s": args.duration,
        "rate": args.rate,
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "drain_s": args.drain,
        "refreshes": args.refreshes,
        "abandon": args.abandon,
        "long_chains": args.long_chains,
        "users": args.users,
        "lifetimes": LIFETIMES,
        "elapsed_s": round(time.monotonic() - started),
        "load_average_at_start": load_at_start,
    }
    machine = describe(
        args.redis_url if args.store == "redis" else None,
        args.postgres_url if args.store == "postgres" else None,
    )
    report = build_report(config, machine, outcome)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"soak-{args.store}"
    markdown = write_markdown(report, args.out / f"{stem}.md", chart_name=f"{stem}.png")
    (args.out / f"{stem}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_chart(report, args.out / f"{stem}.png")
    print()
    print(markdown)
    print(f"written: {args.out}/{stem}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
