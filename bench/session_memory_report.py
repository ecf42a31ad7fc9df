"""The memory-per-session report: a Markdown page from ``session_memory``'s results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.machine import machine_section

MIB = 1024**2


def _status(value: float, goal: float) -> str:
    return "PASS" if value <= goal else "MISS"


def _encodings(usage: dict[str, dict[str, int]]) -> str:
    return ", ".join(
        f"{name} {entry['keys']:,} ({entry['bytes'] / entry['keys']:.0f} B each)"
        for name, entry in sorted(usage.items())
    )


def _store_rows(stores: dict[str, Any], goal: int) -> list[str]:
    rows = []
    if "redis" in stores:
        r = stores["redis"]
        rows.append(
            f"| Redis | {r['sessions']:,} keys + {r['users']:,} user indexes"
            " | `INFO memory` used_memory growth ÷ sessions"
            f" | **{r['used_memory_per_session']:.0f}**"
            f" | {_status(r['used_memory_per_session'], goal)} (≤ {goal}) |"
        )
        rows.append(
            f"| Redis | | `MEMORY USAGE` of every session hash and user index ÷ sessions"
            f" ({r['session_hash_bytes_per_session']:.0f} hash +"
            f" {r['index_bytes_per_session']:.0f} index) | {r['memory_usage_per_session']:.0f}"
            f" | {_status(r['memory_usage_per_session'], goal)} (≤ {goal}) |"
        )
    if "sqlite" in stores:
        s = stores["sqlite"]
        rows.append(
            f"| SQLite | {s['rows']:,} rows | file growth after a WAL checkpoint ÷ sessions"
            f" | **{s['file_bytes_per_session']:.0f}** | – |"
        )
        rows.append(
            f"| SQLite | | `dbstat` pages of `sessions` and its 3 indexes ÷ sessions"
            f" | {s['dbstat_bytes_per_session']:.0f} | – |"
        )
        rows.append(
            f"| SQLite | | the same after `VACUUM` | {s['vacuumed_bytes_per_session']:.0f} | – |"
        )
    if "postgres" in stores:
        p = stores["postgres"]
        rows.append(
            f"| PostgreSQL | {p['rows']:,} rows | `pg_total_relation_size('sessions')` growth"
            f" ÷ sessions ({p['heap_bytes_per_session']:.0f} heap +"
            f" {p['index_bytes_per_session']:.0f} indexes), after `VACUUM ANALYZE`"
            f" | **{p['total_bytes_per_session']:.0f}** | – |"
        )
        rows.append(
            f"| PostgreSQL | | the same after `VACUUM FULL`"
            f" | {p['vacuum_full_bytes_per_session']:.0f} | – |"
        )
        rows.append(
            f"| PostgreSQL | | average row, `pg_column_size` | {p['average_row_bytes']:.0f} | – |"
        )
    return rows


def _sizing(stores: dict[str, Any], layouts: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Sizing a deployment",
        "",
        "Live sessions = active users × devices each (4 here); an expired session is gone"
        " by itself (Redis TTL; the SQL purge every `PURGE_INTERVAL`).",
        "",
        "| store | per 1,000,000 live sessions |",
        "|---|---:|",
    ]
    if "redis" in stores:
        per = stores["redis"]["used_memory_per_session"]
        lines.append(f"| Redis, today's layout | {per * 1e6 / MIB:,.0f} MiB |")
        if layouts:
            last = layouts[-1]
            lines.append(
                f"| Redis, the layout of the last row above ({last['layout'].lstrip('… ')}),"
                f" measured on {last['sessions']:,} sessions"
                f" | {last['used_memory_per_session'] * 1e6 / MIB:,.0f} MiB |"
            )
    if "sqlite" in stores:
        per = stores["sqlite"]["file_bytes_per_session"]
        lines.append(f"| SQLite file | {per * 1e6 / MIB:,.0f} MiB |")
    if "postgres" in stores:
        per = stores["postgres"]["total_bytes_per_session"]
        lines.append(f"| PostgreSQL `sessions` + indexes | {per * 1e6 / MIB:,.0f} MiB |")
    lines += [
        "",
        "Add headroom for Redis's own overhead (fragmentation, replication and client"
        " buffers: `maxmemory` ≈ 1.5× the figure) and for PostgreSQL's dead tuples between"
        " autovacuums.",
    ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    goal = config["goal_redis_bytes"]
    lines = [
        "# Memory per live session",
        "",
        f"`{config['command']}`: {config['sessions']:,} live sessions of {config['users']:,}"
        f" users (1–7 each), {config['rotated']:,} of them refreshed once,"
        f" {config['remember_me']:,} with remember-me; user agents of"
        f" {config['mean_user_agent_chars']:.0f} characters on average"
        f" ({config['long_user_agents']:,} longer than 64), IPv4 addresses. Created through"
        f" each store's own `create_session`. Whole run {config['elapsed_s']} s.",
        "",
        *machine_section(report["machine"], config["load_average_at_start"]),
        "## Bytes per live session",
        "",
        "| store | stored | measured by | bytes per session | goal |",
        "|---|---|---|---:|---|",
        *_store_rows(report["stores"], goal),
    ]
    if "redis" in report["stores"]:
        r = report["stores"]["redis"]
        lines += [
            "",
            f"Redis keys by `OBJECT ENCODING`: {_encodings(r['memory_usage_by_encoding'])}."
            " `MEMORY USAGE` leaves out the key's entry in the expiry table and the"
            " main dictionary's buckets; `used_memory` counts everything, and also whatever"
            " other clients of the same server did meanwhile (the layouts below ran in a"
            " private server).",
        ]
    if "postgres" in report["stores"]:
        lines += [
            "",
            "PostgreSQL's growth after concurrent inserts includes the empty pages it adds"
            " ahead under contention (reused by later rows); `VACUUM FULL` shows the rows"
            " packed, the figure to size with once the table has been written for a while.",
        ]
    layouts = report["redis_layouts"]
    if layouts:
        lines += [
            "",
            "## Redis: what the layout costs",
            "",
            f"The first {layouts[0]['sessions']:,} of the same sessions, written in each layout"
            " (hash + expiry + user index with expiry) into a private `redis-server` of the same"
            " version, flushed between layouts. From the third row on, each row keeps the code"
            " changes above it (a server setting only where it says so).",
            "",
            "| layout | change in `stores/redis.py` | used_memory B/session | MEMORY USAGE"
            " B/session | key encodings | goal |",
            "|---|---|---:|---:|---|---|",
        ]
        for row in layouts:
            lines.append(
                f"| {row['layout']} | {row['change']} | {row['used_memory_per_session']:.0f}"
                f" | {row['memory_usage_per_session']:.0f}"
                f" | {_encodings(row['memory_usage_by_encoding'])}"
                f" | {_status(row['used_memory_per_session'], goal)} |"
            )
    lines += ["", *_sizing(report["stores"], layouts)]
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for name, message in report["failures"].items():
            first = message.splitlines()[0] if message else ""
            lines.append(f"- **{name}**: {first}")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path) -> str:
    text = markdown(report)
    path.write_text(text)
    return text
