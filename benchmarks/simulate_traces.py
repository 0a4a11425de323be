"""Benchmark `simulate`: wall time on a 14-day 1-minute trace, and policy scores on every shipped trace.

Usage: python benchmarks/simulate_traces.py [--only-timing] [--config FILE]
Prints a Markdown table for docs/benchmarks.md. Pin it to one core with
`taskset -c 0` to measure the one-core case.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACES = sorted((ROOT / "data").glob("*.csv"))


def simulate(trace: Path, report: Path, extra: list[str], config: Path = ROOT / "config" / "example.yaml") -> float:
    command = [sys.executable, "-m", "runtime.cli", "simulate", "--config", str(config),
               "--trace", str(trace), "--report", str(report), "--no-chart", "--no-progress", *extra]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def fourteen_day_trace(folder: Path) -> Path:
    """Write the first 14 days of the NASA trace (20,160 one-minute rows) and return its path."""
    source = (ROOT / "data" / "nasa_http_1995jul_1min.csv").read_text().splitlines()
    path = folder / "nasa_14d_1min.csv"
    path.write_text("\n".join(source[: 1 + 14 * 1440]) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only-timing", action="store_true")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "example.yaml", help="config file for the per-trace table")
    parser.add_argument("--skip-timing", action="store_true", help="only print the per-trace table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if not args.skip_timing:
            trace = fourteen_day_trace(folder)
            # All 14 days are simulated: no warm-up, so the forecasters train on the way.
            seconds = simulate(trace, folder / "timing.json", ["--capacity-per-replica", "0.08", "--warmup-seconds", "0"])
            report = json.loads((folder / "timing.json").read_text())
            print(f"simulate, 14-day 1-minute trace, 15 s ticks: {seconds:.1f} s wall ({report['scored_seconds'] / 86400:.1f} days scored)")
        if args.only_timing:
            return
        print()
        print("| trace | policy | SLO-violation min | unserved | replica-hours | cost |")
        print("|---|---|---|---|---|---|")
        for path in TRACES:
            out = folder / f"{path.stem}.json"
            simulate(path, out, [], args.config)
            policies = json.loads(out.read_text())["policies"]
            for name in ("predictive", "hpa", "hpa_same_spend", "oracle"):
                p = policies[name]
                print(f"| {path.name} | {name} | {p['slo_violation_minutes']:.1f} | {p['unserved_fraction'] * 100:.3f} % | {p['replica_hours']:.1f} | {p['cost']:.2f} |")


if __name__ == "__main__":
    main()
