"""Per-workload runtime state and the evaluation step shared by the daemon and the simulator.

`WorkloadRuntime` owns everything one workload needs between ticks: the latest
observation of each signal, the load history bucketed for the forecaster, the fitted
model and its current forecast path, and the planner state. It performs no I/O and
reads no clock; the asyncio services and the simulator drive it with `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forecasters import FitOutcome, FittedModel
from runtime.config import WorkloadConfig
from runtime.model import BudgetState, Decision, ForecastPath, Observation, WorkloadState
from runtime.planner import PlannerSettings, plan


class BucketHistory:
    """Load history averaged into fixed buckets on an absolute grid (index = floor(t / resolution)).

    Only valid observations enter. A bucket with no valid sample repeats the previous
    bucket's value so that forecasters see a regular series; `filled` counts such buckets.
    """

    def __init__(self, resolution_seconds: float, max_points: int):
        self.resolution = float(resolution_seconds)
        self.max_points = max_points
        self._values = np.zeros(max_points, dtype=float)
        self._size = 0
        self.end_index: int | None = None  # grid index of the last completed bucket
        self._open_index: int | None = None
        self._open_sum = 0.0
        self._open_count = 0
        self.filled = 0

    def __len__(self) -> int:
        return self._size

    def values(self) -> np.ndarray:
        return self._values[: self._size].copy()

    def _push(self, value: float) -> None:
        if self._size == self.max_points:
            # Shift left by a quarter at once so that appends stay amortized O(1).
            drop = max(1, self.max_points // 4)
            self._values[: self._size - drop] = self._values[drop : self._size]
            self._size -= drop
        self._values[self._size] = value
        self._size += 1

    def _close_until(self, index: int) -> None:
        """Complete every bucket before `index`."""
        if self._open_index is None:
            return
        value = self._open_sum / self._open_count
        self._push(value)
        self.end_index = self._open_index
        gap = index - self._open_index - 1
        if gap > self.max_points:
            # The gap is longer than the whole window: start over instead of inventing it.
            self._size = 0
            self.end_index = None
        else:
            for _ in range(max(0, gap)):
                self._push(value)
                self.filled += 1
            if gap > 0:
                self.end_index = index - 1
        self._open_index = None
        self._open_sum = 0.0
        self._open_count = 0

    def add(self, timestamp: float, value: float) -> None:
        index = int(math.floor(timestamp / self.resolution))
        if self._open_index is not None and index < self._open_index:
            return  # late sample for a completed bucket; history is append-only
        if self._open_index is not None and index > self._open_index:
            self._close_until(index)
        if self._open_index is None:
            self._open_index = index
        self._open_sum += value
        self._open_count += 1

    def extend(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Load a block of past samples at once (history backfill at start)."""
        for timestamp, value in zip(timestamps, values):
            if math.isfinite(value) and value >= 0:
                self.add(float(timestamp), float(value))

    def seal(self, now: float) -> None:
        """Close the open bucket when `now` has moved past it."""
        if self._open_index is not None and math.floor(now / self.resolution) > self._open_index:
            self._close_until(int(math.floor(now / self.resolution)))


@dataclass
class FitRequest:
    requested: str
    history: np.ndarray
    season: int
    upper_quantile_ratio: float
    end_index: int
    horizon: int


@dataclass
class WorkloadRuntime:
    """All per-workload state the daemon keeps; see the module docstring."""

    config: WorkloadConfig
    settings: PlannerSettings
    history: BucketHistory
    latest: dict[str, Observation] = field(default_factory=dict)
    state: WorkloadState = field(default_factory=WorkloadState)
    model: FittedModel | None = None
    fit_outcome: FitOutcome | None = None
    forecast: ForecastPath | None = None
    next_refit_at: float = -math.inf
    next_update_at: float = -math.inf
    fit_in_progress: bool = False
    current_replicas: int | None = None
    last_decision: Decision | None = None

    @classmethod
    def create(cls, config: WorkloadConfig, settings: PlannerSettings | None = None) -> "WorkloadRuntime":
        forecaster = config.forecaster
        max_points = max(8, int(forecaster.history_window_seconds // forecaster.resolution_seconds))
        return cls(config, settings or PlannerSettings.from_config(config), BucketHistory(forecaster.resolution_seconds, max_points))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def season_points(self) -> int:
        return self.config.forecaster.season_length_seconds // self.config.forecaster.resolution_seconds

    @property
    def horizon_points(self) -> int:
        return max(1, math.ceil(self.config.forecast_horizon_seconds / self.config.forecaster.resolution_seconds))

    def observe(self, signal: str, observation: Observation) -> None:
        """Record a sample; a valid sample of the load signal also enters the history."""
        self.latest[signal] = observation
        load_signal = self.config.load_signal
        if load_signal is not None and signal == load_signal.name and observation.validity.value == "ok":
            sample_time = observation.sample_time if observation.sample_time is not None else observation.timestamp
            self.history.add(sample_time, observation.value)

    def fit_due(self, now: float) -> bool:
        return self.settings.use_forecast and not self.fit_in_progress and now >= self.next_refit_at

    def fit_request(self, now: float) -> FitRequest | None:
        """Prepare the inputs of a fit job, or None when there is no completed bucket yet."""
        self.history.seal(now)
        if self.history.end_index is None or len(self.history) == 0:
            return None
        return FitRequest(
            self.config.forecaster.model, self.history.values(), self.season_points,
            self.config.forecaster.upper_quantile_ratio, self.history.end_index, self.horizon_points,
        )

    def apply_fit(self, outcome: FitOutcome, now: float) -> None:
        self.fit_outcome = outcome
        self.model = outcome.model
        self.fit_in_progress = False
        self.next_refit_at = now + self.config.forecaster.refit_interval_seconds
        self.next_update_at = -math.inf
        if self.model is None:
            self.forecast = None
            # Without a model, retry sooner: history may be long enough after an update interval.
            self.next_refit_at = now + self.config.forecaster.update_interval_seconds

    def update_due(self, now: float) -> bool:
        return self.model is not None and now >= self.next_update_at

    def update_forecast(self, now: float) -> None:
        """Rerun the fitted model on the latest history and store the new forecast path."""
        self.history.seal(now)
        if self.model is None or self.history.end_index is None:
            return
        forecaster = self.config.forecaster
        resolution = forecaster.resolution_seconds
        # Cover the time until the next update plus the whole horizon, with one spare bucket.
        steps = math.ceil((forecaster.update_interval_seconds + self.config.forecast_horizon_seconds) / resolution) + 2
        # Two seasons plus two hours of context: enough for the smoothers to settle, and
        # the Holt-Winters rerun costs time linear in its length.
        context = self.history.values()[-(2 * self.season_points + 24) :]
        mean, upper = self.model.forecast(context, steps, self.history.end_index)
        outcome = self.fit_outcome
        self.forecast = ForecastPath(
            start=(self.history.end_index + 1) * resolution,
            step_seconds=float(resolution),
            mean=mean,
            upper=upper,
            model=self.model.name,
            fitted_at=now,
            score_mase=outcome.score if outcome else None,
            warnings=tuple(outcome.warnings) if outcome else (),
        )
        self.next_update_at = now + forecaster.update_interval_seconds

    def decide(self, budget: BudgetState, now: float, current_replicas: int | None = None) -> Decision:
        """Run the planner once and keep its new state."""
        if current_replicas is not None:
            self.current_replicas = current_replicas
        current = self.current_replicas if self.current_replicas is not None else self.config.min_replicas
        decision, self.state = plan(self.settings, self.latest, self.forecast, budget, current, self.state, now)
        self.last_decision = decision
        return decision

    def snapshot(self) -> dict[str, Any]:
        """Serialisable per-workload state for restarts (the fitted model is refitted instead)."""
        return {
            "workload": self.name,
            "planner": self.state.to_dict(),
            "current_replicas": self.current_replicas,
            "history_end_index": self.history.end_index,
            "history_resolution_seconds": self.history.resolution,
            "history": [round(float(v), 6) for v in self.history.values()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.state = WorkloadState.from_dict(data.get("planner", {}))
        self.current_replicas = data.get("current_replicas")
        end_index = data.get("history_end_index")
        values = data.get("history") or []
        if end_index is not None and values and float(data.get("history_resolution_seconds", 0)) == self.history.resolution:
            start_index = end_index - len(values) + 1
            stamps = (np.arange(len(values)) + start_index) * self.history.resolution
            self.history.extend(stamps, np.asarray(values, dtype=float))
            self.history.seal((end_index + 1) * self.history.resolution)
