"""The planner: one pure function from a workload's inputs to a decision record.

`plan` never reads the clock, the network or the environment, so the daemon, the
simulator and the tests run exactly the same arithmetic. The stages follow the
Kubernetes HPA controller where they overlap with it (tolerance, stabilization
windows, rate policies, min/max) and add the forecast, the budget and the spot split:

    forecast proposal   forecast upper quantile over [now + lead, now + horizon]
    reactive proposal   HPA formula per signal, max over usable signals; the load
                        signal uses the fallback utilization when the forecast is missing
    combined            max of the two (a forecast adds capacity, never removes it)
    stabilized          HPA stabilization windows over past combined values
    rate limited        HPA scale-up / scale-down policies
    clamped             min_replicas .. max_replicas
    budget              tier scale factor, then the hard cost ceiling
    continuity floor    never below what the observed arrival rate needs
    final, split        on-demand + spot == final
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runtime.config import Behavior, ScalingRules, WorkloadConfig
from runtime.model import BudgetState, Decision, ForecastPath, Observation, Reason, WorkloadState

DEFAULT_BACKLOG_PER_REPLICA = 1000.0
# Guards ceil() against float noise: 10.000000001 replicas must stay 10.
_CEIL_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    role: str  # "load" or "backlog"
    per_replica: float  # load units per second, or backlog units, one replica is planned to take
    stale_after_seconds: float


@dataclass(frozen=True, slots=True)
class RulesSpec:
    stabilization_window_seconds: float
    select_policy: str  # "Max", "Min" or "Disabled"
    policies: tuple[tuple[str, int, float], ...]  # (type, value, period_seconds)

    @classmethod
    def from_rules(cls, rules: ScalingRules) -> "RulesSpec":
        return cls(
            float(rules.stabilization_window_seconds),
            rules.select_policy,
            tuple((policy.type, policy.value, float(policy.period_seconds)) for policy in rules.policies),
        )

    @property
    def longest_period_seconds(self) -> float:
        return max(period for _, _, period in self.policies)


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """The subset of a workload's config the planner reads, in a form that is cheap to access."""

    name: str
    min_replicas: int
    max_replicas: int
    capacity_per_replica: float
    target_utilization_ratio: float
    tolerance_ratio: float
    startup_lead_seconds: float
    forecast_horizon_seconds: float
    signals: tuple[SignalSpec, ...]
    scale_up: RulesSpec
    scale_down: RulesSpec
    use_forecast: bool = True
    # Per-replica load planned for while forecasting is on but no forecast is available;
    # None means the load signal's own per_replica.
    fallback_load_per_replica: float | None = None

    @classmethod
    def from_config(cls, workload: WorkloadConfig, behavior: Behavior | None = None) -> "PlannerSettings":
        behavior = behavior or workload.behavior
        signals = []
        for signal in workload.signals:
            if signal.role == "load":
                per_replica = workload.capacity_per_replica * workload.target_utilization_ratio
            else:
                # A Kafka lag source's lag_threshold is its records per replica.
                source_threshold = getattr(signal.source, "lag_threshold", None)
                per_replica = signal.target_per_replica or source_threshold or DEFAULT_BACKLOG_PER_REPLICA
            signals.append(SignalSpec(signal.name, signal.role, per_replica, signal.stale_after_seconds))
        return cls(
            name=workload.name,
            min_replicas=workload.min_replicas,
            max_replicas=workload.max_replicas,
            capacity_per_replica=workload.capacity_per_replica,
            target_utilization_ratio=workload.target_utilization_ratio,
            tolerance_ratio=workload.tolerance_ratio,
            startup_lead_seconds=float(workload.startup_lead_seconds),
            forecast_horizon_seconds=float(workload.forecast_horizon_seconds),
            signals=tuple(signals),
            scale_up=RulesSpec.from_rules(behavior.scale_up),
            scale_down=RulesSpec.from_rules(behavior.scale_down),
            # A workload without a load signal has nothing to forecast.
            use_forecast=workload.forecaster.model != "none" and workload.load_signal is not None,
            fallback_load_per_replica=(
                workload.capacity_per_replica * workload.fallback_target_utilization_ratio
                if workload.fallback_target_utilization_ratio is not None
                else None
            ),
        )

    @property
    def load_signal(self) -> SignalSpec | None:
        return next((signal for signal in self.signals if signal.role == "load"), None)


def ceil_replicas(value: float) -> int:
    return int(math.ceil(value - _CEIL_EPSILON)) if value > 0 else 0


def reactive_replicas(value: float, per_replica: float, current: int, tolerance: float) -> tuple[int, bool]:
    """Apply the HPA formula to one signal; return (replicas, whether the tolerance band held them)."""
    if current > 0:
        usage_ratio = value / (current * per_replica)
        if abs(usage_ratio - 1.0) <= tolerance:
            return current, True
    return ceil_replicas(value / per_replica), False


def _change_in_period(events: list[tuple[float, int]], now: float, period: float) -> int:
    return sum(change for timestamp, change in events if timestamp > now - period)


def scale_up_limit(current: int, state: WorkloadState, rules: RulesSpec, now: float) -> int:
    """Return the highest count the scale-up policies allow now (HPA semantics)."""
    if rules.select_policy == "Disabled":
        return current
    use_max = rules.select_policy == "Max"
    result = None
    for kind, value, period in rules.policies:
        added = _change_in_period(state.scale_up_events, now, period)
        removed = _change_in_period(state.scale_down_events, now, period)
        period_start = current - added + removed
        if kind == "Pods":
            proposed = period_start + value
        else:
            # Rounded up so that a small count still grows (1 * 1.5 -> 2).
            proposed = int(math.ceil(period_start * (1 + value / 100.0)))
        if result is None:
            result = proposed
        else:
            result = max(result, proposed) if use_max else min(result, proposed)
    assert result is not None
    limit = max(result, current)
    # A percent-only policy cannot grow from zero; let the first replica through, as activation does.
    if current == 0 and limit == 0:
        limit = 1
    return limit


def scale_down_limit(current: int, state: WorkloadState, rules: RulesSpec, now: float) -> int:
    """Return the lowest count the scale-down policies allow now (HPA semantics)."""
    if rules.select_policy == "Disabled":
        return current
    use_max_change = rules.select_policy == "Max"
    result = None
    for kind, value, period in rules.policies:
        added = _change_in_period(state.scale_up_events, now, period)
        removed = _change_in_period(state.scale_down_events, now, period)
        period_start = current - added + removed
        if kind == "Pods":
            proposed = period_start - value
        else:
            # Truncated, as the HPA does: 10 replicas at 5 % may go to 9.
            proposed = int(period_start * (1 - value / 100.0))
        if result is None:
            result = proposed
        else:
            result = min(result, proposed) if use_max_change else max(result, proposed)
    assert result is not None
    return min(result, current)


def split_spot(final: int, spot_ratio: float, min_on_demand: int) -> tuple[int, int]:
    """Split a replica count into (on_demand, spot); the two always add up to `final`."""
    spot = int(math.floor(final * spot_ratio + 0.5))
    on_demand = final - spot
    floor = min(min_on_demand, final)
    if on_demand < floor:
        on_demand = floor
        spot = final - on_demand
    return on_demand, spot


def plan(
    settings: PlannerSettings,
    observations: dict[str, Observation],
    forecast: ForecastPath | None,
    budget: BudgetState,
    current_replicas: int,
    state: WorkloadState,
    now: float,
) -> tuple[Decision, WorkloadState]:
    """Decide the replica count of one workload; return the decision and the updated state.

    The input state is not modified. Unknown signals (missing, NaN, infinite, negative
    or stale) never count as zero. While any signal is unknown, the workload keeps its
    last safe count and may only scale up on the signals that remain usable.
    """
    current = current_replicas
    details: list[str] = []

    # Stage 1: forecast proposal over the window new replicas could actually serve.
    forecast_replicas: int | None = None
    forecast_upper: float | None = None
    forecaster = "none"
    load_spec = settings.load_signal
    if settings.use_forecast and forecast is not None and load_spec is not None:
        forecast_upper = forecast.window_max(now + settings.startup_lead_seconds, now + settings.forecast_horizon_seconds)
        if forecast_upper is not None:
            forecast_replicas = ceil_replicas(forecast_upper / load_spec.per_replica)
            forecaster = forecast.model
        else:
            forecaster = "reactive_fallback"
            details.append("forecast does not cover the lead window")
    elif settings.use_forecast:
        forecaster = "reactive_fallback"

    # Stage 2: reactive proposal, the max over usable signals like a multi-metric HPA.
    # Without the forecast it would have had, the load signal plans with the fallback headroom.
    forecast_missing = settings.use_forecast and forecast_replicas is None
    reactive: int | None = None
    within_tolerance = False
    invalid: list[str] = []
    load_value = math.nan
    for signal in settings.signals:
        observation = observations.get(signal.name)
        if observation is None:
            invalid.append(signal.name)
            details.append(f"{signal.name}: no sample yet")
            continue
        usable, validity, why = observation.usable_at(now, signal.stale_after_seconds)
        if not usable:
            invalid.append(signal.name)
            details.append(f"{signal.name}: {validity.value} ({why})")
            continue
        per_replica = signal.per_replica
        if signal.role == "load":
            load_value = observation.value
            if forecast_missing and settings.fallback_load_per_replica is not None:
                per_replica = settings.fallback_load_per_replica
        proposal, held = reactive_replicas(observation.value, per_replica, current, settings.tolerance_ratio)
        if observation.max_replicas is not None and proposal >= observation.max_replicas:
            proposal, held = observation.max_replicas, False
        if reactive is None or proposal > reactive:
            reactive = proposal
            within_tolerance = held
        elif proposal == reactive:
            within_tolerance = within_tolerance or held

    # Stage 3: combine. Unknown signals block scale-down below the last safe count.
    proposals = [value for value in (reactive, forecast_replicas) if value is not None]
    holding = False
    if invalid:
        hold = state.last_safe_replicas if state.last_safe_replicas is not None else current
        best_valid = max(proposals) if proposals else None
        if best_valid is None or best_valid <= hold:
            combined = hold
            holding = True
        else:
            combined = best_valid
    elif proposals:
        combined = max(proposals)
    else:
        combined = current

    # Stage 4: stabilization windows (HPA: up takes the min, down the max, of recent recommendations).
    up_cutoff = now - settings.scale_up.stabilization_window_seconds
    down_cutoff = now - settings.scale_down.stabilization_window_seconds
    up_recommendation = combined
    down_recommendation = combined
    for timestamp, recommendation in state.recommendations:
        if timestamp > up_cutoff and recommendation < up_recommendation:
            up_recommendation = recommendation
        if timestamp > down_cutoff and recommendation > down_recommendation:
            down_recommendation = recommendation
    started_at = state.started_at if state.last_decision_at is not None else now
    start_replicas = state.start_replicas if state.last_decision_at is not None else current
    if started_at is not None and start_replicas is not None and now - started_at < settings.scale_down.stabilization_window_seconds:
        down_recommendation = max(down_recommendation, start_replicas)
    stabilized = current
    if stabilized < up_recommendation:
        stabilized = up_recommendation
    if stabilized > down_recommendation:
        stabilized = down_recommendation

    # Stage 5: rate policies.
    rate_limited = stabilized
    down_limit = scale_down_limit(current, state, settings.scale_down, now)
    if stabilized > current:
        rate_limited = min(stabilized, scale_up_limit(current, state, settings.scale_up, now))
    elif stabilized < current:
        rate_limited = max(stabilized, down_limit)

    # Stage 6: bounds.
    clamped = min(max(rate_limited, settings.min_replicas), settings.max_replicas)

    # Stage 7: budget factor, then the hard ceiling on hourly cost.
    budgeted = ceil_replicas(clamped * budget.scale_factor) if budget.scale_factor < 1.0 else clamped
    if not budget.aggressive_scale_down and budgeted < current:
        # A tight budget may shrink the workload only as fast as the scale-down policy allows.
        budgeted = max(budgeted, min(current, max(down_limit, settings.min_replicas)))
    budgeted = max(budgeted, min(settings.min_replicas, clamped))
    ceiling_hit = budget.ceiling_replicas is not None and budgeted > budget.ceiling_replicas
    if ceiling_hit:
        # The ceiling never cuts below min_replicas, which the operator set on purpose.
        budgeted = max(budget.ceiling_replicas or 0, min(settings.min_replicas, clamped))

    # Stage 8: continuity floor. It only restores what the budget cut, never more than `clamped`.
    floor = 0
    if not math.isnan(load_value):
        floor = min(ceil_replicas(load_value / settings.capacity_per_replica), clamped)
    final = max(budgeted, floor)

    # Stage 9: spot split.
    on_demand, spot = split_spot(final, budget.spot_ratio, budget.min_on_demand_replicas)

    reason = _reason(
        current, reactive, forecast_replicas, within_tolerance, combined, stabilized, rate_limited,
        clamped, budgeted, final, holding, ceiling_hit, settings,
    )
    if budget.alert:
        details.append(f"budget alert: hourly spend at or above the alert threshold (tier {budget.tier_name})")
    if ceiling_hit and final > budgeted:
        details.append(f"continuity floor {final} exceeds the budget ceiling {budget.ceiling_replicas}")

    decision = Decision(
        workload=settings.name,
        timestamp=now,
        current_replicas=current,
        load_per_second=load_value,
        reactive_replicas=reactive,
        forecast_replicas=forecast_replicas,
        forecast_upper_per_second=None if forecast_upper is None else round(forecast_upper, 6),
        forecaster=forecaster,
        combined_replicas=combined,
        stabilized_replicas=stabilized,
        rate_limited_replicas=rate_limited,
        clamped_replicas=clamped,
        budget_replicas=budgeted,
        continuity_floor_replicas=floor,
        final_replicas=final,
        on_demand_replicas=on_demand,
        spot_replicas=spot,
        reason=reason,
        budget_tier=budget.tier_name,
        budget_remaining_ratio=budget.remaining_ratio,
        invalid_signals=tuple(invalid),
        detail="; ".join(details),
    )
    # A held count is no recommendation: stored, it would block scale-up for the up window.
    next_state = _next_state(state, settings, None if holding else combined, current, final, now)
    next_state.started_at, next_state.start_replicas = started_at, start_replicas
    return decision, next_state


def _reason(
    current: int,
    reactive: int | None,
    forecast_replicas: int | None,
    within_tolerance: bool,
    combined: int,
    stabilized: int,
    rate_limited: int,
    clamped: int,
    budgeted: int,
    final: int,
    holding: bool,
    ceiling_hit: bool,
    settings: PlannerSettings,
) -> Reason:
    """Name the last stage that set the count; holding on unknown signals outranks the rest."""
    if holding and final == combined:
        return Reason.HOLDING_LAST_SAFE_STATE
    if final != budgeted:
        return Reason.CONTINUITY_FLOOR
    if budgeted != clamped:
        return Reason.BUDGET_CEILING if ceiling_hit else Reason.BUDGET_LIMITED
    if clamped != rate_limited:
        return Reason.AT_MAX_REPLICAS if clamped == settings.max_replicas else Reason.AT_MIN_REPLICAS
    if rate_limited != stabilized:
        return Reason.SCALE_UP_LIMITED if stabilized > current else Reason.SCALE_DOWN_LIMITED
    if stabilized != combined:
        return Reason.STABILIZED
    if holding:
        return Reason.HOLDING_LAST_SAFE_STATE
    if forecast_replicas is not None and (reactive is None or forecast_replicas > reactive) and combined == forecast_replicas and combined > current:
        return Reason.FORECAST_AHEAD
    if within_tolerance and combined == current:
        return Reason.WITHIN_TOLERANCE
    return Reason.WITHIN_RANGE


def _next_state(
    state: WorkloadState, settings: PlannerSettings, combined: int | None, current: int, final: int, now: float
) -> WorkloadState:
    """Record this evaluation and prune entries no window reads any more."""
    keep_recommendations = max(settings.scale_up.stabilization_window_seconds, settings.scale_down.stabilization_window_seconds)
    keep_events = max(settings.scale_up.longest_period_seconds, settings.scale_down.longest_period_seconds)
    recommendations = [item for item in state.recommendations if item[0] > now - keep_recommendations]
    if combined is not None:
        recommendations.append((now, combined))
    up_events = [item for item in state.scale_up_events if item[0] > now - keep_events]
    down_events = [item for item in state.scale_down_events if item[0] > now - keep_events]
    if final > current:
        up_events.append((now, final - current))
    elif final < current:
        down_events.append((now, current - final))
    return WorkloadState(
        recommendations=recommendations,
        scale_up_events=up_events,
        scale_down_events=down_events,
        last_safe_replicas=final,
        last_decision_at=now,
    )
