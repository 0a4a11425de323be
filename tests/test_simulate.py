"""`simulate` end to end on shipped traces, through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import main
from runtime.simulate import POLICIES, _forward_max, observed_load
from runtime.traces import Trace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"


@pytest.fixture(scope="module")
def servegen_run(tmp_path_factory):
    """m-small, 14 days at 10 minutes: 5.6 days of warm-up, 8.4 days scored."""
    folder = tmp_path_factory.mktemp("sim")
    report, decisions, chart = folder / "report.json", folder / "decisions.csv", folder / "chart.png"
    code = main([
        "simulate", "--config", str(EXAMPLE), "--trace", str(ROOT / "data" / "servegen_llm_m_small_10min.csv"),
        "--report", str(report), "--decisions", str(decisions), "--chart", str(chart), "--no-progress",
    ])
    assert code == 0
    # Strict JSON: NaN or Infinity would make other languages' parsers reject the file.
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(report.read_text(), parse_constant=reject), decisions, chart


def test_report_shape(servegen_run):
    report, _, _ = servegen_run
    assert report["trace"].endswith("servegen_llm_m_small_10min.csv")
    assert set(report["policies"]) == set(POLICIES)
    for name in POLICIES:
        assert set(report["policies"][name]) == {
            "slo_violation_minutes", "unserved_fraction", "replica_hours", "cost", "spot_share", "scaling_actions"}


def test_default_capacity_is_p99_over_30(servegen_run):
    from runtime.traces import load_trace

    report, _, _ = servegen_run
    trace = load_trace(ROOT / "data" / "servegen_llm_m_small_10min.csv")
    assert report["capacity_per_replica"] == pytest.approx(np.percentile(trace.rates, 99) / 30)


def test_reference_policies_bound_the_others(servegen_run):
    policies = servegen_run[0]["policies"]
    assert policies["oracle"]["slo_violation_minutes"] == 0
    assert policies["static_peak"]["slo_violation_minutes"] == 0
    for name in ("predictive", "hpa", "hpa_same_spend"):
        assert policies[name]["replica_hours"] >= policies["oracle"]["replica_hours"]
    assert policies["static_peak"]["replica_hours"] > policies["predictive"]["replica_hours"]


def test_same_spend_matches_replica_hours(servegen_run):
    policies = servegen_run[0]["policies"]
    predictive, same = policies["predictive"]["replica_hours"], policies["hpa_same_spend"]["replica_hours"]
    assert same == pytest.approx(predictive, rel=0.02)


def test_predictive_uses_a_forecaster(servegen_run):
    forecaster = servegen_run[0]["forecaster"]
    assert forecaster["fits"] >= 1
    assert sum(forecaster["ticks_by_model"].values()) > forecaster["reactive_fallback_ticks"]


def test_decisions_csv_rows(servegen_run):
    report, decisions, _ = servegen_run
    with decisions.open() as handle:
        rows = list(csv.DictReader(handle))
    ticks = report["scored_seconds"] / report["tick_seconds"]
    assert len(rows) == pytest.approx(len(POLICIES) * ticks, abs=len(POLICIES))
    assert set(rows[0]) == {"timestamp", "policy", "load_per_second", "forecast_per_second", "requested_replicas",
                            "ready_replicas", "on_demand_replicas", "spot_replicas"}
    for row in rows[:: max(1, len(rows) // 500)]:
        assert int(row["on_demand_replicas"]) + int(row["spot_replicas"]) == int(row["requested_replicas"])


def test_chart_is_png(servegen_run):
    assert servegen_run[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_malformed_trace_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,value\n0,1\n60,-2\n")
    assert main(["simulate", "--config", str(EXAMPLE), "--trace", str(bad), "--no-progress", "--no-chart"]) == 3
    error = capsys.readouterr().err
    assert f"{bad}:3: value '-2' is negative" in error


def test_missing_trace_exit_code(tmp_path, capsys):
    assert main(["simulate", "--config", str(EXAMPLE), "--trace", str(tmp_path / "none.csv"), "--no-progress", "--no-chart"]) == 3
    assert "trace file not found" in capsys.readouterr().err


def test_observed_load_sees_only_completed_intervals():
    trace = Trace("t", "t.csv", np.array([0.0, 60.0, 120.0]), np.array([60.0, 120.0, 180.0]), 60.0)
    # At t = 90 only the first minute (1/s) is complete; at t = 120 the second (2/s) is.
    values = observed_load(trace, np.array([30.0, 90.0, 120.0]), 60.0)
    assert np.isnan(values[0])
    assert values[1] == 1.0
    assert values[2] == 2.0


def test_forward_max_starts_one_lead_early():
    needed = np.array([1, 1, 5, 1, 1])
    assert list(_forward_max(needed, 2)) == [5, 5, 5, 1, 1]


def test_unwritable_output_rejected_before_run(tmp_path, capsys):
    code = main(["simulate", "--config", str(EXAMPLE), "--report", str(tmp_path / "missing" / "r.json"), "--no-progress"])
    assert code == 3
    assert "--report" in capsys.readouterr().err
    assert main(["simulate", "--config", str(EXAMPLE), "--decisions", str(tmp_path), "--no-progress"]) == 3
    assert "is a folder" in capsys.readouterr().err


def test_forecaster_fallback_is_noted(tmp_path, capsys):
    # 57 minutes of 1-second data: no seasonal model gets two daily seasons.
    code = main(["simulate", "--config", str(EXAMPLE), "--trace", str(ROOT / "data" / "azure_llm_2023_code_1s.csv"),
                 "--no-progress", "--no-chart", "--report", str(tmp_path / "r.json")])
    assert code == 0
    output = capsys.readouterr().out
    assert "note: the forecaster never produced a forecast" in output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["forecaster"]["notes"]
