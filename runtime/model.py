"""Plain data records shared by the planner, the runtime services and the simulator.

Everything here is free of I/O. Records that describe per-workload state convert to
and from plain dicts so that they can be snapshotted to disk today and shipped over
Kafka when several daemons share workloads.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Reason(str, enum.Enum):
    """Closed set of reasons a decision carries; the last stage that set the count wins."""

    WITHIN_RANGE = "within_range"
    WITHIN_TOLERANCE = "within_tolerance"
    FORECAST_AHEAD = "forecast_ahead"
    STABILIZED = "stabilized"
    SCALE_UP_LIMITED = "scale_up_limited"
    SCALE_DOWN_LIMITED = "scale_down_limited"
    AT_MIN_REPLICAS = "at_min_replicas"
    AT_MAX_REPLICAS = "at_max_replicas"
    BUDGET_LIMITED = "budget_limited"
    BUDGET_CEILING = "budget_ceiling"
    CONTINUITY_FLOOR = "continuity_floor"
    HOLDING_LAST_SAFE_STATE = "holding_last_safe_state"


class Validity(str, enum.Enum):
    """Usability verdict of an observation. Anything but OK means the value is unknown."""

    OK = "ok"
    MISSING = "missing"
    NOT_FINITE = "not_finite"
    NEGATIVE = "negative"
    STALE = "stale"
    SOURCE_DOWN = "source_down"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of a signal: its value, when it was measured (Unix seconds) and whether it is usable."""

    value: float
    timestamp: float
    validity: Validity = Validity.OK
    detail: str = ""
    # Upper bound on the replicas this signal may ask for, computed by the source with
    # integer arithmetic (for Kafka lag: the partition count). A proposal at or above
    # it becomes exactly this count and skips the tolerance band. None means no cap.
    max_replicas: int | None = None
    # Time the value describes, for example the centre of the window a rate was
    # averaged over; None means `timestamp`. The forecaster's history is indexed by
    # it, so that a trailing 10-minute rate does not teach the model a 10-minute lag.
    sample_time: float | None = None

    @classmethod
    def checked(cls, value: float | None, timestamp: float, detail: str = "", sample_time: float | None = None) -> "Observation":
        """Build an observation, marking missing, NaN, infinite and negative values as unknown."""
        if value is None:
            return cls(math.nan, timestamp, Validity.MISSING, detail or "no value")
        if not math.isfinite(value):
            return cls(math.nan, timestamp, Validity.NOT_FINITE, detail or f"value {value!r} is not finite")
        if value < 0:
            return cls(math.nan, timestamp, Validity.NEGATIVE, detail or f"value {value!r} is negative")
        return cls(float(value), timestamp, Validity.OK, detail, sample_time=sample_time)

    @classmethod
    def unknown(cls, timestamp: float, validity: Validity, detail: str) -> "Observation":
        return cls(math.nan, timestamp, validity, detail)

    def usable_at(self, now: float, stale_after_seconds: float) -> tuple[bool, Validity, str]:
        """Return whether the value may drive a decision at `now`, and why not when it may not."""
        if self.validity is not Validity.OK:
            return False, self.validity, self.detail
        age = now - self.timestamp
        if age > stale_after_seconds:
            return False, Validity.STALE, f"last sample is {age:.0f} s old (limit {stale_after_seconds:.0f} s)"
        return True, Validity.OK, ""


@dataclass(frozen=True, slots=True)
class ForecastPath:
    """A forecast of load (units per second) on a regular grid starting at `start` (Unix seconds).

    `upper` is the configured upper quantile used for headroom; `mean` is the point forecast.
    The path is computed once per fit so that each tick only slices arrays.
    """

    start: float
    step_seconds: float
    mean: np.ndarray
    upper: np.ndarray
    model: str
    fitted_at: float
    score_mase: float | None = None
    warnings: tuple[str, ...] = ()

    @property
    def end(self) -> float:
        return self.start + self.step_seconds * len(self.mean)

    def window_max(self, begin: float, end: float, which: str = "upper") -> float | None:
        """Return the largest value of the path over [begin, end], or None when the path does not cover it."""
        values = self.upper if which == "upper" else self.mean
        first = int(math.floor((begin - self.start) / self.step_seconds))
        last = int(math.floor((end - self.start) / self.step_seconds))
        if first < 0 or last >= len(values) or last < first:
            return None
        return float(values[first : last + 1].max())

    def value_at(self, t: float, which: str = "mean") -> float | None:
        values = self.upper if which == "upper" else self.mean
        index = int(math.floor((t - self.start) / self.step_seconds))
        if index < 0 or index >= len(values):
            return None
        return float(values[index])


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Budget facts the ledger passes to the planner for one workload at one instant."""

    remaining_ratio: float
    scale_factor: float
    spot_ratio: float
    aggressive_scale_down: bool
    tier_name: str
    alert: bool
    # Replicas this workload may run before the budget's hard ceiling on hourly cost is
    # crossed, given what the other workloads on the same budget already spend; None
    # means no ceiling applies.
    ceiling_replicas: int | None
    min_on_demand_replicas: int

    @classmethod
    def unlimited(cls, spot_ratio: float = 0.0, min_on_demand_replicas: int = 0) -> "BudgetState":
        """Build a budget that never limits, as the HPA baselines in the simulator use."""
        return cls(1.0, 1.0, spot_ratio, True, "unlimited", False, None, min_on_demand_replicas)


@dataclass(slots=True)
class WorkloadState:
    """Per-workload memory of the planner, kept between decisions.

    Timestamps are Unix seconds. The lists are pruned to the longest window that
    reads them, so their size stays bounded by the behavior settings.
    """

    # (timestamp, raw recommendation before stabilization), as the HPA keeps them.
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    # (timestamp, replicas added) and (timestamp, replicas removed), for rate policies.
    scale_up_events: list[tuple[float, int]] = field(default_factory=list)
    scale_down_events: list[tuple[float, int]] = field(default_factory=list)
    last_safe_replicas: int | None = None
    last_decision_at: float | None = None
    # First decision of this process without restored state, and the count running then.
    # Until the scale-down window has passed since then, that count is a floor, so that a
    # restart cannot skip the window the previous process was in.
    started_at: float | None = None
    start_replicas: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "recommendations": [list(item) for item in self.recommendations],
            "scale_up_events": [list(item) for item in self.scale_up_events],
            "scale_down_events": [list(item) for item in self.scale_down_events],
            "last_safe_replicas": self.last_safe_replicas,
            "last_decision_at": self.last_decision_at,
            "started_at": self.started_at,
            "start_replicas": self.start_replicas,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkloadState":
        return cls(
            recommendations=[(float(t), int(r)) for t, r in data.get("recommendations", [])],
            scale_up_events=[(float(t), int(n)) for t, n in data.get("scale_up_events", [])],
            scale_down_events=[(float(t), int(n)) for t, n in data.get("scale_down_events", [])],
            last_safe_replicas=data.get("last_safe_replicas"),
            started_at=data.get("started_at"),
            start_replicas=data.get("start_replicas"),
            last_decision_at=data.get("last_decision_at"),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The full record of one planner evaluation: every stage value and the reason.

    Replica counts are integers; `load_per_second` is the observed load signal (NaN
    when unknown) and `forecast_upper_per_second` the forecast over the lead window.
    """

    workload: str
    timestamp: float
    current_replicas: int
    load_per_second: float
    reactive_replicas: int | None
    forecast_replicas: int | None
    forecast_upper_per_second: float | None
    forecaster: str
    combined_replicas: int
    stabilized_replicas: int
    rate_limited_replicas: int
    clamped_replicas: int
    budget_replicas: int
    continuity_floor_replicas: int
    final_replicas: int
    on_demand_replicas: int
    spot_replicas: int
    reason: Reason
    budget_tier: str
    budget_remaining_ratio: float
    invalid_signals: tuple[str, ...] = ()
    detail: str = ""

    def as_log_fields(self) -> dict[str, Any]:
        """Flatten the record into structlog keyword arguments."""
        return {
            "workload": self.workload,
            "decision_at": self.timestamp,
            "current_replicas": self.current_replicas,
            "load_per_second": None if math.isnan(self.load_per_second) else round(self.load_per_second, 4),
            "reactive_replicas": self.reactive_replicas,
            "forecast_replicas": self.forecast_replicas,
            "forecast_upper_per_second": self.forecast_upper_per_second,
            "forecaster": self.forecaster,
            "combined_replicas": self.combined_replicas,
            "stabilized_replicas": self.stabilized_replicas,
            "rate_limited_replicas": self.rate_limited_replicas,
            "clamped_replicas": self.clamped_replicas,
            "budget_replicas": self.budget_replicas,
            "continuity_floor_replicas": self.continuity_floor_replicas,
            "final_replicas": self.final_replicas,
            "on_demand_replicas": self.on_demand_replicas,
            "spot_replicas": self.spot_replicas,
            "reason": self.reason.value,
            "budget_tier": self.budget_tier,
            "budget_remaining_ratio": round(self.budget_remaining_ratio, 4),
            "invalid_signals": list(self.invalid_signals),
            "detail": self.detail,
        }
