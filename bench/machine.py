"""What ran the benchmark: CPU, cores, OS, Python, package and server versions."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import redis

from bench.wrk import wrk_path

PACKAGES = (
    "tokenstile",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pyjwt",
    "pydantic",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
    "hiredis",
    "argon2-cffi",
    "orjson",
)


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "?"


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else "?"
    )


def _git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    revision = _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _output(["git", "-C", str(root), "status", "--porcelain", "--", "src"])
    return f"{revision} (src/ has uncommitted changes)" if dirty not in ("", "?") else revision


def _redis_version(url: str | None) -> str:
    if url is None:
        return "-"
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    except redis.RedisError:
        return "?"
    finally:
        client.close()


async def _postgres_version(url: str | None) -> str:
    if url is None:
        return "-"
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return "?"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def describe(redis_url: str | None, postgres_url: str | None) -> dict[str, str]:
    """A flat description of the machine and the software versions, for the report."""
    cpu = _cpuinfo()
    wrk = wrk_path()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "CPU": cpu.get("model name", platform.processor() or "?"),
        "cores": f"{os.cpu_count()} logical ({cpu.get('cpu cores', '?')} per socket)",
        "memory": _memory(),
        "OS": f"{_os_name()}, Linux {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "tokenstile revision": _git_revision(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "wrk": _output([wrk, "-v"]).split(" Copyright")[0] if wrk else "not installed",
        "Redis server": _redis_version(redis_url),
        "PostgreSQL server": asyncio.run(_postgres_version(postgres_url)),
        "load average (1/5/15 min) at the end": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def machine_section(machine: dict[str, str], load_average_at_start: object) -> list[str]:
    """The "## Machine" section of a results file: ``describe()``'s table and the load
    average when the run began."""
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        f"| load average (1/5/15 min) at the start | {load_average_at_start} |",
        "",
    ]
