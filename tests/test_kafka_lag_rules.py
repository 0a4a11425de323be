"""Table-driven tests of the pure Kafka lag rules in runtime/kafka_lag.py."""

from __future__ import annotations

import pytest

from runtime.kafka_lag import (
    LagRules,
    OffsetRates,
    PartitionOffsets,
    StuckDetector,
    assess_lag,
    ceil_div,
    lag_seconds,
    offsets_inconsistency,
    partition_lag,
)


def offsets(*rows: tuple[int, int, int | None], topic: str = "orders") -> list[PartitionOffsets]:
    """Build partitions 0..n-1 from (log_start, log_end, committed) rows."""
    return [PartitionOffsets(topic, index, start, end, committed) for index, (start, end, committed) in enumerate(rows)]


@pytest.mark.parametrize(
    ("log_start", "log_end", "committed", "policy", "expected"),
    [
        (0, 100, 40, "latest", 60),
        (0, 100, 40, "earliest", 60),
        # A committed offset past the log end (topic recreated) is no lag, not negative lag.
        (0, 100, 150, "latest", 0),
        # No commit: latest means nothing waiting, earliest counts from the log start.
        (0, 100, None, "latest", 0),
        (30, 100, None, "earliest", 70),
        (0, 100, -1, "earliest", 100),
        # Records deleted by retention (below log_start) are not backlog.
        (80, 100, 10, "latest", 20),
        (100, 100, None, "earliest", 0),
    ],
)
def test_partition_lag_rules(log_start, log_end, committed, policy, expected):
    item = PartitionOffsets("orders", 0, log_start, log_end, committed)
    assert partition_lag(item, policy) == expected


@pytest.mark.parametrize(
    ("rows", "rules", "demand", "desired", "cap"),
    [
        # lag 2500 at 1000 per replica: 3 replicas, capped at 4 partitions.
        ([(0, 1000, 0), (0, 1000, 500), (0, 1000, 0), (0, 0, 0)], LagRules(), 2500, 3, 4),
        # Lag skewed onto one partition: 10 replicas wanted, cap 4 partitions.
        ([(0, 10_000, 0), (0, 5, 5), (0, 5, 5), (0, 5, 5)], LagRules(), 10_000, 4, 4),
        # Same skew with the partitions-with-lag cap: only 1 partition has lag.
        ([(0, 10_000, 0), (0, 5, 5), (0, 5, 5), (0, 5, 5)], LagRules(limit_to_partitions_with_lag=True), 10_000, 1, 1),
        # Idle consumers allowed: no cap at all.
        ([(0, 10_000, 0), (0, 5, 5)], LagRules(allow_idle_consumers=True), 10_000, 10, None),
        # Activation: lag 50 does not exceed 100, so the group stays at 0.
        ([(0, 50, 0)], LagRules(activation_lag_threshold=100), 0, 0, 1),
        # Lag 101 exceeds activation 100 and needs one replica (101 < lag_threshold).
        ([(0, 101, 0)], LagRules(activation_lag_threshold=100), 101, 1, 1),
        # Exact integer ceiling where a float quotient would round: (10**17 + 1) / 10**17.
        ([(0, 10**17 + 1, 0)], LagRules(lag_threshold=10**17, allow_idle_consumers=True), 10**17 + 1, 2, None),
        # Earliest policy without commits measures from the log start.
        ([(900, 3000, None), (0, 0, None)], LagRules(reset_policy="earliest"), 2100, 2, 2),
        ([(900, 3000, None), (0, 0, None)], LagRules(reset_policy="latest"), 0, 0, 2),
    ],
)
def test_assess_lag_table(rows, rules, demand, desired, cap):
    result = assess_lag(offsets(*rows), rules)
    assert result.demand_lag == demand
    assert result.desired_replicas == desired
    assert result.max_replicas == cap


def test_assess_lag_excludes_stuck_partition():
    snapshot = offsets((0, 50_000, 100), (0, 1500, 0))
    result = assess_lag(snapshot, LagRules(), stuck=frozenset({("orders", 0)}))
    assert result.total_lag == 51_400
    assert result.demand_lag == 1500
    assert result.stuck_partitions == (("orders", 0),)
    assert result.desired_replicas == 2


def test_assess_lag_capped_flag():
    result = assess_lag(offsets((0, 9000, 0), (0, 0, 0)), LagRules())
    assert result.uncapped_replicas == 9
    assert result.capped
    assert not assess_lag(offsets((0, 900, 0), (0, 0, 0)), LagRules()).capped


@pytest.mark.parametrize(
    "kwargs",
    [{"lag_threshold": 0}, {"activation_lag_threshold": -1}, {"stuck_after_seconds": 0}],
)
def test_lag_rules_reject_invalid(kwargs):
    with pytest.raises(ValueError):
        LagRules(**kwargs)


def test_ceil_div_exact():
    assert ceil_div(0, 7) == 0
    assert ceil_div(7, 7) == 1
    assert ceil_div(8, 7) == 2
    assert ceil_div(2**63 + 1, 2**62) == 3


def test_stuck_detector_marks_unmoved_partition():
    detector = StuckDetector(stuck_after_seconds=60)
    assert detector.update(offsets((0, 500, 100), (0, 500, 100)), "latest", now=0) == frozenset()
    # Partition 1 commits progress; partition 0 does not.
    assert detector.update(offsets((0, 600, 100), (0, 600, 200)), "latest", now=30) == frozenset()
    assert detector.update(offsets((0, 700, 100), (0, 700, 300)), "latest", now=61) == {("orders", 0)}
    # Progress resets the clock.
    assert detector.update(offsets((0, 700, 101), (0, 700, 400)), "latest", now=62) == frozenset()


def test_stuck_detector_ignores_partition_without_lag():
    detector = StuckDetector(stuck_after_seconds=10)
    detector.update(offsets((0, 100, 100)), "latest", now=0)
    assert detector.update(offsets((0, 100, 100)), "latest", now=100) == frozenset()


def test_offset_rates_over_window():
    rates = OffsetRates(window_seconds=10)
    assert rates.arrival_rate() is None
    rates.update(offsets((0, 1000, 500), (0, 1000, 1000)), now=0)
    rates.update(offsets((0, 1500, 700), (0, 1500, 1100)), now=5)
    rates.update(offsets((0, 2000, 900), (0, 2000, 1200)), now=10)
    assert rates.arrival_rate() == pytest.approx(200.0)
    assert rates.consumption_rate() == pytest.approx(60.0)
    # Later samples push the oldest out of the window.
    rates.update(offsets((0, 2000, 900), (0, 2000, 1200)), now=20)
    assert rates.arrival_rate() == pytest.approx(0.0)


def test_lag_seconds_cases():
    assert lag_seconds(0, None) == 0.0
    assert lag_seconds(600, 20.0) == pytest.approx(30.0)
    assert lag_seconds(600, 0.0) is None
    assert lag_seconds(600, None) is None


def lag_workload(**source_overrides):
    from runtime.config import parse_config

    source = {"kind": "kafka_lag", "bootstrap_servers": "127.0.0.1:9092", "group_id": "g", "topics": ["orders"]}
    source.update(source_overrides)
    config = parse_config({
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "consumers", "target": {"namespace": "ns", "name": "consumers"}, "min_replicas": 0, "max_replicas": 100,
            "capacity_per_replica": 1000.0, "startup_lead_seconds": 0, "forecaster": {"model": "none"},
            "behavior": {"scale_up": {"stabilization_window_seconds": 0, "policies": [{"type": "Pods", "value": 100, "period_seconds": 15}]},
                         "scale_down": {"stabilization_window_seconds": 0, "policies": [{"type": "Percent", "value": 100, "period_seconds": 15}]}},
            "signals": [
                {"name": "arrivals", "role": "load", "source": source},
                {"name": "lag", "role": "backlog", "source": source},
            ],
        }],
    })
    return config.workloads[0]


def plan_with(workload, lag_observation, current: int):
    from runtime.model import BudgetState, Observation, WorkloadState
    from runtime.planner import PlannerSettings, plan

    settings = PlannerSettings.from_config(workload)
    observations = {"arrivals": Observation(0.0, 1000.0), "lag": lag_observation}
    decision, _ = plan(settings, observations, None, BudgetState.unlimited(), current, WorkloadState(), 1000.0)
    return decision


def test_planner_uses_lag_threshold_per_replica():
    from runtime.model import Observation

    workload = lag_workload(lag_threshold=250)
    decision = plan_with(workload, Observation(1001.0, 1000.0), current=1)
    assert decision.reactive_replicas == 5


def test_planner_cap_skips_tolerance_band():
    from runtime.model import Observation

    workload = lag_workload()
    # Lag 4600 at 1000 per replica is within the 10 % band of the current 5 replicas
    # (usage ratio 0.92), which alone would hold 5, but the cap of 4 partitions applies.
    decision = plan_with(workload, Observation(4600.0, 1000.0, max_replicas=4), current=5)
    assert decision.reactive_replicas == 4
    assert decision.final_replicas == 4
    # Lag skewed onto one partition: 10,000 records want 10 replicas, cap 1 partition with lag.
    skewed = plan_with(workload, Observation(10_000.0, 1000.0, max_replicas=1), current=1)
    assert skewed.reactive_replicas == 1
    assert skewed.final_replicas == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username"),
        ({"sasl_username": "scaler", "sasl_password_env": "KAFKA_PASSWORD"}, "SASL credentials are set but security_protocol is PLAINTEXT"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "scaler", "sasl_password_env": "A", "sasl_password_file": "/run/p"}, "only one of"),
        ({"lag_threshold": 0}, "lag_threshold"),
        ({"offset_reset_policy": "none"}, "offset_reset_policy"),
    ],
)
def test_kafka_lag_config_rejects_invalid(overrides, message):
    from runtime.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        lag_workload(**overrides)
    assert message in str(caught.value)


def snapshot(log_end: int, committed: int | None, partition: int = 0) -> PartitionOffsets:
    return PartitionOffsets("t", partition, 0, log_end, committed)


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [
        (None, [snapshot(10, 4)], None),
        ([snapshot(10, 4)], [snapshot(12, 6)], None),
        ([snapshot(10, 4)], [snapshot(10, None)], "t/0: committed offset 4 disappeared"),
        ([snapshot(10, 4)], [snapshot(0, 4)], "t/0: committed offset 4 is past the log-end offset 0"),
        ([snapshot(10, 4)], [snapshot(8, 2)], "t/0: log-end offset went back from 10 to 8"),
        (None, [snapshot(3, 5)], "t/0: committed offset 5 is past the log-end offset 3"),
        ([snapshot(10, None)], [snapshot(10, None)], None),
    ],
    ids=["first-poll", "progress", "commit-vanished", "log-end-zero", "log-end-back", "commit-past-end", "never-committed"],
)
def test_offsets_inconsistency(previous, current, expected):
    assert offsets_inconsistency(previous, current) == expected


def test_lag_source_holds_on_vanished_commit_then_accepts():
    from runtime.config import KafkaLagSourceConfig
    from runtime.kafka_sources import OFFSETS_SETTLE_SECONDS, KafkaLagSource
    from runtime.model import Validity

    config = KafkaLagSourceConfig(kind="kafka_lag", bootstrap_servers="127.0.0.1:9", group_id="g", topics=("t",))
    source = KafkaLagSource("w", config, [("lag", "backlog")])
    [(_, first)] = source.observe([snapshot(10, 0)], 1000.0)
    assert first.validity is Validity.OK
    assert first.value == 10.0
    # The coordinator is loading: the commit is missing, which would read as zero lag.
    [(_, loading)] = source.observe([snapshot(10, None)], 1005.0)
    assert loading.validity is Validity.AMBIGUOUS
    assert "disappeared" in loading.detail
    [(_, settled)] = source.observe([snapshot(10, 0)], 1010.0)
    assert settled.validity is Validity.OK
    assert settled.value == 10.0
    # A change that persists past the settle time is accepted.
    source.observe([snapshot(10, None)], 2000.0)
    [(_, accepted)] = source.observe([snapshot(10, None)], 2000.0 + OFFSETS_SETTLE_SECONDS)
    assert accepted.validity is Validity.OK
    assert accepted.value == 0.0
