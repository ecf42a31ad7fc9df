"""The soak report: verdicts (RSS growth, store size), a Markdown table and a plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.machine import machine_section

RSS_GOAL = 0.10  # growth after warm-up
STORE_GOAL = 0.10  # last third of the steady window against its first third
MIB = 2**20


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in points) / den if den else None


def store_metric(store: str) -> tuple[str, str]:
    """The sample field that says how big the store is, and its label."""
    if store == "redis":
        return "keys", "Redis keys under the prefix"
    return "sessions_rows", "rows in sessions"


def rss_verdict(config: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    warmup, interval = config["warmup_s"], config["interval_s"]
    loaded = [s for s in samples if s["loaded"]]
    base = [s["rss_bytes"] for s in loaded if warmup <= s["t"] < warmup + 3 * interval]
    after = [s for s in loaded if s["t"] >= warmup]
    baseline, final = _median(base), _median([s["rss_bytes"] for s in after[-3:]])
    if baseline is None or final is None:
        return {"status": "n/a"}
    growth = final / baseline - 1
    peak = max(s["rss_bytes"] for s in after) / baseline - 1
    slope = _slope_per_minute([(s["t"], s["rss_bytes"]) for s in after])
    return {
        "baseline_bytes": baseline,
        "final_bytes": final,
        "growth": growth,
        "peak_growth": peak,
        "slope_bytes_per_minute": slope,
        "fds_baseline": _median([s["open_fds"] for s in loaded if warmup <= s["t"]][:3]),
        "fds_final": _median([s["open_fds"] for s in after[-3:]]),
        "fds_max": max(s["open_fds"] for s in after),
        "status": "PASS" if growth < RSS_GOAL else "MISS",
    }


def store_verdict(config: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat when the peak of the last third of the steady window is within 10 % of the
    peak of its first third.

    Steady: after the warm-up and after the first sessions could have reached their
    absolute age and been purged (SESSION_MAX_AGE + PURGE_INTERVAL). Peaks, not means:
    the SQL purge makes a sawtooth, and samples that fall before or after a purge would
    otherwise tilt a mean."""
    field, _label = store_metric(config["store"])
    lifetimes = config["lifetimes"]
    start = max(config["warmup_s"], lifetimes["SESSION_MAX_AGE"] + lifetimes["PURGE_INTERVAL"])
    steady = [s for s in samples if s["loaded"] and s["t"] >= start]
    if len(steady) < 6:
        return {"status": "n/a", "steady_from_s": start}
    third = len(steady) // 3
    first = max(s[field] for s in steady[:third])
    last = max(s[field] for s in steady[-third:])
    ratio = last / first if first else None
    return {
        "field": field,
        "steady_from_s": start,
        "first_third_peak": first,
        "last_third_peak": last,
        "mean": statistics.fmean(s[field] for s in steady),
        "change": None if ratio is None else ratio - 1,
        "max": max(s[field] for s in steady),
        "slope_per_minute": _slope_per_minute([(s["t"], s[field]) for s in steady]),
        "status": "PASS" if ratio is not None and ratio <= 1 + STORE_GOAL else "MISS",
    }


def build_report(
    config: dict[str, Any], machine: dict[str, str], outcome: dict[str, Any]
) -> dict[str, Any]:
    samples = outcome["samples"]
    failed = sum(outcome["tally"]["failed"].values())
    return {
        "config": config,
        "machine": machine,
        **outcome,
        "verdicts": {
            "rss": rss_verdict(config, samples),
            "store": store_verdict(config, samples),
            "unexpected_responses": {"count": failed, "status": "PASS" if failed == 0 else "MISS"},
        },
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f} %"


def _columns(store: str) -> list[tuple[str, str]]:
    common = [("rss_bytes", "RSS MiB"), ("open_fds", "fds"), ("ops_per_s", "ops/s")]
    if store == "redis":
        return [
            *common,
            ("keys", "keys"),
            ("session_keys", "session keys"),
            ("user_index_keys", "index keys"),
            ("key_bytes", "keys' MEMORY USAGE KiB"),
            ("used_memory", "used_memory MiB"),
        ]
    size = ("file_bytes", "file KiB") if store == "sqlite" else ("relation_bytes", "tables KiB")
    return [
        *common,
        ("sessions_rows", "sessions rows"),
        ("live_sessions", "live"),
        ("expired_rows", "expired, not yet purged"),
        ("rate_events_rows", "rate_events rows"),
        size,
    ]


def _cell(key: str, value: Any) -> str:
    if key in ("rss_bytes", "used_memory"):
        return f"{value / MIB:.1f}"
    if key in ("key_bytes", "file_bytes", "relation_bytes"):
        return f"{value / 1024:,.0f}"
    if key == "ops_per_s":
        return f"{value:.1f}"
    return f"{value:,}"


def markdown(report: dict[str, Any], chart_name: str | None) -> str:
    config, tally, verdicts = report["config"], report["tally"], report["verdicts"]
    rss, store = verdicts["rss"], verdicts["store"]
    _field, label = store_metric(config["store"])
    lt = config["lifetimes"]
    lines = [
        f"# Soak: {config['store']}",
        "",
        f"`{config['command']}`: one `tokenstile serve` worker, rate limits off, cheap"
        f" Argon2; ACCESS_TTL {lt['ACCESS_TTL']} s, REFRESH_TTL {lt['REFRESH_TTL']} s,"
        f" SESSION_MAX_AGE {lt['SESSION_MAX_AGE']} s, PURGE_INTERVAL {lt['PURGE_INTERVAL']} s."
        f" {config['duration_s']:g} s of load at {config['rate']:g} logins + refreshes +"
        f" logouts per second ({report['journey_rate']:.1f} journeys/s: log in, `/users/me`,"
        f" {config['refreshes']} refreshes, log out; {100 * config['abandon']:.0f} % abandoned"
        f" without logout), {config['long_chains']} long chains refreshing every 15 s until"
        f" SESSION_MAX_AGE ends them, then {config['drain_s']:g} s of sampling without load."
        f" Samples every {config['interval_s']:g} s; warm-up {config['warmup_s']:g} s."
        f" Whole run {config['elapsed_s']} s.",
        "",
        "## Verdict",
        "",
        "| check | goal | measured | status |",
        "|---|---|---|---|",
    ]
    if rss["status"] != "n/a":
        lines.append(
            f"| server RSS growth after warm-up (median of the last 3 samples against the"
            f" 3 after warm-up) | < {100 * RSS_GOAL:.0f} % | {_pct(rss['growth'])}"
            f" ({rss['baseline_bytes'] / MIB:.1f} → {rss['final_bytes'] / MIB:.1f} MiB; peak"
            f" {_pct(rss['peak_growth'])}; trend {rss['slope_bytes_per_minute'] / 1024:+.0f}"
            f" KiB/min) | {rss['status']} |"
        )
        fds_flat = rss["fds_final"] <= rss["fds_baseline"] + 10
        lines.append(
            f"| open file descriptors | flat | {rss['fds_baseline']:.0f} → {rss['fds_final']:.0f}"
            f" (max {rss['fds_max']}) | {'PASS' if fds_flat else 'MISS'} |"
        )
    if store["status"] != "n/a":
        lines.append(
            f"| store size flat: {label}, peak of the last third of the steady window (from"
            f" {store['steady_from_s']:g} s) against the peak of its first third"
            f" | ≤ +{100 * STORE_GOAL:.0f} % | {store['first_third_peak']:,} →"
            f" {store['last_third_peak']:,} ({_pct(store['change'])}; mean"
            f" {store['mean']:,.0f}; trend {store['slope_per_minute']:+.1f}/min)"
            f" | {store['status']} |"
        )
    unexpected = verdicts["unexpected_responses"]
    lines.append(
        f"| unexpected responses (anything but 200/204) | 0 | {unexpected['count']}"
        f" {tally['failed'] or ''} | {unexpected['status']} |"
    )
    end = report["end_state"]
    if config["store"] == "redis":
        left = (
            f"{end.get('session_keys', '?')} session keys (each unexpired: a key lives until"
            f" its session's expires_at), {end.get('user_index_keys', '?')} user indexes,"
            f" {end.get('stale_index_members', '?')} index members whose session is gone"
            " (the purge drops them)"
        )
    else:
        left = (
            f"{end.get('sessions_rows', '?')} session rows ({end.get('live_sessions', '?')}"
            f" live, {end.get('expired_rows', '?')} expired not yet purged),"
            f" {end.get('rate_events_rows', '?')} rate_events rows"
        )
    lines.append(
        f"| left after {config['drain_s']:g} s without load (SPEC §1 invariant 6) | no expired"
        f" state older than one purge | {left} | – |"
    )
    ok = tally["ok"]
    lines += [
        "",
        f"Requests that succeeded: {ok.get('login', 0):,} logins, {ok.get('refresh', 0):,}"
        f" refreshes, {ok.get('users_me', 0):,} `/users/me`, {ok.get('logout', 0):,} logouts;"
        f" {tally['journeys']:,} journeys, {tally['abandoned']:,} abandoned,"
        f" {tally['shed']} not started (too many in flight); {tally['max_age_ends']} long"
        " chains ended by SESSION_MAX_AGE (expected 401).",
        "",
        *machine_section(report["machine"], config["load_average_at_start"]),
        "## Samples",
        "",
    ]
    columns = _columns(config["store"])
    lines.append("| t s | " + " | ".join(name for _, name in columns) + " |")
    lines.append("|---:|" + "---:|" * len(columns))
    for sample in report["samples"]:
        mark = "" if sample["loaded"] else " (drain)"
        cells = " | ".join(_cell(key, sample.get(key, 0)) for key, _ in columns)
        lines.append(f"| {sample['t']:.0f}{mark} | {cells} |")
    if config["store"] == "redis":
        lines += [
            "",
            "`used_memory` is the whole Redis server's, other databases included; the keys'"
            " `MEMORY USAGE` is this run's own.",
        ]
    if chart_name is not None:
        lines += ["", f"![soak]({chart_name})"]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path, *, chart_name: str | None) -> str:
    text = markdown(report, chart_name)
    path.write_text(text)
    return text


def write_chart(report: dict[str, Any], path: Path) -> bool:
    """A PNG of RSS, descriptors, store size and throughput over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no chart (pip install 'matplotlib>=3.8,<4')")
        return False
    config, samples = report["config"], report["samples"]
    ts = [s["t"] for s in samples]
    _field, label = store_metric(config["store"])
    figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    panels: list[tuple[Any, list[tuple[str, str, float]], str]] = [
        (axes[0], [("rss_bytes", "server RSS", MIB)], "MiB"),
        (axes[1], [("open_fds", "open fds", 1)], "descriptors"),
        (axes[3], [("ops_per_s", "logins+refreshes+logouts", 1)], "per second"),
    ]
    if config["store"] == "redis":
        panels.insert(
            2,
            (
                axes[2],
                [
                    ("keys", "keys under the prefix", 1),
                    ("session_keys", "session keys", 1),
                    ("user_index_keys", "user index keys", 1),
                ],
                "keys",
            ),
        )
    else:
        panels.insert(
            2,
            (
                axes[2],
                [
                    ("sessions_rows", "sessions rows", 1),
                    ("live_sessions", "live sessions", 1),
                    ("rate_events_rows", "rate_events rows", 1),
                ],
                "rows",
            ),
        )
    for ax, series, unit in panels:
        for key, name, scale in series:
            ax.plot(ts, [s.get(key, 0) / scale for s in samples], marker=".", label=name)
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.axvline(config["warmup_s"], color="grey", linestyle=":", linewidth=1)
        ax.axvline(config["duration_s"], color="grey", linestyle="--", linewidth=1)
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds (dotted: end of warm-up; dashed: end of load)")
    verdicts = report["verdicts"]
    figure.suptitle(
        f"tokenstile soak, {config['store']}: RSS {_pct(verdicts['rss'].get('growth'))}"
        f" after warm-up; {label} {_pct(verdicts['store'].get('change'))} over the steady"
        f" window\n{report['machine']['CPU']}, {report['machine']['cores']}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
