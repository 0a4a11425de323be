"""Benchmark one evaluation round for many workloads with fitted forecasters.

Usage: python benchmarks/evaluation_round.py [--workloads 10000]

Each workload has its own WorkloadRuntime with a week of 5-minute history and a
forecast path from a fitted Holt-Winters model (one fit, shared by all workloads, so
that setup takes seconds instead of hours). A round is what the daemon does per tick
and workload: take an observation, read the budget ledger, run the planner and emit
the structured decision event (JSON, to /dev/null). Reported: the round's wall time
and the resident memory added per workload.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from pathlib import Path

import numpy as np
import structlog
import yaml

from forecasters import fit_job
from runtime.budget import BudgetLedger
from runtime.config import parse_config
from runtime.evaluator import WorkloadRuntime
from runtime.logs import configure_logging
from runtime.model import Observation

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    template = data["workloads"][0]
    data["workloads"] = [{**template, "name": f"w{i}", "target": {**template["target"], "name": f"w{i}"}} for i in range(args.workloads)]
    config = parse_config(data)

    resolution = 300
    points = 7 * 288
    end_index = int(time.time() // resolution) - 1
    phase = np.arange(points) + end_index - points + 1
    series = 1.0 + 0.5 * np.sin(2 * np.pi * (phase % 288) / 288)
    outcome = fit_job("holt_winters", series, 288, 0.9, end_index, 3)
    assert outcome.model is not None

    gc.collect()
    before = rss_bytes()
    runtimes = []
    now = (end_index + 1) * resolution + 1.0
    stamps = (np.arange(points) + end_index - points + 1) * resolution
    for workload in config.workloads:
        runtime = WorkloadRuntime.create(workload)
        runtime.history.extend(stamps, series)
        runtime.apply_fit(outcome, now)
        runtimes.append(runtime)
    # One forecast computation, shared: the per-workload update cost is measured separately below.
    runtimes[0].update_forecast(now)
    for runtime in runtimes[1:]:
        runtime.forecast = runtimes[0].forecast
        runtime.next_update_at = runtimes[0].next_update_at
    gc.collect()
    per_workload = (rss_bytes() - before) / args.workloads

    ledger = BudgetLedger("default", config.budgets["default"])
    configure_logging("json", stream=open(os.devnull, "w"))
    log = structlog.get_logger("bench")

    timings = []
    for round_index in range(args.rounds):
        tick = now + 15.0 * (round_index + 1)
        started = time.perf_counter()
        for runtime in runtimes:
            runtime.observe("requests", Observation.checked(1.2, tick))
            decision = runtime.decide(ledger.state_for(runtime.name, tick), tick)
            log.info("decision", **decision.as_log_fields())
        timings.append(time.perf_counter() - started)

    update_started = time.perf_counter()
    for runtime in runtimes[:100]:
        runtime.update_forecast(now)
    update_each = (time.perf_counter() - update_started) / 100

    print(f"workloads: {args.workloads}")
    print(f"evaluation round: best {min(timings):.3f} s, median {sorted(timings)[len(timings) // 2]:.3f} s over {args.rounds} rounds")
    print(f"resident memory per workload (history, planner state, runtime): {per_workload / 1024:.1f} KiB")
    print(f"forecast update (Holt-Winters rerun with fitted parameters), per workload: {update_each * 1000:.1f} ms")


if __name__ == "__main__":
    main()
