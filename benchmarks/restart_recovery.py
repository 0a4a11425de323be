"""Measure recovery after a crash: state lost (RPO) and time to the first decisions (RTO).

Usage: python benchmarks/restart_recovery.py

Runs `agent-autoscaler run` with the example config, a state file and a 5 s snapshot
interval, kills it with SIGKILL (no final snapshot), starts it again and reports:
how old the restored snapshot was, the time from the second start to its first
decision, and the time to its first forecast-backed decision.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "run", "--config", str(config)],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def wait_for(log: Path, predicate, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if any(predicate(event) for event in events(log)):
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"no matching event in {log} after {timeout} s")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
        data["workloads"][0]["signals"][0]["source"]["path"] = str(ROOT / "data" / "nasa_http_1995jul_1min.csv")
        data["daemon"].update({
            "metrics_address": f"127.0.0.1:{free_port()}", "state_file": str(folder / "state.json"),
            "state_snapshot_interval_seconds": 5, "tick_seconds": 1,
        })
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(data))

        first_log = folder / "first.log"
        first = start(config, first_log)
        wait_for(first_log, lambda event: event.get("forecaster") not in (None, "reactive_fallback") and event.get("event") == "decision")
        time.sleep(12)  # at least two snapshots
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()

        second_log = folder / "second.log"
        second = start(config, second_log)
        to_decision = wait_for(second_log, lambda event: event.get("event") == "decision")
        to_forecast = wait_for(second_log, lambda event: event.get("event") == "decision" and event.get("forecaster") not in (None, "reactive_fallback"))
        restored = next(event for event in events(second_log) if event.get("event") == "state restored")
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        print(f"state lost: {killed_at - float(restored['written_at']):.1f} s between the last snapshot and the crash "
              f"(snapshot every 5 s here, 60 s by default)")
        print(f"restart to first decision: {to_decision:.2f} s")
        print(f"restart to first forecast-backed decision: {to_forecast:.2f} s")


if __name__ == "__main__":
    main()
