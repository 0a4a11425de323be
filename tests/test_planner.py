"""Table-driven planner cases. Each case states the arithmetic it checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from runtime.config import Behavior, WorkloadConfig
from runtime.model import BudgetState, ForecastPath, Observation, Reason, Validity, WorkloadState
from runtime.planner import PlannerSettings, RulesSpec, SignalSpec, plan, split_spot

NOW = 1_000_000.0
FAST = RulesSpec(0.0, "Max", (("Pods", 1000, 15.0),))
UNLIMITED = BudgetState.unlimited()


def make_settings(**overrides) -> PlannerSettings:
    base = dict(
        name="w", min_replicas=1, max_replicas=100, capacity_per_replica=10.0, target_utilization_ratio=1.0,
        tolerance_ratio=0.1, startup_lead_seconds=480.0, forecast_horizon_seconds=900.0,
        signals=(SignalSpec("load", "load", 10.0, 120.0),), scale_up=FAST, scale_down=FAST, use_forecast=True,
    )
    base.update(overrides)
    return PlannerSettings(**base)


def load(value: float, at: float = NOW) -> dict[str, Observation]:
    return {"load": Observation.checked(value, at)}


def run(settings, observations, current, state=None, forecast=None, budget=UNLIMITED):
    return plan(settings, observations, forecast, budget, current, state or WorkloadState(), NOW)


def default_behavior_settings(**overrides) -> PlannerSettings:
    workload = WorkloadConfig.model_validate({
        "name": "w", "target": {"namespace": "n", "name": "w"}, "max_replicas": 1000, "capacity_per_replica": 10.0,
        "target_utilization_ratio": 1.0, "signals": [{"name": "load", "role": "load", "source": {"kind": "trace", "path": "x.csv"}}],
    })
    settings = PlannerSettings.from_config(workload, Behavior())
    fields = {slot: getattr(settings, slot) for slot in settings.__dataclass_fields__}
    fields.update(overrides)
    return PlannerSettings(**fields)


CASES = [
    # id, current, load, expected final, expected reason
    # 105 / (10 * 10) = 1.05, inside 1 +- 0.1: keep 10.
    ("tolerance-holds", 10, 105.0, 10, Reason.WITHIN_TOLERANCE),
    # 115 / 100 = 1.15, outside the band: ceil(115 / 10) = 12.
    ("tolerance-exceeded-up", 10, 115.0, 12, Reason.WITHIN_RANGE),
    # 89 / 100 = 0.89, outside the band: ceil(8.9) = 9.
    ("tolerance-exceeded-down", 10, 89.0, 9, Reason.WITHIN_RANGE),
    # ceil(5000 / 10) = 500 > max 100.
    ("clamped-at-max", 10, 5000.0, 100, Reason.AT_MAX_REPLICAS),
    # ceil(0 / 10) = 0 < min 1.
    ("clamped-at-min", 10, 0.0, 1, Reason.AT_MIN_REPLICAS),
]


@pytest.mark.parametrize(("current", "value", "expected", "reason"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_reactive_stage(current, value, expected, reason):
    decision, _ = run(make_settings(use_forecast=False), load(value), current)
    assert decision.final_replicas == expected
    assert decision.reason is reason


def test_scale_up_stabilization_window():
    # Window 60 s takes the min of recent recommendations: 10 at now-30 and 20 now -> 10.
    settings = make_settings(scale_up=RulesSpec(60.0, "Max", (("Pods", 1000, 15.0),)), use_forecast=False)
    state = WorkloadState(recommendations=[(NOW - 30, 10)])
    decision, _ = run(settings, load(200.0), 10, state)
    assert decision.combined_replicas == 20
    assert decision.final_replicas == 10
    assert decision.reason is Reason.STABILIZED


def test_scale_up_after_window_passes():
    # The only older recommendation is 61 s old, outside the 60 s window: go to 20.
    settings = make_settings(scale_up=RulesSpec(60.0, "Max", (("Pods", 1000, 15.0),)), use_forecast=False)
    state = WorkloadState(recommendations=[(NOW - 61, 10)])
    decision, _ = run(settings, load(200.0), 10, state)
    assert decision.final_replicas == 20


def test_scale_down_stabilization_window():
    # Window 600 s takes the max: 10 at now-300 and 5 now -> stay at 10.
    settings = make_settings(scale_down=RulesSpec(600.0, "Max", (("Percent", 100, 15.0),)), use_forecast=False)
    state = WorkloadState(recommendations=[(NOW - 300, 10)])
    decision, _ = run(settings, load(50.0), 10, state)
    assert decision.final_replicas == 10
    assert decision.reason is Reason.STABILIZED


RATE_CASES = [
    # id, select policy, current, expected
    # Percent 50: ceil(4 * 1.5) = 6; Pods 10: 4 + 10 = 14; Max -> 14.
    ("default-max-small", "Max", 4, 14),
    # Percent 50: ceil(40 * 1.5) = 60; Pods 10: 50; Max -> 60.
    ("default-max-large", "Max", 40, 60),
    # Min picks the smaller change: min(60, 50) = 50.
    ("min-policy", "Min", 40, 50),
    # Disabled: no scale-up at all.
    ("disabled", "Disabled", 40, 40),
]


@pytest.mark.parametrize(("select", "current", "expected"), [case[1:] for case in RATE_CASES], ids=[case[0] for case in RATE_CASES])
def test_scale_up_rate_policies(select, current, expected):
    up = RulesSpec(0.0, select, (("Percent", 50, 30.0), ("Pods", 10, 30.0)))
    decision, _ = run(make_settings(scale_up=up, max_replicas=1000, use_forecast=False), load(10_000.0), current)
    assert decision.final_replicas == expected
    assert decision.reason is (Reason.SCALE_UP_LIMITED if expected < 1000 else Reason.WITHIN_RANGE)


def test_defaults_scale_up_named_case():
    # Defaults: stabilization 60 s, 50 % or 10 pods per 30 s, Max. From 4 with no history: 14.
    decision, _ = run(default_behavior_settings(use_forecast=False), load(10_000.0), 4)
    assert decision.final_replicas == 14


def test_defaults_scale_down_named_case():
    # Defaults: stabilization 600 s and 5 % per 120 s. From 100, a drop to load 10 is
    # first held by the window (a recommendation of 100 at now-300), then limited to
    # int(100 * 0.95) = 95 once the window has passed.
    settings = default_behavior_settings(use_forecast=False)
    held, _ = run(settings, load(10.0), 100, WorkloadState(recommendations=[(NOW - 300, 100)]))
    assert held.final_replicas == 100
    assert held.reason is Reason.STABILIZED
    limited, _ = run(settings, load(10.0), 100, WorkloadState(recommendations=[(NOW - 601, 100)], last_decision_at=NOW - 15))
    assert limited.final_replicas == 95
    assert limited.reason is Reason.SCALE_DOWN_LIMITED


def test_restart_keeps_scale_down_window():
    # A fresh process finds 20 running and needs 9: the 600 s window starts now, with 20 in it.
    settings = default_behavior_settings(use_forecast=False)
    first, state = run(settings, load(90.0), 20)
    assert first.final_replicas == 20
    assert first.reason is Reason.STABILIZED
    later, _ = plan(settings, load(90.0, NOW + 300), None, UNLIMITED, 20, state, NOW + 300)
    assert later.final_replicas == 20
    # After the window, the 5 % per 120 s policy applies: int(20 * 0.95) = 19.
    after, _ = plan(settings, load(90.0, NOW + 601), None, UNLIMITED, 20, state, NOW + 601)
    assert after.final_replicas == 19


def test_held_tick_does_not_block_scale_up():
    # The first tick has no sample and keeps 2; the next, with load for 9, must not be
    # stabilized down to the held 2 by the 60 s scale-up window.
    settings = default_behavior_settings(use_forecast=False)
    held, state = run(settings, {}, 2)
    assert held.reason is Reason.HOLDING_LAST_SAFE_STATE
    assert state.recommendations == []
    decision, _ = plan(settings, load(90.0, NOW + 5), None, UNLIMITED, 2, state, NOW + 5)
    assert decision.final_replicas == 9


def test_scale_down_counts_earlier_removals():
    # 5 removed 60 s ago: the period started at 105, int(105 * 0.95) = 99, so only one more.
    down = RulesSpec(0.0, "Max", (("Percent", 5, 120.0),))
    state = WorkloadState(scale_down_events=[(NOW - 60, 5)])
    decision, _ = run(make_settings(scale_down=down, use_forecast=False), load(10.0), 100, state)
    assert decision.final_replicas == 99


def test_pods_and_percent_scale_down_min_select():
    # Percent 50: int(20 * 0.5) = 10; Pods 2: 18. Min select takes the smaller change: 18.
    down = RulesSpec(0.0, "Min", (("Percent", 50, 60.0), ("Pods", 2, 60.0)))
    decision, _ = run(make_settings(scale_down=down, use_forecast=False), load(10.0), 20)
    assert decision.final_replicas == 18


def test_percent_only_policy_leaves_zero():
    # ceil(0 * 1.5) = 0 would never grow; the first replica is let through.
    up = RulesSpec(0.0, "Max", (("Percent", 50, 30.0),))
    decision, _ = run(make_settings(scale_up=up, min_replicas=0, use_forecast=False), load(100.0), 0)
    assert decision.final_replicas == 1


def forecast_path(value: float, start: float = NOW, steps: int = 20, step: float = 300.0) -> ForecastPath:
    return ForecastPath(start, step, np.full(steps, value * 0.8), np.full(steps, value), "holt_winters", NOW)


def test_forecast_adds_capacity_ahead():
    # Load 100 needs 10; the upper quantile 200 over the lead window needs 20.
    decision, _ = run(make_settings(), load(100.0), 10, forecast=forecast_path(200.0))
    assert decision.reactive_replicas == 10
    assert decision.forecast_replicas == 20
    assert decision.final_replicas == 20
    assert decision.reason is Reason.FORECAST_AHEAD
    assert decision.forecaster == "holt_winters"


def test_forecast_never_removes_needed_capacity():
    # Load 300 needs 30; a forecast of 50 (5 replicas) must not cut below 30.
    decision, _ = run(make_settings(), load(300.0), 30, forecast=forecast_path(50.0))
    assert decision.final_replicas == 30


def test_forecast_window_uses_lead_not_now():
    # The path is 1000 only for the first 480 s (before new replicas could be ready), then 100.
    upper = np.array([1000.0] * 8 + [100.0] * 12)
    path = ForecastPath(NOW, 60.0, upper, upper, "stl_ets", NOW)
    decision, _ = run(make_settings(), load(100.0), 10, forecast=path)
    assert decision.forecast_replicas == 10


def test_missing_forecast_uses_fallback_utilization():
    # Planned at full utilization (10 per replica) with a fallback of 0.8 (8 per replica):
    # with a forecast, load 100 needs 10; without one, ceil(100 / 8) = 13.
    settings = make_settings(fallback_load_per_replica=8.0)
    with_forecast, _ = run(settings, load(100.0), 10, forecast=forecast_path(50.0))
    assert with_forecast.reactive_replicas == 10
    without, _ = run(settings, load(100.0), 10, forecast=None)
    assert without.reactive_replicas == 13
    assert without.forecaster == "reactive_fallback"


def test_fallback_utilization_unused_when_forecasting_off():
    settings = make_settings(fallback_load_per_replica=8.0, use_forecast=False)
    decision, _ = run(settings, load(100.0), 10)
    assert decision.reactive_replicas == 10


def test_forecast_not_covering_falls_back():
    decision, _ = run(make_settings(), load(100.0), 10, forecast=forecast_path(200.0, start=NOW - 10_000))
    assert decision.forecaster == "reactive_fallback"
    assert decision.forecast_replicas is None
    assert decision.final_replicas == 10


@pytest.mark.parametrize(
    ("observation", "validity"),
    [
        (Observation.checked(math.nan, NOW), Validity.NOT_FINITE),
        (Observation.checked(math.inf, NOW), Validity.NOT_FINITE),
        (Observation.checked(-5.0, NOW), Validity.NEGATIVE),
        (Observation.checked(None, NOW), Validity.MISSING),
        (Observation.checked(10.0, NOW - 500), Validity.STALE),
    ],
    ids=["nan", "inf", "negative", "missing", "stale"],
)
def test_unknown_signal_holds_last_safe(observation, validity):
    state = WorkloadState(last_safe_replicas=12)
    decision, new_state = run(make_settings(use_forecast=False), {"load": observation}, 12, state)
    assert decision.final_replicas == 12
    assert decision.reason is Reason.HOLDING_LAST_SAFE_STATE
    assert decision.invalid_signals == ("load",)
    assert validity.value in decision.detail
    assert new_state.last_safe_replicas == 12


def test_unknown_signal_still_scales_up_on_valid_signal():
    # The load signal is NaN; the backlog 3000 / 100 per replica = 30 > held 12.
    signals = (SignalSpec("load", "load", 10.0, 120.0), SignalSpec("lag", "backlog", 100.0, 120.0))
    observations = {"load": Observation.checked(math.nan, NOW), "lag": Observation.checked(3000.0, NOW)}
    decision, _ = run(make_settings(signals=signals, use_forecast=False), observations, 12, WorkloadState(last_safe_replicas=12))
    assert decision.final_replicas == 30


def test_unknown_signal_blocks_scale_down_on_valid_signal():
    # The backlog alone would go to 1, but the unknown load signal keeps the count at 12.
    signals = (SignalSpec("load", "load", 10.0, 120.0), SignalSpec("lag", "backlog", 100.0, 120.0))
    observations = {"load": Observation.checked(math.nan, NOW), "lag": Observation.checked(10.0, NOW)}
    decision, _ = run(make_settings(signals=signals, use_forecast=False), observations, 12, WorkloadState(last_safe_replicas=12))
    assert decision.final_replicas == 12
    assert decision.reason is Reason.HOLDING_LAST_SAFE_STATE


def budget(factor=1.0, aggressive=True, ceiling=None, spot=0.6, min_on_demand=1, tier="tight") -> BudgetState:
    return BudgetState(0.5, factor, spot, aggressive, tier, False, ceiling, min_on_demand)


def test_budget_factor_limits():
    # Planned at 50 % utilization (5 per replica): 200 / 5 = 40; factor 0.85 -> 34;
    # the floor ceil(200 / 10) = 20 is below the cut, so the result is 34.
    settings = make_settings(signals=(SignalSpec("load", "load", 5.0, 120.0),), use_forecast=False)
    decision, _ = run(settings, load(200.0), 40, budget=budget(0.85))
    assert decision.clamped_replicas == 40
    assert decision.budget_replicas == 34
    assert decision.continuity_floor_replicas == 20
    assert decision.final_replicas == 34
    assert decision.reason is Reason.BUDGET_LIMITED


def test_continuity_floor_beats_budget_factor():
    # 40 planned; factor 0.6 -> 24; the observed 290 units/s need ceil(290 / 10) = 29.
    settings = make_settings(signals=(SignalSpec("load", "load", 7.25, 120.0),), use_forecast=False)
    decision, _ = run(settings, load(290.0), 40, budget=budget(0.6))
    assert decision.budget_replicas == 24
    assert decision.continuity_floor_replicas == 29
    assert decision.final_replicas == 29
    assert decision.reason is Reason.CONTINUITY_FLOOR


def test_budget_without_aggressive_scale_down_follows_rate_policy():
    # Current 20 and load planned at 20; factor 0.6 -> 12, but 5 % per 120 s allows only
    # int(20 * 0.95) = 19. The floor is ceil(100 / 10) = 10.
    down = RulesSpec(0.0, "Max", (("Percent", 5, 120.0),))
    settings = make_settings(signals=(SignalSpec("load", "load", 5.0, 120.0),), scale_down=down, use_forecast=False)
    decision, _ = run(settings, load(100.0), 20, budget=budget(0.6, aggressive=False))
    assert decision.final_replicas == 19
    assert decision.reason is Reason.BUDGET_LIMITED


def test_budget_ceiling_caps_headroom_not_floor():
    # Planned 40 (per replica 5), ceiling 15; floor ceil(190 / 10) = 19 wins over the ceiling.
    settings = make_settings(signals=(SignalSpec("load", "load", 5.0, 120.0),), use_forecast=False)
    capped, _ = run(settings, load(100.0), 20, budget=budget(ceiling=15))
    assert capped.final_replicas == 15
    assert capped.reason is Reason.BUDGET_CEILING
    floored, _ = run(settings, load(190.0), 38, budget=budget(ceiling=15))
    assert floored.final_replicas == 19
    assert floored.reason is Reason.CONTINUITY_FLOOR


def test_spot_split_in_decision():
    # 20 at spot ratio 0.8: spot round(16.0) = 16, on-demand 4.
    decision, _ = run(make_settings(use_forecast=False), load(200.0), 20, budget=budget(spot=0.8))
    assert (decision.on_demand_replicas, decision.spot_replicas) == (4, 16)


@pytest.mark.parametrize(
    ("final", "ratio", "min_on_demand", "expected"),
    [(10, 0.6, 1, (4, 6)), (1, 0.9, 1, (1, 0)), (3, 0.9, 2, (2, 1)), (0, 0.9, 1, (0, 0)), (5, 0.5, 0, (2, 3))],
    ids=["ratio-0.6", "floor-takes-single", "floor-two", "zero", "half-rounds-up"],
)
def test_split_spot_table(final, ratio, min_on_demand, expected):
    assert split_spot(final, ratio, min_on_demand) == expected


@hypothesis_settings(max_examples=300, deadline=None)
@given(final=st.integers(0, 5000), ratio=st.floats(0, 1), min_on_demand=st.integers(0, 50))
def test_split_spot_always_sums(final, ratio, min_on_demand):
    on_demand, spot = split_spot(final, ratio, min_on_demand)
    assert on_demand + spot == final
    assert on_demand >= min(min_on_demand, final)
    assert spot >= 0


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    current=st.integers(1, 500),
    usage=st.floats(0.0, 0.89),
    history=st.lists(st.tuples(st.floats(0, 900), st.integers(0, 600)), max_size=8),
)
def test_scale_down_signal_never_scales_up(current, usage, history):
    # Load below the tolerance band of the current count, with arbitrary past recommendations.
    settings = default_behavior_settings(use_forecast=False, max_replicas=1000)
    state = WorkloadState(recommendations=[(NOW - age - 1, rec) for age, rec in history])
    decision, _ = run(settings, load(current * 10.0 * usage), current, state)
    assert decision.final_replicas <= current


def test_state_round_trips_through_dict():
    _, state = run(make_settings(use_forecast=False), load(200.0), 10)
    restored = WorkloadState.from_dict(state.to_dict())
    assert restored == state


def test_backlog_only_scales_without_forecast():
    # Lag 5000 at 1000 per replica: ceil(5.0) = 5, with forecasting off for lack of a load signal.
    settings = make_settings(signals=(SignalSpec("lag", "backlog", 1000.0, 120.0),), use_forecast=False)
    decision, _ = run(settings, {"lag": Observation.checked(5000.0, NOW)}, 2)
    assert decision.final_replicas == 5
    assert decision.forecaster == "none"
    assert decision.continuity_floor_replicas == 0
