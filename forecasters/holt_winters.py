"""Holt-Winters (additive damped trend, additive season) via statsmodels ExponentialSmoothing."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from forecasters.base import FittedModel, Forecaster, residual_quantile

_PARAM_NAMES = ("smoothing_level", "smoothing_trend", "smoothing_seasonal", "damping_trend")


@dataclass
class FittedHoltWinters(FittedModel):
    params: dict[str, float] = field(default_factory=dict)

    def mean_forecast(self, history: np.ndarray, steps: int, end_index: int) -> np.ndarray:
        # Rerun the smoother with the fitted parameters: a filter pass, no optimization.
        model = ExponentialSmoothing(
            history, trend="add", damped_trend=True, seasonal="add",
            seasonal_periods=self.season, initialization_method="heuristic",
        )
        result = model.fit(optimized=False, **self.params)
        return np.asarray(result.forecast(steps), dtype=float)


class HoltWinters(Forecaster):
    name = "holt_winters"

    def _fit(self, history: np.ndarray, season: int, upper_quantile_ratio: float, end_index: int) -> FittedModel:
        model = ExponentialSmoothing(
            history, trend="add", damped_trend=True, seasonal="add",
            seasonal_periods=season, initialization_method="heuristic",
        )
        result = model.fit()
        params = {name: float(result.params[name]) for name in _PARAM_NAMES}
        residuals = history - np.asarray(result.fittedvalues, dtype=float)
        return FittedHoltWinters(
            name=self.name,
            season=season,
            upper_quantile_ratio=upper_quantile_ratio,
            # The first season only reflects the heuristic initialization.
            residual_quantile=residual_quantile(residuals[season:], upper_quantile_ratio),
            params=params,
        )
