"""The forecaster interface: fit on a workload's history, then forecast cheaply from new history.

A `Forecaster` does the expensive work once per refit (parameter optimization) and
returns a `FittedModel`. The fitted model reruns with fixed parameters on the latest
history to produce a mean path and an upper-quantile path; that step is cheap enough
to run on every update interval. Both objects are picklable so that fits can run in a
process pool, off the event loop.

Series are regular arrays of load (units per second) at one resolution; `season`
is the number of points per season.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field

import numpy as np


class InsufficientHistory(Exception):
    """The history is too short for the model; the caller falls back to reactive scaling."""


@dataclass
class FittedModel(abc.ABC):
    name: str
    season: int
    upper_quantile_ratio: float
    # Empirical quantile of in-sample one-step residuals, added to the mean for headroom.
    residual_quantile: float = 0.0
    fit_warnings: list[str] = field(default_factory=list)

    @abc.abstractmethod
    def mean_forecast(self, history: np.ndarray, steps: int, end_index: int) -> np.ndarray:
        """Return the point forecast for the `steps` points after `history`."""

    def forecast(self, history: np.ndarray, steps: int, end_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (mean, upper) for the next `steps` points; loads are never negative.

        `end_index` is the absolute grid index of the last history point (Unix time
        divided by the resolution), which fixes the seasonal phase.
        """
        mean = np.maximum(self.mean_forecast(np.asarray(history, dtype=float), steps, end_index), 0.0)
        upper = np.maximum(mean + max(self.residual_quantile, 0.0), mean)
        return mean, upper


class Forecaster(abc.ABC):
    name: str = "base"

    def min_history(self, season: int) -> int:
        """Return the fewest points `fit` accepts (two seasons for seasonal models)."""
        return 2 * season

    def fit(self, history: np.ndarray, season: int, upper_quantile_ratio: float, end_index: int) -> FittedModel:
        """Fit on `history`, recording each warning the model emits instead of hiding it."""
        history = np.asarray(history, dtype=float)
        needed = self.min_history(season)
        if len(history) < needed:
            raise InsufficientHistory(f"{self.name} needs {needed} points of history, has {len(history)}")
        if not np.all(np.isfinite(history)):
            raise ValueError(f"{self.name}: history contains NaN or infinite values; clean it before fitting")
        # catch_warnings is scoped to this call; fits run one at a time per worker process,
        # so the recorded list belongs to this fit only.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = self._fit(history, season, upper_quantile_ratio, end_index)
        model.fit_warnings = [f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught]
        return model

    @abc.abstractmethod
    def _fit(self, history: np.ndarray, season: int, upper_quantile_ratio: float, end_index: int) -> FittedModel:
        ...


def residual_quantile(residuals: np.ndarray, ratio: float) -> float:
    residuals = residuals[np.isfinite(residuals)]
    if residuals.size == 0:
        return 0.0
    return float(np.quantile(residuals, ratio))
