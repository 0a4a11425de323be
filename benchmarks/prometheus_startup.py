"""Measure the time from daemon start to the first forecast-backed decision with Prometheus history.

Run: python benchmarks/prometheus_startup.py [--history-days 14] [--model auto]

Backfills a real Prometheus (tests/realstack.py) with the last `--history-days` of
the NASA trace (1-minute samples, shifted to end now) using promtool, then runs
`run_daemon` with one workload whose load signal is a Prometheus source. Reported:
seconds until the history is loaded, until the forecaster is fitted, and until the
first decision that carries a forecast. The daemon ticks every second and its fitter
checks for due fits every 5 s, which bounds the resolution of the last two numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402

from runtime.config import parse_config  # noqa: E402
from runtime.daemon import Daemon, run_daemon  # noqa: E402
from runtime.model import Decision  # noqa: E402
from tests import promdata, realstack  # noqa: E402

DAY = 86400


def app_config(url: str, history_days: int, model: str) -> object:
    return parse_config({
        "daemon": {"actuator": "simulated", "tick_seconds": 1, "log_format": "console"},
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "web", "target": {"namespace": "bench", "name": "web"}, "min_replicas": 1, "max_replicas": 200,
            "capacity_per_replica": 0.08, "startup_lead_seconds": 480, "forecast_horizon_seconds": 900,
            "forecaster": {"model": model, "history_window_seconds": history_days * DAY},
            "signals": [{"name": "requests", "role": "load", "stale_after_seconds": 180, "source": {
                "kind": "prometheus", "url": url, "query": "nasa_requests_per_second",
                "history_window_seconds": history_days * DAY, "history_step_seconds": 60, "poll_interval_seconds": 1,
            }}],
        }],
    })


async def measure(url: str, history_days: int, model: str) -> dict[str, object]:
    config = app_config(url, history_days, model)
    daemon = Daemon(config)
    marks: dict[str, object] = {}
    started = time.perf_counter()

    original_submit_history = daemon.submit_history

    def submit_history(workload, timestamps, values) -> None:
        original_submit_history(workload, timestamps, values)
        marks["history_loaded_seconds"] = time.perf_counter() - started
        marks["history_points"] = int(len(values))

    daemon.submit_history = submit_history

    def on_decision(decision: Decision) -> None:
        if decision.forecast_replicas is not None and "first_forecast_decision_seconds" not in marks:
            marks["first_forecast_decision_seconds"] = time.perf_counter() - started
            marks["forecaster"] = decision.forecaster
            marks["forecast_replicas"] = decision.forecast_replicas
            # Stop run_daemon cleanly through its own SIGINT handler.
            os.kill(os.getpid(), signal.SIGINT)

    daemon.decision_listeners.append(on_decision)
    exit_code = await run_daemon(config, duration_seconds=600, daemon=daemon, serve_metrics=False)
    marks["exit_code"] = exit_code
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-days", type=int, default=14, help="Days of history backfilled into Prometheus and loaded at start.")
    parser.add_argument("--model", default="auto", help="forecaster.model of the workload (default auto).")
    args = parser.parse_args()
    if realstack.find_prometheus() is None:
        sys.exit(f"Prometheus not found; run {realstack.SETUP_COMMAND}")
    end = int(time.time()) // 60 * 60 - 60
    document = promdata.openmetrics_document(promdata.trace_openmetrics_lines("nasa_requests_per_second", end, args.history_days * DAY))
    print(f"machine: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as workdir, realstack.prometheus_server(workdir, openmetrics_text=document) as prometheus:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        marks = asyncio.run(measure(prometheus.url, args.history_days, args.model))
    print("startup:", json.dumps({key: round(value, 3) if isinstance(value, float) else value for key, value in marks.items()}))


if __name__ == "__main__":
    main()
