"""Consumer-lag arithmetic for Kafka consumer groups, free of I/O.

The rules follow KEDA's Kafka scaler, which users already know, with its known
defects fixed:

- lag per partition is never negative (a committed offset past the log-end offset,
  seen after a topic is recreated or truncated, counts as no lag);
- a partition without a committed offset follows the reset policy: `latest` means
  nothing is waiting, `earliest` measures lag from the log-start offset, not from 0,
  so records already deleted by retention are not backlog;
- `lag_threshold` (records per replica) drives 1..N and `activation_lag_threshold`
  drives 0..1;
- the replica cap (partition count, or partitions with lag) is computed with integer
  arithmetic and reported separately so that the planner can apply it exactly;
- a partition whose committed offset has not moved for `stuck_after_seconds` while it
  has lag is reported as stuck and left out of the demand;
- a snapshot that contradicts the previous one (a committed offset vanished, a log-end
  offset went back or fell below the committed offset) is unknown, not zero lag, until
  it persists; `offsets_inconsistency` names the contradiction.

All offsets are integers and all times are Unix seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

ResetPolicy = Literal["latest", "earliest"]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """Offsets of one partition at one instant; `committed` is None when the group never committed."""

    topic: str
    partition: int
    log_start: int
    log_end: int
    committed: int | None


def partition_lag(offsets: PartitionOffsets, reset_policy: ResetPolicy) -> int:
    """Return the records waiting in one partition for the group, never below zero."""
    if offsets.committed is None or offsets.committed < 0:
        if reset_policy == "latest":
            return 0
        # A consumer reset to earliest starts at the log-start offset, not at 0.
        return max(0, offsets.log_end - offsets.log_start)
    # Records below the log-start offset were deleted and cannot be consumed.
    position = max(offsets.committed, offsets.log_start)
    return max(0, offsets.log_end - position)


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division for non-negative numerator and positive denominator."""
    return -(-numerator // denominator)


@dataclass(frozen=True, slots=True)
class LagRules:
    """The scaling rules of one consumer group; see the module docstring."""

    lag_threshold: int = 1000
    activation_lag_threshold: int = 0
    reset_policy: ResetPolicy = "latest"
    allow_idle_consumers: bool = False
    limit_to_partitions_with_lag: bool = False
    stuck_after_seconds: float | None = 300.0

    def __post_init__(self) -> None:
        if self.lag_threshold < 1:
            raise ValueError(f"lag_threshold={self.lag_threshold} must be at least 1 record per replica")
        if self.activation_lag_threshold < 0:
            raise ValueError(f"activation_lag_threshold={self.activation_lag_threshold} must not be negative")
        if self.stuck_after_seconds is not None and self.stuck_after_seconds <= 0:
            raise ValueError(f"stuck_after_seconds={self.stuck_after_seconds} must be positive, or None to disable stuck detection")


@dataclass(frozen=True, slots=True)
class LagAssessment:
    """The result of applying `LagRules` to one snapshot of offsets.

    `demand_lag` is the lag that drives scaling: the sum over partitions that are not
    stuck, or 0 while that sum does not exceed the activation threshold.
    `desired_replicas` is ceil(demand_lag / lag_threshold) limited by `max_replicas`.
    `max_replicas` is None when no cap applies (idle consumers allowed and the
    partitions-with-lag option off).
    """

    total_lag: int
    demand_lag: int
    partition_count: int
    partitions_with_lag: int
    stuck_partitions: tuple[tuple[str, int], ...]
    active: bool
    uncapped_replicas: int
    max_replicas: int | None
    desired_replicas: int

    @property
    def capped(self) -> bool:
        return self.max_replicas is not None and self.uncapped_replicas > self.max_replicas


def assess_lag(
    offsets: list[PartitionOffsets],
    rules: LagRules,
    stuck: frozenset[tuple[str, int]] = frozenset(),
) -> LagAssessment:
    """Apply the lag rules to one snapshot; `stuck` names partitions left out of the demand."""
    total = 0
    demand = 0
    with_lag = 0
    stuck_found: list[tuple[str, int]] = []
    for item in offsets:
        lag = partition_lag(item, rules.reset_policy)
        total += lag
        key = (item.topic, item.partition)
        if lag > 0 and key in stuck:
            stuck_found.append(key)
            continue
        if lag > 0:
            with_lag += 1
            demand += lag

    active = demand > rules.activation_lag_threshold
    if not active:
        demand = 0
    uncapped = ceil_div(demand, rules.lag_threshold)

    cap: int | None = None
    if rules.limit_to_partitions_with_lag:
        cap = with_lag
    elif not rules.allow_idle_consumers:
        cap = len(offsets)
    desired = uncapped if cap is None else min(uncapped, cap)
    return LagAssessment(
        total_lag=total,
        demand_lag=demand,
        partition_count=len(offsets),
        partitions_with_lag=with_lag,
        stuck_partitions=tuple(sorted(stuck_found)),
        active=active,
        uncapped_replicas=uncapped,
        max_replicas=cap,
        desired_replicas=desired,
    )


@dataclass(slots=True)
class StuckDetector:
    """Tracks when each partition's committed offset last moved.

    A partition is stuck when it has lag and its committed offset has not changed for
    at least `stuck_after_seconds`. A partition without lag is never stuck, and any
    movement of the committed offset resets its clock.
    """

    stuck_after_seconds: float
    _last_committed: dict[tuple[str, int], int | None] = field(default_factory=dict)
    _moved_at: dict[tuple[str, int], float] = field(default_factory=dict)

    def update(self, offsets: list[PartitionOffsets], reset_policy: ResetPolicy, now: float) -> frozenset[tuple[str, int]]:
        """Record one snapshot taken at `now` and return the partitions that are stuck."""
        stuck = set()
        for item in offsets:
            key = (item.topic, item.partition)
            lag = partition_lag(item, reset_policy)
            if key not in self._last_committed or self._last_committed[key] != item.committed or lag == 0:
                self._last_committed[key] = item.committed
                self._moved_at[key] = now
                continue
            if now - self._moved_at[key] >= self.stuck_after_seconds:
                stuck.add(key)
        return frozenset(stuck)


@dataclass(slots=True)
class OffsetRates:
    """Arrival and consumption rates from the growth of summed offsets over a time window.

    Arrival rate is the growth of the summed log-end offsets (records per second);
    consumption rate is the growth of the summed committed offsets. Partitions without a
    committed offset count with their log-start offset so that a first commit does not
    look like a burst of consumption.
    """

    window_seconds: float
    _samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def update(self, offsets: list[PartitionOffsets], now: float) -> None:
        log_end = sum(item.log_end for item in offsets)
        committed = sum(item.committed if item.committed is not None and item.committed >= 0 else item.log_start for item in offsets)
        self._samples.append((now, log_end, committed))
        # Keep one sample older than the window so the rate always spans a full window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_seconds:
            self._samples.popleft()

    def _rate(self, index: int) -> float | None:
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        elapsed = last[0] - first[0]
        if elapsed <= 0:
            return None
        # Offsets only grow unless a topic was recreated; a drop counts as no growth.
        return max(0, last[index] - first[index]) / elapsed

    def arrival_rate(self) -> float | None:
        """Records appended per second over the window, or None before two samples."""
        return self._rate(1)

    def consumption_rate(self) -> float | None:
        """Records committed per second over the window, or None before two samples."""
        return self._rate(2)


def lag_seconds(lag: int, consumption_rate: float | None) -> float | None:
    """Return the time to drain `lag` at the recent consumption rate, or None when unknown.

    No lag drains in 0 s. Lag with no consumption (rate 0) never drains, which is
    reported as None because infinity would look like a measured value.
    """
    if lag == 0:
        return 0.0
    if consumption_rate is None or consumption_rate <= 0:
        return None
    return lag / consumption_rate


def offsets_inconsistency(previous: list[PartitionOffsets] | None, current: list[PartitionOffsets]) -> str | None:
    """Return why `current` cannot be trusted against `previous`, or None when it is consistent.

    Right after a broker restart the group coordinator may still be loading: committed
    offsets vanish for a moment, or log-end offsets read low. Taken at face value that
    is zero lag, which would scale the group down while its backlog is intact.
    """
    before = {(item.topic, item.partition): item for item in previous or []}
    for item in current:
        name = f"{item.topic}/{item.partition}"
        if item.committed is not None and item.committed > item.log_end:
            return f"{name}: committed offset {item.committed} is past the log-end offset {item.log_end}"
        old = before.get((item.topic, item.partition))
        if old is None:
            continue
        if item.log_end < old.log_end:
            return f"{name}: log-end offset went back from {old.log_end} to {item.log_end}"
        if old.committed is not None and item.committed is None:
            return f"{name}: committed offset {old.committed} disappeared"
    return None
