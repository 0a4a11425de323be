"""Forecaster accuracy on a synthetic seasonal series and on a shipped real trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecasters import FORECASTERS, fit_job
from forecasters.auto import mase_scale
from runtime.traces import load_trace

DATA = Path(__file__).resolve().parent.parent / "data"
SEASON = 48


def synthetic(points: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(points)
    return 100 + 40 * np.sin(2 * np.pi * t / SEASON) + 0.05 * t + rng.normal(0, 2, points)


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_model_tracks_synthetic_season(name):
    series = synthetic(6 * SEASON + 12)
    train, test = series[:-12], series[-12:]
    model = FORECASTERS[name]().fit(train, SEASON, 0.9, end_index=len(train) - 1)
    mean, upper = model.forecast(train, 12, end_index=len(train) - 1)
    error = float(np.mean(np.abs(mean - test)))
    # Noise has sd 2, so a model that follows the season stays well under 10 units of error,
    # while a flat forecast at the mean would be off by about 25.
    assert error < 10.0
    assert (upper >= mean).all()


def test_auto_prefers_smoother_on_noisy_season():
    series = synthetic(8 * SEASON)
    outcome = fit_job("auto", series, SEASON, 0.9, len(series) - 1, horizon=3)
    assert outcome.model is not None
    assert set(outcome.scores) == set(FORECASTERS)
    # Seasonal naive doubles the noise; a smoother beats it out of sample.
    assert outcome.model.name != "seasonal_naive"
    assert outcome.scores[outcome.model.name] < outcome.scores["seasonal_naive"]


def test_short_history_falls_back_with_reason():
    outcome = fit_job("holt_winters", synthetic(SEASON), SEASON, 0.9, SEASON - 1, horizon=3)
    assert outcome.model is None
    assert "needs 96 points of history, has 48" in outcome.fallback_reason


def test_unknown_values_never_fitted():
    series = synthetic(4 * SEASON)
    series[10] = np.nan
    outcome = fit_job("auto", series, SEASON, 0.9, len(series) - 1, horizon=3)
    assert outcome.model is None
    assert outcome.fallback_reason == "history contains unknown values"


def test_real_trace_beats_seasonal_naive():
    # NASA HTTP July 1995, 5-minute means over 9 days; the daily season is 288 points.
    trace = load_trace(DATA / "nasa_http_1995jul_1min.csv")
    rates = trace.rates[: 9 * 1440]
    series = rates.reshape(-1, 5).mean(axis=1)
    end_index = int(trace.start // 300) + len(series) - 1
    outcome = fit_job("auto", series, 288, 0.9, end_index, horizon=3)
    assert outcome.model is not None
    assert outcome.scores["seasonal_naive"] > 0
    assert outcome.score < 0.9 * outcome.scores["seasonal_naive"]
    assert outcome.score < 1.0  # better than the in-sample seasonal naive scale


def test_fit_warnings_recorded_not_silenced():
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    from forecasters.seasonal_naive import SeasonalNaive

    class WarningNaive(SeasonalNaive):
        name = "warning_naive"

        def _fit(self, history, season, upper_quantile_ratio, end_index):
            warnings.warn("optimizer stopped early", ConvergenceWarning)
            return super()._fit(history, season, upper_quantile_ratio, end_index)

    filters_before = list(warnings.filters)
    model = WarningNaive().fit(synthetic(3 * SEASON), SEASON, 0.9, end_index=3 * SEASON - 1)
    assert model.fit_warnings == ["ConvergenceWarning: optimizer stopped early"]
    # The recording is scoped to the fit: the process-wide filters are unchanged.
    assert warnings.filters == filters_before
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        warnings.warn("after the fit", ConvergenceWarning)
    assert len(later) == 1


def test_mase_scale_of_constant_series_is_nan():
    assert np.isnan(mase_scale(np.ones(100), 10))
