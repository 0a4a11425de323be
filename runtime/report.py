"""Output of `simulate`: the per-policy table, the JSON report, the decisions CSV and the chart."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from runtime.simulate import POLICIES, SimulationResult


def report_dict(result: SimulationResult) -> dict[str, object]:
    setup = result.setup
    return {
        "trace": setup.trace.path,
        "capacity_per_replica": setup.workload.capacity_per_replica,
        "workload": setup.workload.name,
        "tick_seconds": setup.tick_seconds,
        "warmup_seconds": setup.warmup_seconds,
        "scored_seconds": setup.eval_end - setup.eval_start,
        "startup_lead_seconds": setup.workload.startup_lead_seconds,
        "hpa_target_utilization_ratio": setup.hpa_target_utilization_ratio,
        "forecaster": result.forecaster_summary,
        "policies": {name: result.scores[name].as_dict() for name in POLICIES},
    }


TABLE_LEGEND = (
    "SLO viol. min: minutes in which ready capacity was below the load; unserved: share of the load above ready capacity;\n"
    "replica-h: replica-hours provisioned (ready and starting); actions: changes of the requested count."
)


def _finite(value: object) -> object:
    """Replace NaN and infinities by None, recursively, so that the report is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def format_forecaster(summary: dict[str, object]) -> str:
    """Describe what the predictive policy's forecaster did, in one or two lines."""
    ticks = summary.get("ticks_by_model") or {}
    fallback = summary.get("reactive_fallback_ticks", 0)
    used = ", ".join(f"{model} {count}" for model, count in sorted(ticks.items())) or "none"
    scores = summary.get("last_backtest_mase") or {}
    shown = ", ".join(f"{name} {score:.3f}" if isinstance(score, float) and math.isfinite(score) else f"{name} n/a" for name, score in scores.items()) or "none"
    return (
        f"forecaster {summary.get('requested_model')}: {summary.get('fits')} fits; ticks by model: {used}; "
        f"reactive fallback ticks: {fallback}\nlast backtest MASE (lower is better, 1 = seasonal naive in sample): {shown}"
    )


def format_table(result: SimulationResult) -> str:
    headers = ("policy", "SLO viol. min", "unserved", "replica-h", "cost", "spot share", "actions")
    rows = []
    for name in POLICIES:
        score = result.scores[name]
        rows.append((
            name,
            f"{score.slo_violation_minutes:.1f}",
            f"{score.unserved_fraction * 100:.3f} %",
            f"{score.replica_hours:.1f}",
            f"{score.cost:.2f}",
            f"{score.spot_share * 100:.1f} %",
            str(score.scaling_actions),
        ))
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(headers)]
    lines = ["  ".join(header.ljust(widths[i]) if i == 0 else header.rjust(widths[i]) for i, header in enumerate(headers))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
    return "\n".join(lines)


def write_report(result: SimulationResult, path: Path) -> None:
    path.write_text(json.dumps(_finite(report_dict(result)), indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")


def write_decisions(result: SimulationResult, path: Path) -> None:
    """One row per tick and policy, so any tool can re-score the runs.

    static_peak and oracle are defined on the scoring grid; they are sampled at the
    predictive policy's tick times so that every policy has the same rows.
    """
    predictive = result.runs["predictive"]
    ticks = predictive.tick_times
    setup = result.setup
    index = np.clip(np.floor((ticks - setup.trace.start) / setup.trace.interval_seconds).astype(int), 0, len(setup.trace.counts) - 1)
    load = setup.trace.rates[index]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("timestamp", "policy", "load_per_second", "forecast_per_second", "requested_replicas", "ready_replicas", "on_demand_replicas", "spot_replicas"))
        for name in POLICIES:
            run = result.runs[name]
            if run.tick_times is ticks or np.array_equal(run.tick_times, ticks):
                positions = np.arange(len(ticks))
            else:
                positions = np.clip(np.searchsorted(run.tick_times, ticks, side="right") - 1, 0, len(run.tick_times) - 1)
            for row, position in enumerate(positions):
                forecast = run.forecast[position]
                writer.writerow((
                    f"{ticks[row]:.0f}", name, f"{load[row]:.6g}",
                    "" if np.isnan(forecast) else f"{forecast:.6g}",
                    int(run.requested[position]), int(run.ready[position]),
                    int(run.on_demand[position]), int(run.spot[position]),
                ))


def write_chart(result: SimulationResult, path: Path) -> None:
    """Plot ready capacity per policy against load and forecast, a zoom on the peak, and the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup = result.setup
    capacity = setup.workload.capacity_per_replica
    styles = {
        "static_peak": ("tab:gray", "-"),
        "oracle": ("tab:blue", "-"),
        "hpa_same_spend": ("tab:orange", "-"),
        "hpa": ("tab:red", "--"),
        "predictive": ("tab:green", "-"),
    }
    predictive = result.runs["predictive"]
    scored_seconds = setup.eval_end - setup.eval_start

    def hours(times: np.ndarray) -> np.ndarray:
        return (times - setup.eval_start) / 3600.0

    # A zoom only helps when the whole period is too long to read; 12 hours around the peak.
    with_zoom = scored_seconds > 24 * 3600
    rows = 3 if with_zoom else 2
    figure, axes = plt.subplots(rows, 1, figsize=(14, 10 if with_zoom else 7), gridspec_kw={"height_ratios": [3, 3, 1][-rows:] if with_zoom else [3, 1]})
    panels = list(axes[:-1])
    budget = axes[-1]
    for axis in panels:
        # Capacities first, then load and forecast on top so that neither is hidden.
        for name in ("static_peak", "oracle", "hpa_same_spend", "hpa", "predictive"):
            run = result.runs[name]
            color, style = styles[name]
            axis.step(hours(run.tick_times), run.ready * capacity, where="post", linewidth=0.8, linestyle=style, color=color, alpha=0.9, label=f"{name} ready capacity")
        axis.plot(hours(result.grid_times), result.grid_load, color="black", linewidth=0.7, label="load")
        axis.plot(hours(predictive.tick_times), predictive.forecast, color="tab:purple", linewidth=0.8, label="forecast upper quantile over the lead window")
        axis.set_ylabel("load units per second")
    if with_zoom:
        peak_time = result.grid_times[int(np.argmax(result.grid_load))]
        zoom_start = max(setup.eval_start, peak_time - 6 * 3600.0)
        zoom_end = min(setup.eval_end, zoom_start + 12 * 3600.0)
        panels[1].set_xlim(hours(np.array([zoom_start, zoom_end])))
        panels[1].set_title("12 hours around the largest load", fontsize=9)
    panels[0].set_title(
        f"{setup.workload.name} on {Path(setup.trace.path).name}: startup lead {setup.workload.startup_lead_seconds} s, "
        f"tick {setup.tick_seconds:g} s, capacity {capacity:.4g} units/s per replica"
    )
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    budget.plot(hours(predictive.tick_times), predictive.budget_remaining, color="tab:green", linewidth=0.8)
    budget.set_ylabel("predictive policy:\nbudget remaining", fontsize=8)
    budget.set_ylim(0, 1.05)
    budget.set_xlabel("hours since the scored period began")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
