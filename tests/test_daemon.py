"""The asyncio daemon: ticks, event-triggered evaluation, snapshots, crash and signal handling."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from runtime.config import load_config, parse_config
from runtime.daemon import Daemon, SignalSource, run_daemon
from runtime.model import Observation, Reason

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


def config_data(tmp_path: Path, **daemon) -> dict:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["daemon"].update({"tick_seconds": 0.2, "actuator": "simulated", "log_format": "json", "metrics_address": "127.0.0.1:9464"})
    data["daemon"].update(daemon)
    source = data["workloads"][0]["signals"][0]["source"]
    source["path"] = str(ROOT / "data" / "nasa_http_1995jul_1min.csv")
    source["speedup_ratio"] = 60.0
    return data


class ManualSource(SignalSource):
    """Pushes the observations a test hands it; `fail` makes it crash like a defect would."""

    name = "manual"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.sink = None
        self.ready = asyncio.Event()

    async def run(self, sink) -> None:
        self.sink = sink
        self.ready.set()
        if self.fail:
            raise RuntimeError("source defect")
        await asyncio.Event().wait()


async def test_ticks_produce_decisions(tmp_path):
    config = parse_config(config_data(tmp_path))
    daemon = Daemon(config, fit_executor=ThreadPoolExecutor(1))
    decisions = []
    daemon.decision_listeners.append(decisions.append)
    code = await run_daemon(config, duration_seconds=2.0, daemon=daemon, serve_metrics=False)
    assert code == 0
    assert len(decisions) >= 5
    assert all(d.workload == "web-agents" for d in decisions)
    assert decisions[-1].final_replicas >= config.workloads[0].min_replicas
    assert decisions[-1].on_demand_replicas + decisions[-1].spot_replicas == decisions[-1].final_replicas


async def test_event_triggers_immediate_decision(tmp_path):
    data = config_data(tmp_path, tick_seconds=30.0, event_debounce_seconds=0.05)
    # No forecaster, so the expected count does not depend on whether a fit has finished.
    data["workloads"][0]["forecaster"]["model"] = "none"
    config = parse_config(data)
    source = ManualSource()
    daemon = Daemon(config, sources=[source], fit_executor=ThreadPoolExecutor(1))
    decisions = []
    daemon.decision_listeners.append(decisions.append)
    task = asyncio.create_task(run_daemon(config, duration_seconds=3.0, daemon=daemon, serve_metrics=False))
    await asyncio.wait_for(source.ready.wait(), 5)
    await asyncio.sleep(0.2)  # the first tick has run
    before = len(decisions)
    sent = time.perf_counter()
    for _ in range(50):  # a storm of events becomes one decision
        source.sink("web-agents", "requests", Observation.checked(5.0, time.time()), True)
    while len(decisions) == before and time.perf_counter() - sent < 2:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - sent
    await asyncio.sleep(0.3)
    assert len(decisions) == before + 1
    # 5 units/s at capacity * utilization per replica; with 0.08 and 1.0 that is ceil(62.5) = 63.
    workload = config.workloads[0]
    expected = math.ceil(5.0 / (workload.capacity_per_replica * workload.target_utilization_ratio))
    assert decisions[-1].reactive_replicas == expected
    assert elapsed < 2
    assert await task == 0


async def test_crashed_source_stops_daemon(tmp_path):
    config = parse_config(config_data(tmp_path))
    daemon = Daemon(config, sources=[ManualSource(fail=True)], fit_executor=ThreadPoolExecutor(1))
    assert await run_daemon(config, duration_seconds=10.0, daemon=daemon, serve_metrics=False) == 1


async def test_unknown_load_holds(tmp_path):
    config = parse_config(config_data(tmp_path, tick_seconds=30.0, event_debounce_seconds=0.0))
    source = ManualSource()
    daemon = Daemon(config, sources=[source], fit_executor=ThreadPoolExecutor(1))
    decisions = []
    daemon.decision_listeners.append(decisions.append)
    task = asyncio.create_task(run_daemon(config, duration_seconds=2.0, daemon=daemon, serve_metrics=False))
    await asyncio.wait_for(source.ready.wait(), 5)
    source.sink("web-agents", "requests", Observation.checked(2.0, time.time()), True)
    await asyncio.sleep(0.3)
    held_from = decisions[-1].final_replicas
    source.sink("web-agents", "requests", Observation.checked(float("nan"), time.time()), True)
    await asyncio.sleep(0.3)
    assert decisions[-1].reason is Reason.HOLDING_LAST_SAFE_STATE
    assert decisions[-1].final_replicas == held_from
    assert await task == 0


async def test_snapshot_restores_state(tmp_path):
    state_file = tmp_path / "state.json"
    config = parse_config(config_data(tmp_path, state_file=str(state_file)))
    first = Daemon(config, fit_executor=ThreadPoolExecutor(1))
    assert await run_daemon(config, duration_seconds=1.5, daemon=first, serve_metrics=False) == 0
    saved = json.loads(state_file.read_text())
    workload = saved["workloads"]["web-agents"]
    assert workload["planner"]["last_safe_replicas"] == first.runtimes["web-agents"].state.last_safe_replicas
    assert len(workload["history"]) > 100
    second = Daemon(config, fit_executor=ThreadPoolExecutor(1))
    assert second.restore_snapshot(state_file)
    assert second.runtimes["web-agents"].state.last_safe_replicas == workload["planner"]["last_safe_replicas"]
    assert second.ledgers["default"].spent == pytest.approx(saved["budgets"]["default"]["spent"])


def test_corrupt_snapshot_is_not_fatal(tmp_path):
    state_file = tmp_path / "state.json"
    state_file.write_text("{not json")
    daemon = Daemon(parse_config(config_data(tmp_path)))
    assert daemon.restore_snapshot(state_file) is False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_command_serves_metrics_and_stops_on_sigterm(tmp_path):
    port = free_port()
    state_file = tmp_path / "state.json"
    data = config_data(tmp_path, metrics_address=f"127.0.0.1:{port}", state_file=str(state_file), tick_seconds=0.5)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    load_config(config_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "run", "--config", str(config_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        body = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                if 'autoscaler_desired_replicas{workload="web-agents"}' in body:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert 'autoscaler_desired_replicas{workload="web-agents"}' in body
        assert "autoscaler_decision_latency_seconds_bucket" in body
        assert "autoscaler_budget_remaining_ratio" in body
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    decisions = [line for line in lines if line.get("event") == "decision"]
    assert decisions
    for key in ("workload", "reactive_replicas", "forecast_replicas", "stabilized_replicas", "budget_replicas",
                "continuity_floor_replicas", "final_replicas", "on_demand_replicas", "spot_replicas", "reason", "forecaster"):
        assert key in decisions[-1]
    assert any(line.get("event") == "daemon stopped" for line in lines)
    assert state_file.exists()


def test_run_command_rejects_invalid_config(tmp_path):
    config_path = tmp_path / "config.yaml"
    config_path.write_text("daemon: {tick_seconds: -1}\n")
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "run", "--config", str(config_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "daemon.tick_seconds" in result.stderr


def test_source_counters_exported(tmp_path):
    from collections import Counter

    from prometheus_client import generate_latest

    from runtime.lag_events import RejectionCounter

    source = ManualSource()
    source.workload = "web-agents"
    source.failures = 3
    source.rejections = RejectionCounter(counts=Counter({"not_json": 2, "oversize": 1}))
    daemon = Daemon(parse_config(config_data(tmp_path)), sources=[source])
    text = generate_latest(daemon.metrics.registry).decode()
    assert 'autoscaler_source_failures_total{source="manual",workload="web-agents"} 3.0' in text
    assert 'autoscaler_lag_events_rejected_total{reason="not_json"} 2.0' in text
    assert 'autoscaler_lag_events_rejected_total{reason="oversize"} 1.0' in text


async def test_unconfirmed_write_not_counted(tmp_path):
    from actuators.base import Actuator, ReplicaStatus

    class RefusingActuator(Actuator):
        """Reads 2 replicas and refuses every write, like a target the daemon may not patch."""

        name = "refusing"

        async def apply(self, decision, now):
            raise PermissionError("forbidden")

        async def status(self, workload, now):
            return ReplicaStatus(2, 2, 2)

    data = config_data(tmp_path, tick_seconds=30.0)
    data["workloads"][0]["forecaster"]["model"] = "none"
    config = parse_config(data)
    daemon = Daemon(config, actuator=RefusingActuator(), sources=[], fit_executor=ThreadPoolExecutor(1))
    daemon.submit_observation("web-agents", "requests", Observation.checked(0.72, time.time()))
    first = await daemon.evaluate("web-agents")
    second = await daemon.evaluate("web-agents")
    # 0.72 / 0.08 = 9 wanted from 2: each attempt starts again from the 2 really running,
    # because the refused write was not counted as a scale-up.
    assert first.final_replicas == 9
    assert second.final_replicas == 9
    assert daemon.runtimes["web-agents"].state.scale_up_events == []
