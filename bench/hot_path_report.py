"""The hot-path report: ratios, targets with PASS/MISS, a Markdown table and a bar chart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.driver import PhaseResult
from bench.machine import machine_section

PHASE_LABELS = {
    "healthz": "GET /healthz (unauthenticated)",
    "users_me": "GET /users/me (protected)",
    "refresh": "POST /auth/refresh (chained)",
    "login": "POST /auth/login (Argon2id)",
    "storm_users_me": "GET /users/me during login storm",
    "storm_login": "POST /auth/login during storm",
}
STORES = ("sqlite", "postgres", "redis")
PEER, SEED = "stateless-peer", "seed-example"


@dataclass
class Measurement:
    system: str
    workers: int
    phase: str
    result: PhaseResult


@dataclass(frozen=True)
class Target:
    name: str
    value: Callable[[Callable[[str, str, str], float | None]], float | None]
    meets: Callable[[float], str]  # the status of a measured value


def _at_least(threshold: float, *, stretch: float | None = None, floor: float | None = None):
    def meets(value: float) -> str:
        if stretch is not None and value >= stretch:
            return "PASS (stretch)"
        if value >= threshold:
            return "PASS"
        if floor is not None and value >= floor:
            return "PASS (minimum)"
        return "MISS"

    return meets


def _at_most(threshold: float) -> Callable[[float], str]:
    return lambda value: "PASS" if value <= threshold else "MISS"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _ratio_defs() -> list[
    tuple[str, Callable[[Callable[[str, str, str], float | None]], float | None]]
]:
    """(name, how to compute it from a lookup(system, phase, field)) for one worker count."""
    defs = []
    for store in STORES:
        ts = f"tokenstile-{store}"
        defs.append(
            (
                f"protected / stateless peer ({store})",
                lambda get, ts=ts: _ratio(get(ts, "users_me", "rps"), get(PEER, "users_me", "rps")),
            )
        )
    for store in STORES:
        ts = f"tokenstile-{store}"
        defs.append(
            (
                f"protected / unauthenticated ({store})",
                lambda get, ts=ts: _ratio(get(ts, "users_me", "rps"), get(ts, "healthz", "rps")),
            )
        )
    defs.append(
        (
            "stateless peer: protected / its unauthenticated",
            lambda get: _ratio(get(PEER, "users_me", "rps"), get(PEER, "healthz", "rps")),
        )
    )
    for store in ("sqlite", "postgres"):
        defs.append(
            (
                f"protected {store} / redis",
                lambda get, s=store: _ratio(
                    get(f"tokenstile-{s}", "users_me", "rps"),
                    get("tokenstile-redis", "users_me", "rps"),
                ),
            )
        )
    for store in STORES:
        defs.append(
            (
                f"chained refresh tokenstile-{store} / seed example",
                lambda get, s=store: _ratio(
                    get(f"tokenstile-{s}", "refresh", "rps"), get(SEED, "refresh", "rps")
                ),
            )
        )
    for store in STORES:
        defs.append(
            (
                f"p99 protected, login storm / idle ({store})",
                lambda get, s=store: _ratio(
                    get(f"tokenstile-{s}", "storm_users_me", "p99"),
                    get(f"tokenstile-{s}", "users_me", "p99"),
                ),
            )
        )
    return defs


def _targets() -> list[Target]:
    targets = []
    for store in STORES:
        ts = f"tokenstile-{store}"
        targets.append(
            Target(
                f"protected ≥ 1.0× stateless peer, stretch 1.5× ({store})",
                lambda get, ts=ts: _ratio(get(ts, "users_me", "rps"), get(PEER, "users_me", "rps")),
                _at_least(1.0, stretch=1.5),
            )
        )
    for store in STORES:
        ts = f"tokenstile-{store}"
        targets.append(
            Target(
                f"protected ≥ 0.85× unauthenticated ({store})",
                lambda get, ts=ts: _ratio(get(ts, "users_me", "rps"), get(ts, "healthz", "rps")),
                _at_least(0.85),
            )
        )
    targets.append(
        Target(
            "protected sqlite ≥ 0.8× redis",
            lambda get: _ratio(
                get("tokenstile-sqlite", "users_me", "rps"),
                get("tokenstile-redis", "users_me", "rps"),
            ),
            _at_least(0.8),
        )
    )
    targets.append(
        Target(
            "chained refresh tokenstile-redis ≥ 2.5× seed example (≥ 2.0× at least)",
            lambda get: _ratio(
                get("tokenstile-redis", "refresh", "rps"), get(SEED, "refresh", "rps")
            ),
            _at_least(2.5, floor=2.0),
        )
    )

    def broken(get: Callable[[str, str, str], float | None]) -> float | None:
        counts = [get(f"tokenstile-{s}", "refresh", "errors") for s in STORES]
        measured = [c for c in counts if c is not None]
        return float(sum(measured)) if measured else None

    targets.append(
        Target("zero broken refresh chains (tokenstile, all stores)", broken, _at_most(0))
    )
    for store in STORES:
        ts = f"tokenstile-{store}"
        targets.append(
            Target(
                f"p99 protected during login storm ≤ 2× idle ({store})",
                lambda get, ts=ts: _ratio(
                    get(ts, "storm_users_me", "p99"), get(ts, "users_me", "p99")
                ),
                _at_most(2.0),
            )
        )
    return targets


def _lookup(measurements: list[Measurement], workers: int):
    table = {(m.system, m.phase): m.result for m in measurements if m.workers == workers}

    def get(system: str, phase: str, field: str) -> float | None:
        result = table.get((system, phase))
        if result is None:
            return None
        return {
            "rps": result.throughput_rps,
            "p99": result.p99_ms,
            "errors": float(result.errors),
        }[field]

    return get


def build_report(
    *,
    config: dict[str, Any],
    machine: dict[str, str],
    measurements: list[Measurement],
    failures: dict[str, str],
) -> dict[str, Any]:
    workers = list(config["workers"])
    lookups = {w: _lookup(measurements, w) for w in workers}
    ratios = [
        {"ratio": name, "values": {str(w): compute(lookups[w]) for w in workers}}
        for name, compute in _ratio_defs()
    ]
    targets = []
    for target in _targets():
        cells = {}
        for w in workers:
            value = target.value(lookups[w])
            cells[str(w)] = {
                "value": value,
                "status": "n/a" if value is None else target.meets(value),
            }
        targets.append({"target": target.name, "values": cells})
    return {
        "config": config,
        "machine": machine,
        "results": [
            {"system": m.system, "workers": m.workers, **asdict(m.result)} for m in measurements
        ],
        "ratios": ratios,
        "targets": targets,
        "failures": failures,
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _cpu(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def markdown(report: dict[str, Any], chart_name: str | None) -> str:
    config = report["config"]
    workers = [str(w) for w in config["workers"]]
    heads = [f"{w} worker{'s' if w != '1' else ''}" for w in workers]
    lines = [
        "# Hot path benchmark",
        "",
        f"`{config['command']}`: {config['duration_s']:g} s per phase after"
        f" {config['warmup_s']:g} s warm-up, {config['concurrency']} connections"
        f" ({config['login_concurrency']} for login and the login storm), fixed GETs driven by"
        f" {config['client']}, refresh and login by the asyncio driver; whole run"
        f" {config['elapsed_s']} s. One server at a time; load generator on the same cores.",
        "",
        *machine_section(report["machine"], config.get("load_average_at_start", "?")),
        "## Results",
        "",
        "| workers | server | phase | client | conns | req/s | p50 ms | p99 ms | errors"
        " | server CPU | client CPU |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['workers']} | {r['system']} | {PHASE_LABELS.get(r['phase'], r['phase'])}"
            f" | {r['client']} | {r['concurrency']} | {_fmt(r['throughput_rps'], 0)}"
            f" | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']}"
            f" | {_cpu(r['server_cpu_pct'])} | {_cpu(r['client_cpu_pct'])} |"
        )
    lines += [
        "",
        "errors: failed requests of the phase (warm-up included for the asyncio driver); in"
        " a chained-refresh phase each one is a broken chain. CPU: percent of one core"
        " (server: all its processes).",
        "",
        "## Ratios",
        "",
        "Throughput ratios unless the name says p99.",
        "",
        f"| ratio | {' | '.join(heads)} |",
        f"|---|{'---:|' * len(workers)}",
    ]
    for row in report["ratios"]:
        cells = " | ".join(_fmt(row["values"][w]) for w in workers)
        lines.append(f"| {row['ratio']} | {cells} |")
    lines += ["", "## Targets", "", f"| target | {' | '.join(heads)} |"]
    lines.append(f"|---|{'---|' * len(workers)}")
    for row in report["targets"]:
        cells = []
        for w in workers:
            cell = row["values"][w]
            digits = 0 if row["target"].startswith("zero") else 2
            cells.append(f"{cell['status']} ({_fmt(cell['value'], digits)})")
        lines.append(f"| {row['target']} | {' | '.join(cells)} |")
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for name, message in report["failures"].items():
            first = message.splitlines()[0] if message else ""
            lines.append(f"- **{name}**: {first}")
    if chart_name is not None:
        lines += ["", f"![throughput and p99]({chart_name})"]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict[str, Any], path: Path, *, chart_name: str | None) -> str:
    text = markdown(report, chart_name)
    path.write_text(text)
    return text


def write_chart(report: dict[str, Any], path: Path) -> bool:
    """A PNG: throughput per phase and server for each worker count, and storm p99.

    Returns False (with a message) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no chart (pip install 'matplotlib>=3.8,<4')")
        return False
    workers = list(report["config"]["workers"])
    systems = [PEER, *(f"tokenstile-{s}" for s in STORES), SEED]
    phases = ["healthz", "users_me", "refresh", "login"]
    by_key = {(r["system"], r["workers"], r["phase"]): r for r in report["results"]}
    figure, axes = plt.subplots(1, len(workers) + 1, figsize=(6 * (len(workers) + 1), 5.5))
    width = 0.8 / len(systems)
    for ax, w in zip(axes, workers, strict=False):
        for i, system in enumerate(systems):
            values = [
                by_key[(system, w, p)]["throughput_rps"] if (system, w, p) in by_key else 0
                for p in phases
            ]
            xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(phases))]
            bars = ax.bar(xs, values, width, label=system)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v else "" for v in values], fontsize=6)
        ax.set_yscale("log")
        ax.set_xticks(range(len(phases)), ["/healthz", "/users/me", "refresh\n(chained)", "login"])
        ax.set_ylabel("requests/s (log)")
        ax.set_title(f"throughput, {w} worker{'s' if w != 1 else ''}")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    labels, idle, storm = [], [], []
    for w in workers:
        for store in STORES:
            key = (f"tokenstile-{store}", w)
            if (*key, "users_me") in by_key and (*key, "storm_users_me") in by_key:
                labels.append(f"{store}\n{w}w")
                idle.append(by_key[(*key, "users_me")]["p99_ms"])
                storm.append(by_key[(*key, "storm_users_me")]["p99_ms"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], idle, 0.4, label="idle")
    ax.bar([x + 0.2 for x in xs], storm, 0.4, label="during login storm")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("p99 ms")
    ax.set_title("/users/me p99: idle vs login storm")
    ax.legend(fontsize=8)
    machine = report["machine"]
    figure.suptitle(
        f"tokenstile hot path: {machine['CPU']}, {machine['cores']}, {machine['Python']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
