"""The load benchmark's report: ratios, targets with PASS/MISS, the table it prints."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from bench.driver import PhaseResult

PROTECTED_TARGET = 0.85

PHASES = {
    "healthz": "GET /healthz (unauthenticated)",
    "users_me": "GET /users/me (protected)",
    "refresh": "POST /auth/refresh (chained)",
    "login": "POST /auth/login (Argon2)",
}


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
