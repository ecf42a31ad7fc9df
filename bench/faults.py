"""Faults under load, longer than CI runs them: virtual users chaining refreshes while a
store (or a worker) is stopped, frozen or killed, and what they saw.

Usage (from the repository root)::

    .venv/bin/python bench/faults.py [--users 64] [--before 5] [--duration 5]
        [--max-after 15] [--groups redis,postgres,cluster,workers,redis-mode]
        [--out bench/results]

Each group starts its own private store (a persistent ``redis-server`` with
``appendfsync always``, a PostgreSQL server in a temporary directory, a three-master
Redis Cluster) and one ``tokenstile serve`` on it, registers ``--users`` users, then runs
each of its faults in turn: ``--before`` seconds of load, the fault for ``--duration``
seconds, then load until ``QUIET_SECONDS`` without a failure (at most ``--max-after``).
The driver and the faults are the CI tests' own (``tests/faults``). Writes
``bench/results/faults.md`` and ``.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `bench` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson

from bench.machine import describe, machine_section
from tests.faults import deployments
from tests.faults.deployments import Fault, WorkerKill
from tests.faults.load import QUIET_SECONDS, FaultLoad, FaultReport

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GROUPS = ("redis", "postgres", "cluster", "workers", "redis-mode")
MAX_RECOVERY_S = 10.0
WORKERS = 2
AFTERMATH_S = 2.0

Scenario = tuple[str, Fault]
"""(group label, fault)."""


@asynccontextmanager
async def deployment(
    group: str, workdir: Path, users: int
) -> AsyncIterator[tuple[FaultLoad, list[Fault], dict[str, Any]]]:
    """The service of ``group`` on its private stores, its registered users, its faults,
    and what to note about it."""
    async with AsyncExitStack() as stack:
        data = workdir / f"{group}-data"
        extra: dict[str, str] = {}
        workers = 1
        note: dict[str, Any] = {"group": group}
        kill: WorkerKill | None = None
        faults: list[Fault]
        if group == "redis":
            redis = stack.enter_context(deployments.private_redis())
            extra = {"redis_url": redis.url}
            faults = deployments.redis_faults(redis)
            note["store"] = "redis-server, appendonly yes, appendfsync always; users in SQLite"
        elif group == "postgres":
            postgres = stack.enter_context(deployments.private_postgres())
            extra = {"database_url": postgres.sqlalchemy_url}
            faults = deployments.postgres_faults(postgres)
            note["store"] = "PostgreSQL (users and sessions), whole server signalled"
        elif group == "cluster":
            cluster = stack.enter_context(deployments.private_cluster())
            extra = {"redis_url": cluster.url, "redis_cluster": "true"}
            faults = deployments.cluster_faults(cluster)
            note["store"] = "3-master Redis Cluster, appendfsync always; users in SQLite"
        elif group == "workers":
            workers = WORKERS
            faults = []
            note["store"] = f"SQLite, tokenstile serve --workers {WORKERS}"
        else:  # redis-mode: users in PostgreSQL, sessions in Redis
            postgres = stack.enter_context(deployments.private_postgres())
            redis = stack.enter_context(deployments.private_redis())
            extra = {
                "database_url": postgres.sqlalchemy_url,
                "redis_url": redis.url,
            }
            faults = [Fault("PostgreSQL SIGKILL, restart", postgres.kill, postgres.start)]
            note["store"] = "users in PostgreSQL, sessions in Redis; PostgreSQL killed"
        settings = deployments.service_settings(data, **extra)
        service = stack.enter_context(
            deployments.running_service(settings, workdir, workers=workers)
        )
        if group == "workers":
            kill = WorkerKill(service, workers)
            faults = [kill.fault()]
        load = FaultLoad(service.base_url, users)
        await load.register()
        note["kill"] = kill
        yield load, faults, note


def scenario_row(report: FaultReport, note: dict[str, Any]) -> dict[str, Any]:
    row = {
        "group": note["group"],
        "store": note["store"],
        **report.summary(),
        "fault_s": round(report.fault_ended - report.fault_started, 2),
        "passed": not report.failures(max_recovery_s=MAX_RECOVERY_S),
        "problems": report.failures(max_recovery_s=MAX_RECOVERY_S),
    }
    during = {"since": report.fault_in_effect, "until": report.fault_lifted}
    row["during_fault"] = dict(sorted(report.statuses(**during).items()))
    just_after = {"since": report.fault_ended, "until": report.fault_ended + AFTERMATH_S}
    row["aftermath"] = dict(sorted(report.statuses(**just_after).items()))
    kill: WorkerKill | None = note.get("kill")
    if kill is not None:
        row["worker_connections_cut"] = kill.connections_cut
        replaced = kill.wait_for_replacement()
        row["worker_replaced_after_s"] = None if replaced is None else round(replaced, 2)
    if note["group"] == "redis-mode":
        promise = (
            report.succeeded("login", **during) == 0
            and report.failed("login", **during) > 0
            and report.failed("refresh", **during) == 0
            and report.failed("users_me", **during) == 0
        )
        row["logins_refused_refresh_went_on"] = promise
        row["passed"] = row["passed"] and promise
    return row


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="tokenstile-faults-"))
    try:
        for group in args.groups:
            async with deployment(group, workdir, args.users) as (load, faults, note):
                for fault in faults:
                    during = 0.0 if group == "workers" else args.duration
                    report = await load.run(
                        f"{group}: {fault.name}",
                        begin=fault.begin,
                        end=fault.end,
                        before=args.before,
                        during=during,
                        max_after=args.max_after,
                    )
                    row = scenario_row(report, note)
                    rows.append(row)
                    verdict = "ok" if row["passed"] else f"FAILED {row['problems']}"
                    print(
                        f"[faults] {row['scenario']}: {row['requests']} requests, "
                        f"recovery {row['recovery_s']} s, {verdict}",
                        flush=True,
                    )
    finally:
        if all(row["passed"] for row in rows):
            shutil.rmtree(workdir, ignore_errors=True)
        else:  # the service logs (serve-<port>.log) say why
            print(f"[faults] kept {workdir} for its logs", flush=True)
    return rows


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _postgres_binary() -> list[str]:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return [str(found[-1]) if found else "postgres", "--version"]


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    lines = [
        "# Faults under load",
        "",
        f"`{config['command']}` — {config['users']} virtual users, each chaining "
        "refresh → `GET /users/me` (body transport) and logging out and in again now and "
        f"then; {config['before_s']} s of load, then the fault for {config['duration_s']} s "
        f"(a worker kill is instantaneous), then load until {QUIET_SECONDS} s pass without a "
        f"failure (at most {config['max_after_s']} s). Store timeout "
        f"{deployments.STORE_TIMEOUT} s, rate limits off. Took {config['elapsed_s']} s.",
        "",
        "The four counts: responses other than 2xx/401/429/503; revoked tokens accepted "
        "(probes of sessions the users' own logouts ended, during and after the fault); "
        "sessions lost (a user's last refresh token refused although that user never "
        "logged it out, checked after the fault for every user); recovery, the seconds "
        "from the store's return to the start of the unbroken run of successes "
        f"(must be ≤ {MAX_RECOVERY_S:g} s, tokenstile is never restarted). *Crossed*: "
        "refreshes answered with tokens of another session than the presented one's "
        "(must be 0).",
        "",
        "| scenario | bad statuses | revoked accepted / probes | lost / checked | "
        "crossed | recovery s | fault s | requests | req/s | p50 ms | p99 ms | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["scenarios"]:
        lines.append(
            f"| {row['scenario']} | {row['bad_statuses']} | "
            f"{row['revoked_accepted']} / {row['revoked_probes']} | "
            f"{row['lost_sessions']} / {row['checked_sessions']} | "
            f"{row['crossed_sessions']} | {row['recovery_s']} | "
            f"{row['fault_s']} | {row['requests']} | {row['throughput_rps']} | "
            f"{row['p50_ms']} | {row['p99_ms']} | {'ok' if row['passed'] else 'FAILED'} |"
        )
    lines += ["", "## Status counts", ""]
    for row in report["scenarios"]:
        lines.append(f"**{row['scenario']}** ({row['store']})")
        lines.append("")
        lines.append(f"- whole run: {_counts(row['statuses'])}")
        lines.append(f"- while the fault held: {_counts(row['during_fault'])}")
        lines.append(f"- in the {AFTERMATH_S:g} s after it ended: {_counts(row['aftermath'])}")
        if "worker_replaced_after_s" in row:
            lines.append(
                f"- the killed worker held {row['worker_connections_cut']} client connections; "
                f"uvicorn replaced it after {row['worker_replaced_after_s']} s"
            )
        if "logins_refused_refresh_went_on" in row:
            lines.append(
                "- logins answered 503 while PostgreSQL was down, refresh and /users/me went "
                f"on: {'yes' if row['logins_refused_refresh_went_on'] else 'NO'}"
            )
        if row["problems"]:
            lines.append(f"- problems: {row['problems']}")
        lines.append("")
    lines += machine_section(report["machine"], config["load_average_at_start"])
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} × {value}" for key, value in counts.items()) or "none"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load first")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds each fault lasts")
    parser.add_argument("--max-after", type=float, default=15.0)
    parser.add_argument(
        "--groups",
        type=lambda text: [g for g in text.split(",") if g],
        default=list(GROUPS),
        help=f"comma-separated, of {','.join(GROUPS)}",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if min(args.users, args.before, args.max_after) <= 0 or args.duration < 0:
        parser.error("--users, --before and --max-after must be > 0, --duration >= 0")
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {sorted(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    started = time.monotonic()
    try:
        rows = asyncio.run(run_all(args))
    except KeyboardInterrupt:
        print("\ninterrupted; the servers were stopped", file=sys.stderr)
        return 130
    machine = describe(None, None)
    machine["Redis server"] = _version(["redis-server", "--version"])
    machine["PostgreSQL server"] = _version(_postgres_binary())
    report = {
        "config": {
            "command": " ".join(["bench/faults.py", *(argv if argv is not None else sys.argv[1:])]),
            "users": args.users,
            "before_s": args.before,
            "duration_s": args.duration,
            "max_after_s": args.max_after,
            "groups": args.groups,
            "elapsed_s": round(time.monotonic() - started),
            "load_average_at_start": load_at_start,
        },
        "scenarios": rows,
        "machine": machine,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (args.out / "faults.md").write_text(text + "\n")
    (args.out / "faults.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print()
    print(text)
    print(f"written: {args.out}/faults.md, .json")
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
