"""Seasonal naive: tomorrow at 10:00 looks like today at 10:00."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecasters.base import FittedModel, Forecaster, residual_quantile


def seasonal_naive_path(history: np.ndarray, season: int, steps: int) -> np.ndarray:
    """Repeat the last season of `history` for `steps` points."""
    last = history[-season:]
    repeats = int(np.ceil(steps / season))
    return np.tile(last, repeats)[:steps]


@dataclass
class FittedSeasonalNaive(FittedModel):
    def mean_forecast(self, history: np.ndarray, steps: int, end_index: int) -> np.ndarray:
        return seasonal_naive_path(history, self.season, steps)


class SeasonalNaive(Forecaster):
    name = "seasonal_naive"

    def _fit(self, history: np.ndarray, season: int, upper_quantile_ratio: float, end_index: int) -> FittedModel:
        residuals = history[season:] - history[:-season]
        return FittedSeasonalNaive(
            name=self.name,
            season=season,
            upper_quantile_ratio=upper_quantile_ratio,
            residual_quantile=residual_quantile(residuals, upper_quantile_ratio),
        )
