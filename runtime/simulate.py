"""Replay a workload trace through the daemon's decision code on virtual time, with baselines.

Policies compared on the same trace and the same scoring grid:

- predictive: the daemon's own path (WorkloadRuntime, fit_job, planner, budget ledger)
  stepped on virtual time through a SimulatedCluster.
- hpa: the same planner with forecasting off, no budget and the Kubernetes HPA's
  default behavior, tolerance 0.1 and 15 s sync, on observed load.
- hpa_same_spend: the HPA with its target utilization bisected so that its replica-hours
  match the predictive policy's, so extra headroom cannot pass for foresight.
- static_peak: the trace's peak load provisioned all the time.
- oracle: a lower bound that is given the future and starts replicas exactly one lead early.

Every policy sees the load of the last completed trace interval, never the current one.
The first part of the trace (the warm-up) only seeds the forecaster's history, as
history loaded from Prometheus does at daemon start; scoring covers the rest.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from actuators.simulated import SimulatedCluster
from forecasters import fit_job
from runtime.budget import BudgetLedger
from runtime.config import AppConfig, WorkloadConfig, kubernetes_hpa_default_behavior
from runtime.evaluator import WorkloadRuntime
from runtime.model import BudgetState, Observation
from runtime.planner import PlannerSettings, ceil_replicas, split_spot
from runtime.traces import Trace

POLICIES = ("predictive", "hpa", "hpa_same_spend", "static_peak", "oracle")
HPA_SYNC_SECONDS = 15.0
HPA_TOLERANCE_RATIO = 0.1


@dataclass
class PolicyRun:
    """Per-tick record of one policy: what it requested and what was ready."""

    name: str
    tick_times: np.ndarray
    requested: np.ndarray
    ready: np.ndarray
    on_demand: np.ndarray
    spot: np.ndarray
    forecast: np.ndarray  # forecast upper quantile over the lead window (NaN when none)
    budget_remaining: np.ndarray
    target_utilization_ratio: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class PolicyScore:
    slo_violation_minutes: float
    unserved_fraction: float
    replica_hours: float
    cost: float
    spot_share: float
    scaling_actions: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "slo_violation_minutes": round(self.slo_violation_minutes, 2),
            "unserved_fraction": round(self.unserved_fraction, 6),
            "replica_hours": round(self.replica_hours, 3),
            "cost": round(self.cost, 4),
            "spot_share": round(self.spot_share, 4),
            "scaling_actions": self.scaling_actions,
        }


@dataclass
class SimulationSetup:
    trace: Trace
    workload: WorkloadConfig
    config: AppConfig
    tick_seconds: float
    warmup_seconds: float
    hpa_target_utilization_ratio: float = 0.8
    preemptions_per_hour: float = 0.0
    seed: int = 1

    @property
    def eval_start(self) -> float:
        # Align to a tick so that every policy shares the same tick times.
        start = self.trace.start + self.warmup_seconds
        return self.trace.start + math.ceil((start - self.trace.start) / self.tick_seconds) * self.tick_seconds

    @property
    def eval_end(self) -> float:
        return self.trace.end


@dataclass
class SimulationResult:
    setup: SimulationSetup
    runs: dict[str, PolicyRun]
    scores: dict[str, PolicyScore]
    grid_times: np.ndarray
    grid_load: np.ndarray
    forecaster_summary: dict[str, object]


def observed_load(trace: Trace, times: np.ndarray, window_seconds: float) -> np.ndarray:
    """Mean rate over the trace intervals completed in (t - window, t] for each t.

    Only completed intervals count, so no policy reads load before it has arrived. When
    the window is shorter than one interval, the last completed interval is used.
    """
    return observed_load_with_centres(trace, times, window_seconds)[0]


def observed_load_with_centres(trace: Trace, times: np.ndarray, window_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Return `observed_load` and, for each value, the centre of the intervals it averages."""
    rates = trace.rates
    cumulative = np.concatenate(([0.0], np.cumsum(rates)))
    completed = np.floor((times - trace.start) / trace.interval_seconds).astype(int)
    completed = np.clip(completed, 0, len(rates))
    span = max(1, int(round(window_seconds / trace.interval_seconds)))
    first = np.clip(completed - span, 0, None)
    counts = completed - first
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (cumulative[completed] - cumulative[first]) / counts
    centres = trace.start + (first + completed) * trace.interval_seconds / 2.0
    return np.where(counts > 0, values, np.nan), centres


def _tick_times(setup: SimulationSetup) -> np.ndarray:
    return np.arange(setup.eval_start, setup.eval_end, setup.tick_seconds)


def _initial_replicas(load: float, per_replica: float, workload: WorkloadConfig) -> int:
    needed = ceil_replicas(load / per_replica) if math.isfinite(load) else workload.min_replicas
    return min(max(needed, workload.min_replicas), workload.max_replicas)


def run_predictive(setup: SimulationSetup, progress: Callable[[int], None] | None = None) -> tuple[PolicyRun, dict[str, object]]:
    """Run the daemon's own decision path on virtual time."""
    workload = setup.workload
    runtime = WorkloadRuntime.create(workload)
    budget_config = setup.config.budgets[workload.budget]
    ledger = BudgetLedger(workload.budget, budget_config)
    cluster = SimulatedCluster(workload.startup_lead_seconds, setup.preemptions_per_hour, setup.seed)
    load_signal = workload.load_signal.name

    # Warm-up: seed the history with what a Prometheus range query would have returned.
    warm_times = np.arange(setup.trace.start, setup.eval_start, setup.tick_seconds)
    if warm_times.size:
        warm_load, warm_centres = observed_load_with_centres(setup.trace, warm_times, max(setup.tick_seconds, setup.trace.interval_seconds))
        runtime.history.extend(warm_centres, warm_load)

    times = _tick_times(setup)
    loads, centres = observed_load_with_centres(setup.trace, times, max(setup.tick_seconds, setup.trace.interval_seconds))
    count = len(times)
    requested = np.zeros(count, dtype=np.int64)
    ready = np.zeros(count, dtype=np.int64)
    on_demand = np.zeros(count, dtype=np.int64)
    spot = np.zeros(count, dtype=np.int64)
    forecast = np.full(count, np.nan)
    remaining = np.zeros(count)

    first_budget = ledger.state_for(workload.name, times[0])
    initial = _initial_replicas(loads[0], runtime.settings.load_signal.per_replica, workload)
    od0, spot0 = _split(initial, first_budget)
    cluster.start_ready(od0, spot0)
    runtime.current_replicas = initial
    fits = 0
    models_used: dict[str, int] = {}
    fallback_ticks = 0
    budget_cut_ticks = 0
    warnings_seen: list[str] = []
    scores: dict[str, float] = {}

    for i in range(count):
        now = float(times[i])
        cluster.advance(now)
        runtime.observe(load_signal, Observation.checked(float(loads[i]), now, sample_time=float(centres[i])))
        if runtime.fit_due(now):
            request = runtime.fit_request(now)
            if request is not None:
                outcome = fit_job(request.requested, request.history, request.season, request.upper_quantile_ratio, request.end_index, request.horizon)
                runtime.apply_fit(outcome, now)
                fits += 1
                warnings_seen.extend(outcome.warnings)
                scores = dict(outcome.scores)
        if runtime.update_due(now):
            runtime.update_forecast(now)
        budget = ledger.state_for(workload.name, now)
        decision = runtime.decide(budget, now, current_replicas=cluster.requested())
        cluster.scale(decision.on_demand_replicas, decision.spot_replicas, now)
        ledger.accrue(workload.name, decision.on_demand_replicas, decision.spot_replicas, setup.tick_seconds, now + setup.tick_seconds)
        requested[i] = decision.final_replicas
        ready[i] = cluster.ready_total
        on_demand[i] = decision.on_demand_replicas
        spot[i] = decision.spot_replicas
        if decision.forecast_upper_per_second is not None:
            forecast[i] = decision.forecast_upper_per_second
        if decision.budget_replicas < decision.clamped_replicas:
            budget_cut_ticks += 1
        if decision.forecaster in ("reactive_fallback", "none"):
            fallback_ticks += 1
        else:
            models_used[decision.forecaster] = models_used.get(decision.forecaster, 0) + 1
        remaining[i] = decision.budget_remaining_ratio
        if progress is not None and i % 1000 == 999:
            progress(1000)
    if progress is not None:
        progress(count % 1000)

    notes = []
    if workload.forecaster.model != "none" and fallback_ticks:
        share = fallback_ticks / max(count, 1)
        reason = runtime.fit_outcome.fallback_reason if runtime.fit_outcome and runtime.fit_outcome.model is None else ""
        if fallback_ticks == count:
            notes.append(f"the forecaster never produced a forecast{': ' + reason if reason else ''}; the predictive policy ran on its reactive path only")
        elif share > 0.05:
            notes.append(f"{share:.0%} of ticks had no forecast and ran on the reactive path")
    if budget_cut_ticks / max(count, 1) > 0.05:
        notes.append(
            f"the budget cut the planned count in {budget_cut_ticks / count:.0%} of ticks (tier scale factor or cost ceiling); "
            f"the baselines have no budget, so raise the budget's max_hourly_cost to compare forecasting alone"
        )
    summary: dict[str, object] = {
        "notes": notes,
        "budget_limited_ticks": budget_cut_ticks,
        "requested_model": workload.forecaster.model,
        "fits": fits,
        "ticks_by_model": models_used,
        "reactive_fallback_ticks": fallback_ticks,
        "last_backtest_mase": scores,
        "fit_warnings": len(warnings_seen),
        "spot_preemptions": cluster.preemptions,
    }
    run = PolicyRun("predictive", times, requested, ready, on_demand, spot, forecast, remaining, workload.target_utilization_ratio)
    return run, summary


def _split(total: int, budget: BudgetState) -> tuple[int, int]:
    return split_spot(total, budget.spot_ratio, budget.min_on_demand_replicas)


def run_hpa(setup: SimulationSetup, target_utilization_ratio: float, name: str = "hpa") -> PolicyRun:
    """Run the Kubernetes HPA algorithm through the same planner, with no forecast and no budget."""
    workload = setup.workload.model_copy(
        update={
            "target_utilization_ratio": target_utilization_ratio,
            "tolerance_ratio": HPA_TOLERANCE_RATIO,
            "behavior": kubernetes_hpa_default_behavior(),
        }
    )
    settings = dataclasses.replace(PlannerSettings.from_config(workload), use_forecast=False)
    runtime = WorkloadRuntime.create(workload, settings)
    budget_config = setup.config.budgets[workload.budget]
    # Baselines run a fixed capacity mix: the spot share of the most generous tier.
    budget = BudgetState.unlimited(budget_config.tiers[0].spot_ratio, budget_config.min_on_demand_replicas)
    cluster = SimulatedCluster(workload.startup_lead_seconds, setup.preemptions_per_hour, setup.seed)
    load_signal = workload.load_signal.name

    # The HPA syncs every 15 s regardless of the daemon's tick; it is scored on the same ticks.
    times = _tick_times(setup)
    loads = observed_load(setup.trace, times, max(HPA_SYNC_SECONDS, setup.trace.interval_seconds))
    count = len(times)
    requested = np.zeros(count, dtype=np.int64)
    ready = np.zeros(count, dtype=np.int64)
    on_demand = np.zeros(count, dtype=np.int64)
    spot = np.zeros(count, dtype=np.int64)

    initial = _initial_replicas(loads[0], settings.load_signal.per_replica, workload)
    cluster.start_ready(*_split(initial, budget))
    for i in range(count):
        now = float(times[i])
        cluster.advance(now)
        runtime.latest[load_signal] = Observation.checked(float(loads[i]), now)
        decision = runtime.decide(budget, now, current_replicas=cluster.requested())
        cluster.scale(decision.on_demand_replicas, decision.spot_replicas, now)
        requested[i] = decision.final_replicas
        ready[i] = cluster.ready_total
        on_demand[i] = decision.on_demand_replicas
        spot[i] = decision.spot_replicas
    return PolicyRun(name, times, requested, ready, on_demand, spot, np.full(count, np.nan), np.ones(count), target_utilization_ratio)


def scoring_grid(setup: SimulationSetup) -> tuple[np.ndarray, np.ndarray, float]:
    """Return grid times, the true load (units/s) at each, and the grid step in seconds."""
    step = min(setup.trace.interval_seconds, setup.tick_seconds)
    times = np.arange(setup.eval_start, setup.eval_end, step)
    index = np.clip(np.floor((times - setup.trace.start) / setup.trace.interval_seconds).astype(int), 0, len(setup.trace.counts) - 1)
    return times, setup.trace.rates[index], step


def _on_grid(run: PolicyRun, grid_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(run.tick_times, grid_times, side="right") - 1, 0, len(run.tick_times) - 1)
    return values[index]


def score_run(run: PolicyRun, grid_times: np.ndarray, grid_load: np.ndarray, step: float, setup: SimulationSetup) -> PolicyScore:
    budget = setup.config.budgets[setup.workload.budget]
    capacity = _on_grid(run, grid_times, run.ready) * setup.workload.capacity_per_replica
    on_demand = _on_grid(run, grid_times, run.on_demand)
    spot = _on_grid(run, grid_times, run.spot)
    return _score(capacity, on_demand, spot, run.requested, grid_load, step, budget.on_demand_price_per_replica_hour, budget.spot_price_per_replica_hour)


def _score(capacity, on_demand, spot, requested_series, load, step, price_on_demand, price_spot) -> PolicyScore:
    short = capacity < load - 1e-9
    total_load = float(np.sum(load)) * step
    unserved = float(np.sum(np.maximum(load - capacity, 0.0))) * step
    replica_seconds_od = float(np.sum(on_demand)) * step
    replica_seconds_spot = float(np.sum(spot)) * step
    replica_hours = (replica_seconds_od + replica_seconds_spot) / 3600.0
    cost = (replica_seconds_od * price_on_demand + replica_seconds_spot * price_spot) / 3600.0
    actions = int(np.count_nonzero(np.diff(requested_series)))
    return PolicyScore(
        slo_violation_minutes=float(np.sum(short)) * step / 60.0,
        unserved_fraction=unserved / total_load if total_load > 0 else 0.0,
        replica_hours=replica_hours,
        cost=cost,
        spot_share=(replica_seconds_spot / 3600.0) / replica_hours if replica_hours > 0 else 0.0,
        scaling_actions=actions,
    )


def run_static_and_oracle(setup: SimulationSetup, grid_times: np.ndarray, grid_load: np.ndarray, step: float) -> tuple[dict[str, PolicyRun], dict[str, PolicyScore]]:
    """Score the two reference policies directly on the grid."""
    workload = setup.workload
    budget = setup.config.budgets[workload.budget]
    spot_ratio = budget.tiers[0].spot_ratio
    capacity = workload.capacity_per_replica
    runs: dict[str, PolicyRun] = {}
    scores: dict[str, PolicyScore] = {}

    # Static: the peak of the scored period at full utilization, ready throughout.
    peak = float(np.max(grid_load)) if grid_load.size else 0.0
    static_replicas = min(max(ceil_replicas(peak / capacity), workload.min_replicas), workload.max_replicas)
    static = np.full(grid_times.size, static_replicas, dtype=np.int64)

    # Oracle: exactly the replicas each instant needs, each started one lead before it is needed.
    needed = np.array([ceil_replicas(value / capacity) for value in grid_load], dtype=np.int64)
    needed = np.clip(needed, workload.min_replicas, workload.max_replicas)
    lead_steps = int(math.ceil(workload.startup_lead_seconds / step))
    provisioned = _forward_max(needed, lead_steps)

    for name, ready, paid in (("static_peak", static, static), ("oracle", needed, provisioned)):
        od = np.array([split_spot(int(value), spot_ratio, budget.min_on_demand_replicas)[0] for value in paid], dtype=np.int64)
        sp = paid - od
        scores[name] = _score(ready * capacity, od, sp, paid, grid_load, step, budget.on_demand_price_per_replica_hour, budget.spot_price_per_replica_hour)
        runs[name] = PolicyRun(name, grid_times, paid, ready, od, sp, np.full(grid_times.size, np.nan), np.ones(grid_times.size))
    return runs, scores


def _forward_max(values: np.ndarray, window: int) -> np.ndarray:
    """For each i, the max of values[i : i + window + 1] (replicas started `window` steps early)."""
    if window <= 0 or values.size == 0:
        return values.copy()
    padded = np.concatenate((values, np.full(window, values[-1])))
    return sliding_window_view(padded, window + 1).max(axis=1)


BISECTION_STEPS = 14


def bisect_same_spend(
    setup: SimulationSetup,
    target_replica_hours: float,
    grid_times: np.ndarray,
    grid_load: np.ndarray,
    step: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[PolicyRun, PolicyScore, list[str]]:
    """Find the HPA target utilization whose replica-hours match `target_replica_hours`.

    Replica-hours fall as the target utilization rises, so bisection on [0.05, 1.0]
    converges; the closest run found is returned with a note when no exact match exists.
    """
    low, high = 0.05, 1.0
    best: tuple[float, PolicyRun, PolicyScore] | None = None
    notes: list[str] = []
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        run = run_hpa(setup, middle, "hpa_same_spend")
        if progress is not None:
            progress(1)
        score = score_run(run, grid_times, grid_load, step, setup)
        gap = abs(score.replica_hours - target_replica_hours)
        if best is None or gap < best[0]:
            best = (gap, run, score)
        if gap <= 0.002 * max(target_replica_hours, 1e-9):
            break
        if score.replica_hours > target_replica_hours:
            low = middle
        else:
            high = middle
    assert best is not None
    gap, run, score = best
    if gap > 0.01 * max(target_replica_hours, 1e-9):
        notes.append(
            f"hpa_same_spend could not match the predictive replica-hours within 1 % "
            f"(closest {score.replica_hours:.2f} vs {target_replica_hours:.2f} at target utilization {run.target_utilization_ratio:.3f})"
        )
    return run, score, notes


def simulate(
    setup: SimulationSetup,
    progress: Callable[[int], None] | None = None,
    baseline_progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run every policy on the setup's trace and score them on one grid.

    `progress` receives tick counts of the predictive run; `baseline_progress` receives
    one call per HPA run (the default target, then each bisection step).
    """
    grid_times, grid_load, step = scoring_grid(setup)
    runs: dict[str, PolicyRun] = {}
    scores: dict[str, PolicyScore] = {}

    predictive, summary = run_predictive(setup, progress)
    runs["predictive"] = predictive
    scores["predictive"] = score_run(predictive, grid_times, grid_load, step, setup)

    runs["hpa"] = run_hpa(setup, setup.hpa_target_utilization_ratio)
    if baseline_progress is not None:
        baseline_progress(1)
    scores["hpa"] = score_run(runs["hpa"], grid_times, grid_load, step, setup)

    same, same_score, notes = bisect_same_spend(setup, scores["predictive"].replica_hours, grid_times, grid_load, step, baseline_progress)
    same.notes.extend(notes)
    runs["hpa_same_spend"] = same
    scores["hpa_same_spend"] = same_score

    reference_runs, reference_scores = run_static_and_oracle(setup, grid_times, grid_load, step)
    runs.update(reference_runs)
    scores.update(reference_scores)
    summary["hpa_same_spend_target_utilization_ratio"] = round(same.target_utilization_ratio or 0.0, 4)
    summary["notes"] = [*summary.get("notes", []), *notes]
    return SimulationResult(setup, runs, scores, grid_times, grid_load, summary)
