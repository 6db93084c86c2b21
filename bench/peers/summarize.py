#!/usr/bin/env python3
"""Summarises `bench/peers/run`: one Markdown table per scenario, medians over runs.

Reads RESULTS/<scenario>/<server>/run<k>/report.json (written by `signalbox-bench`),
prints the tables and writes them to RESULTS/summary.md. Each peer's figure is followed
by its ratio to Signalbox's, `(×r)` = peer ÷ Signalbox: above 1 the peer uses more
(memory, CPU, time) or does more (deliveries/s, publishes/s). Loss and duplicates are the
worst run, not the median: one lossy run is worth seeing.

When both Signalbox and `floor` (bench/peers/floor, the least a server can do for the
same protocol subset) ran a scenario, a line under its table gives Signalbox ÷ floor for
latency, CPU and memory, with the targets (latency p99 ≤ 1.2× the floor, fanout CPU per
delivery ≤ 1.3× the floor).

    python3 bench/peers/summarize.py [--results results/peers] [SCENARIO...]

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REFERENCE = "signalbox"
FLOOR = "floor"
SERVER_ORDER = ["signalbox", "floor", "node-ws", "python-socketio", "signalbox-cluster", "socketio-redis"]
SCENARIO_ORDER = ["idle", "fanout", "many", "latency", "scale"]

Report = dict


def get(*path: str) -> Callable[[Report], Optional[float]]:
    def read(report: Report) -> Optional[float]:
        value = report
        for key in path:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)

    return read


def scaled(read: Callable[[Report], Optional[float]], factor: float) -> Callable[[Report], Optional[float]]:
    def scale(report: Report) -> Optional[float]:
        value = read(report)
        return None if value is None else value * factor

    return scale


@dataclass(frozen=True)
class Metric:
    header: str
    read: Callable[[Report], Optional[float]]
    decimals: int = 2
    ratio: bool = True
    worst: bool = False  # max over runs instead of the median


CONNECTED = Metric("connected", get("connected"), 0, ratio=False)
RSS_PER_CONN = Metric("RSS / connection (KiB)", scaled(get("server_rss_per_connection"), 1 / 1024), 1)
RSS_IDLE = Metric("RSS, all connected (MiB)", scaled(get("server_rss_idle"), 1 / 2**20), 1)
CONNECT_P99 = Metric("connect p99 (ms)", get("connect_time", "p99_ms"), 1)
CPU_PER_DELIVERY = Metric("server CPU / delivery (µs)", get("server_cpu_us_per_delivery"), 2)
CPU_PER_PUBLISH = Metric("server CPU / publish+delivery (µs)", get("server_cpu_us_per_publish"), 1)
SERVER_CORES = Metric("server cores", get("server_cpu_cores"), 2)
DELIVERIES = Metric("deliveries/s", get("deliveries_per_second"), 0)
PUBLISHES = Metric("publishes/s accepted", get("publish_rate"), 0)
LOST = Metric("lost (worst run)", get("lost"), 0, ratio=False, worst=True)
DUPLICATES = Metric("duplicates (worst run)", get("duplicates"), 0, ratio=False, worst=True)
P50 = Metric("p50 (ms)", get("latency", "p50_ms"), 2)
P99 = Metric("p99 (ms)", get("latency", "p99_ms"), 2)

METRICS: dict[str, list[Metric]] = {
    "idle": [CONNECTED, RSS_PER_CONN, RSS_IDLE, CONNECT_P99],
    "fanout": [CPU_PER_DELIVERY, DELIVERIES, PUBLISHES, LOST, DUPLICATES, SERVER_CORES, P50, P99],
    "many": [CPU_PER_PUBLISH, PUBLISHES, DELIVERIES, LOST, DUPLICATES, SERVER_CORES, P50, P99],
    "latency": [P50, P99, CPU_PER_DELIVERY, DELIVERIES, LOST, DUPLICATES],
    "scale": [CONNECTED, RSS_PER_CONN, CPU_PER_DELIVERY, P50, P99, LOST, DUPLICATES],
}


# Signalbox ÷ floor is given for these figures (those of the scenario's table), with a
# target for some: (scenario, header) -> the highest ratio that meets it.
FLOOR_FIGURES = [P50, P99, CPU_PER_DELIVERY, CPU_PER_PUBLISH, RSS_PER_CONN]
FLOOR_TARGETS = {("latency", P99.header): 1.2, ("fanout", CPU_PER_DELIVERY.header): 1.3}


def floor_line(scenario: str, by_server: dict[str, list[Report]]) -> Optional[str]:
    """`signalbox ÷ floor: …` for the scenario, or None without both servers."""
    if REFERENCE not in by_server or FLOOR not in by_server:
        return None
    parts = []
    for metric in FLOOR_FIGURES:
        if metric not in METRICS.get(scenario, []):
            continue
        ours, floor = aggregate(metric, by_server[REFERENCE]), aggregate(metric, by_server[FLOOR])
        if ours is None or not floor:
            parts.append(f"{metric.header} ×n/a")
            continue
        ratio = ours / floor
        target = FLOOR_TARGETS.get((scenario, metric.header))
        verdict = "" if target is None else f" (target ≤ {target:g}: {'met' if ratio <= target else 'MISSED'})"
        parts.append(f"{metric.header} ×{ratio:.2f}{verdict}")
    return f"**{REFERENCE} ÷ {FLOOR}:** " + "; ".join(parts) if parts else None


def load(results: Path) -> dict[str, dict[str, list[Report]]]:
    """scenario -> server -> reports, in run order."""
    found: dict[str, dict[str, list[Report]]] = {}
    for path in sorted(results.glob("*/*/run*/report.json")):
        run_dir = path.parent
        server, scenario = run_dir.parent.name, run_dir.parent.parent.name
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"summarize: skipping {path}: {e}", file=sys.stderr)
            continue
        found.setdefault(scenario, {}).setdefault(server, []).append(report)
    return found


def aggregate(metric: Metric, reports: list[Report]) -> Optional[float]:
    values = [v for v in (metric.read(r) for r in reports) if v is not None]
    if not values:
        return None
    return max(values) if metric.worst else statistics.median(values)


def number(value: Optional[float], decimals: int) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{decimals}f}"


def cell(metric: Metric, value: Optional[float], reference: Optional[float], is_reference: bool) -> str:
    text = number(value, metric.decimals)
    if not metric.ratio or is_reference or value is None:
        return text
    if reference is None or reference == 0:
        return f"{text} (×n/a)"
    return f"{text} (×{value / reference:.2f})"


def ordered(names, order: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def plan_line(reports: list[Report]) -> str:
    plan = reports[0].get("plan", {})
    parts = [
        f"{plan.get('connections', '?'):,} connections" if isinstance(plan.get("connections"), int) else None,
        f"{plan.get('topics')} topics" if plan.get("topics") is not None else None,
        f"{plan.get('rate'):g} publishes/s asked" if plan.get("rate") else "no publishing",
        f"{plan.get('duration_s'):g} s measured" if plan.get("duration_s") is not None else None,
        f"{plan.get('payload')} B padding" if plan.get("payload") is not None else None,
    ]
    return ", ".join(p for p in parts if p)


def table(scenario: str, by_server: dict[str, list[Report]]) -> str:
    metrics = METRICS.get(scenario, [CONNECTED, CPU_PER_DELIVERY, DELIVERIES, PUBLISHES, LOST, DUPLICATES, P50, P99])
    servers = ordered(by_server, SERVER_ORDER)
    first = by_server[servers[0]]
    reference_reports = by_server.get(REFERENCE)
    lines = [f"### {scenario}", "", f"{plan_line(first)}; medians of runs; (×r) = peer ÷ {REFERENCE}.", ""]
    lines.append("| server | protocol | runs | " + " | ".join(m.header for m in metrics) + " |")
    lines.append("|---|---|---|" + "---|" * len(metrics))
    notes = []
    for server in servers:
        reports = by_server[server]
        protocol = reports[0].get("plan", {}).get("protocol", "native")
        cells = []
        for metric in metrics:
            value = aggregate(metric, reports)
            reference = aggregate(metric, reference_reports) if reference_reports else None
            cells.append(cell(metric, value, reference, server == REFERENCE))
        lines.append(f"| {server} | {protocol} | {len(reports)} | " + " | ".join(cells) + " |")
        for i, r in enumerate(reports, 1):
            problems = [
                f"{r[k]} {label}"
                for k, label in (("lost", "lost"), ("duplicates", "duplicates"), ("connect_failures", "connect failures"),
                                 ("publish_failures", "publish failures"))
                if r.get(k)
            ]
            if problems:
                notes.append(f"- {server}, run {i}: " + ", ".join(problems))
        asked = first[0].get("plan", {}).get("rate") if first else None
        accepted = aggregate(PUBLISHES, reports)
        if asked and accepted is not None and accepted < 0.95 * asked:
            notes.append(f"- {server}: accepted {accepted:,.0f} of {asked:g} publishes/s asked (saturated)")
    if not reference_reports:
        notes.append(f"- no {REFERENCE} runs: no ratios")
    if notes:
        lines += ["", *notes]
    versus_floor = floor_line(scenario, by_server)
    if versus_floor:
        lines += ["", versus_floor]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/peers", type=Path, help="the run script's RESULTS directory")
    parser.add_argument("scenarios", nargs="*", help="only these scenarios (default: every one found)")
    args = parser.parse_args()
    found = load(args.results)
    scenarios = args.scenarios or ordered(found, SCENARIO_ORDER)
    missing = [s for s in scenarios if s not in found]
    for s in missing:
        print(f"summarize: no reports for scenario '{s}' under {args.results}", file=sys.stderr)
    tables = [table(s, found[s]) for s in scenarios if s in found]
    if not tables:
        print(f"summarize: nothing to summarise under {args.results}", file=sys.stderr)
        return 1
    text = "## Signalbox and peers\n\n" + "\n\n".join(tables) + "\n"
    print(text)
    out = args.results / "summary.md"
    out.write_text(text)
    print(f"written to {out}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
