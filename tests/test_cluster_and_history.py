"""The simulated cluster's timing and the forecaster's bucketed history."""

from __future__ import annotations

import numpy as np

from actuators.simulated import SimulatedCluster
from runtime.evaluator import BucketHistory


def test_new_replicas_ready_after_lead():
    cluster = SimulatedCluster(startup_lead_seconds=480)
    cluster.start_ready(2, 0)
    cluster.scale(5, 0, now=0.0)
    cluster.advance(479.0)
    assert cluster.ready_total == 2
    assert cluster.requested() == 5
    cluster.advance(480.0)
    assert cluster.ready_total == 5


def test_scale_down_removes_starting_first():
    cluster = SimulatedCluster(startup_lead_seconds=480)
    cluster.start_ready(4, 0)
    cluster.scale(6, 0, now=0.0)
    cluster.scale(3, 0, now=10.0)
    assert cluster.requested() == 3
    assert cluster.ready_total == 3
    assert cluster.starting["on_demand"] == []


def test_preemptions_are_seeded_and_replaced():
    def run(seed: int) -> tuple[int, int]:
        cluster = SimulatedCluster(startup_lead_seconds=60, preemptions_per_hour=2.0, seed=seed)
        cluster.start_ready(1, 20)
        for step in range(1, 241):
            cluster.advance(step * 15.0)
        return cluster.preemptions, cluster.requested()

    first, requested = run(7)
    assert first > 0
    assert requested == 21  # every preempted replica was replaced
    assert run(7)[0] == first  # the same seed repeats the same preemptions


def test_preempted_spot_replica_not_ready_for_lead():
    cluster = SimulatedCluster(startup_lead_seconds=300, preemptions_per_hour=1e9, seed=1)
    cluster.start_ready(0, 3)
    cluster.advance(0.0)
    cluster.advance(15.0)  # probability capped at 1: all three are preempted
    assert cluster.ready_total == 0
    cluster.preemptions_per_hour = 0.0
    cluster.advance(15.0 + 299.0)
    assert cluster.ready_total == 0
    cluster.advance(15.0 + 300.0)
    assert cluster.ready_total == 3


def test_history_buckets_average_samples():
    history = BucketHistory(resolution_seconds=60, max_points=10)
    for t, value in ((0, 1.0), (30, 3.0), (60, 10.0), (90, 20.0), (120, 5.0)):
        history.add(t, value)
    history.seal(180)
    assert list(history.values()) == [2.0, 15.0, 5.0]
    assert history.end_index == 2


def test_history_gap_repeats_last_bucket():
    history = BucketHistory(resolution_seconds=60, max_points=10)
    history.add(0, 4.0)
    history.add(240, 8.0)  # buckets 1..3 had no valid sample
    history.seal(300)
    assert list(history.values()) == [4.0, 4.0, 4.0, 4.0, 8.0]
    assert history.filled == 3
    assert history.end_index == 4


def test_history_window_drops_oldest():
    history = BucketHistory(resolution_seconds=1, max_points=8)
    history.extend(np.arange(20.0), np.arange(20.0))
    history.seal(20)
    values = history.values()
    assert len(values) <= 8
    assert values[-1] == 19.0
    assert list(values) == sorted(values)


def test_history_ignores_unknown_values():
    history = BucketHistory(resolution_seconds=60, max_points=10)
    history.extend(np.array([0.0, 10.0, 20.0]), np.array([1.0, np.nan, -3.0]))
    history.seal(60)
    assert list(history.values()) == [1.0]
