"""Config loading: every problem reported at once, with key path, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runtime.cli import main
from runtime.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def example_data() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_is_valid():
    config = load_config(EXAMPLE)
    workload = config.workloads[0]
    assert workload.startup_lead_seconds == 480
    assert workload.load_signal.source.path.exists()


def test_defaults_match_platform_policy(tmp_path):
    data = example_data()
    del data["budgets"]["default"]["tiers"]
    del data["workloads"][0]["behavior"]
    del data["workloads"][0]["startup_lead_seconds"]
    config = load_config(write(tmp_path, data))
    behavior = config.workloads[0].behavior
    assert behavior.scale_up.stabilization_window_seconds == 60
    assert [(p.type, p.value, p.period_seconds) for p in behavior.scale_up.policies] == [("Percent", 50, 30), ("Pods", 10, 30)]
    assert behavior.scale_up.select_policy == "Max"
    assert behavior.scale_down.stabilization_window_seconds == 600
    assert [(p.type, p.value, p.period_seconds) for p in behavior.scale_down.policies] == [("Percent", 5, 120)]
    assert config.workloads[0].startup_lead_seconds == 480
    tiers = config.budgets["default"].tiers
    assert [(t.above_remaining_ratio, t.scale_factor_ratio, t.spot_ratio, t.aggressive_scale_down) for t in tiers] == [
        (0.6, 1.0, 0.6, True), (0.3, 0.85, 0.8, True), (0.0, 0.6, 0.9, False)]
    assert config.budgets["default"].alert_threshold_ratio == 0.7
    assert config.budgets["default"].hard_ceiling_ratio == 1.2


def test_all_problems_reported_at_once(tmp_path):
    data = example_data()
    workload = data["workloads"][0]
    workload["max_replicas"] = -3
    workload["capacity_per_replica"] = "fast"
    workload["colour"] = "blue"
    data["budgets"]["default"]["on_demand_price_per_replica_hour"] = 0
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) >= 4
    assert "workloads.0.max_replicas" in problems
    assert "-3" in problems
    assert "workloads.0.capacity_per_replica" in problems
    assert "'fast'" in problems
    assert "workloads.0.colour" in problems
    assert "remove the key" in problems
    assert "budgets.default.on_demand_price_per_replica_hour" in problems


def test_tier_spot_above_max_is_error_not_clamp(tmp_path):
    data = example_data()
    data["budgets"]["default"]["max_spot_ratio"] = 0.7
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    message = str(caught.value)
    assert "spot_ratio=0.8 exceeds max_spot_ratio=0.7" in message
    assert "lower the tier's spot_ratio" in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("workloads", 0, "min_replicas"), 500, "min_replicas=500 exceeds max_replicas=120"),
        (("workloads", 0, "forecast_horizon_seconds"), 60, "shorter than startup_lead_seconds=480"),
        (("workloads", 0, "budget"), "nope", "refers to budget 'nope'"),
        (("budgets", "default", "amount"), 50.0, "set exactly one of amount and max_hourly_cost"),
        (("workloads", 0, "forecaster", "resolution_seconds"), 7, "not a multiple of resolution_seconds=7"),
        (("daemon", "metrics_address"), "9464", "is not host:port"),
        (("workloads", 0, "behavior", "scale_up", "select_policy"), "Maximum", "Maximum"),
    ],
    ids=["min-above-max", "horizon-short", "unknown-budget", "amount-and-hourly", "resolution", "address", "select-policy"],
)
def test_invalid_values_named(tmp_path, path, value, expected):
    data = example_data()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    assert expected in str(caught.value)


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "daemon:\n  tick_seconds: [15\nbudgets: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line" in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")


def test_validate_config_exit_code(tmp_path, capsys):
    data = example_data()
    data["workloads"][0]["tolerance_ratio"] = 2
    with pytest.raises(SystemExit) as caught:
        main(["validate-config", str(write(tmp_path, data))])
    assert caught.value.code == 2
    assert "workloads.0.tolerance_ratio" in capsys.readouterr().err
    assert main(["validate-config", str(EXAMPLE)]) == 0


def test_validate_config_reports_missing_files(tmp_path, capsys):
    data = example_data()
    data["workloads"][0]["signals"][0]["source"]["path"] = str(tmp_path / "absent.csv")
    data["daemon"]["state_file"] = str(tmp_path / "no-such-folder" / "state.json")
    assert main(["validate-config", str(write(tmp_path, data))]) == 2
    error = capsys.readouterr().err
    assert "workloads.0.signals.0.source.path" in error
    assert "absent.csv' not found" in error
    assert "daemon.state_file: folder" in error


def test_backlog_only_workload_accepted(tmp_path):
    data = example_data()
    data["workloads"][0]["signals"] = [{
        "name": "lag", "role": "backlog",
        "source": {"kind": "kafka_lag", "bootstrap_servers": "127.0.0.1:9092", "group_id": "workers", "topics": ["orders"]},
    }]
    config = load_config(write(tmp_path, data))
    assert config.workloads[0].load_signal is None


def test_two_load_signals_rejected(tmp_path):
    data = example_data()
    signal = data["workloads"][0]["signals"][0]
    data["workloads"][0]["signals"] = [signal, {**signal, "name": "other"}]
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    assert "found 2 signals with role 'load' (['requests', 'other'])" in str(caught.value)
