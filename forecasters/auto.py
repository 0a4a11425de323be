"""Model selection by rolling-origin backtest, and the fit job the runtime schedules.

`fit_job` is the single entry point the daemon runs in its process pool and the
simulator runs inline: it fits the configured model (or, for `auto`, every candidate)
and returns a `FitOutcome` that is small and picklable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forecasters.base import FittedModel, Forecaster, InsufficientHistory
from forecasters.holt_winters import HoltWinters
from forecasters.seasonal_naive import SeasonalNaive
from forecasters.stl_ets import StlEts

FORECASTERS: dict[str, type[Forecaster]] = {
    SeasonalNaive.name: SeasonalNaive,
    HoltWinters.name: HoltWinters,
    StlEts.name: StlEts,
}
AUTO_CANDIDATES = (SeasonalNaive.name, HoltWinters.name, StlEts.name)
BACKTEST_ORIGINS = 12


@dataclass
class FitOutcome:
    """Result of one fit job: the chosen model, or why there is none."""

    model: FittedModel | None
    requested: str
    scores: dict[str, float | None] = field(default_factory=dict)  # MASE per candidate, lower is better
    warnings: list[str] = field(default_factory=list)
    fallback_reason: str = ""

    @property
    def score(self) -> float | None:
        if self.model is None:
            return None
        return self.scores.get(self.model.name)


def mase_scale(history: np.ndarray, season: int) -> float:
    """Mean absolute error of the in-sample seasonal naive forecast, the MASE denominator."""
    if len(history) <= season:
        return float("nan")
    scale = float(np.mean(np.abs(history[season:] - history[:-season])))
    return scale if scale > 0 else float("nan")


def backtest(model: FittedModel, history: np.ndarray, test_start: int, horizon: int, end_index: int, scale: float) -> float:
    """Return the MASE of `model` over rolling origins in history[test_start:]."""
    n = len(history)
    last_origin = n - horizon
    if last_origin <= test_start:
        return float("nan")
    origins = np.unique(np.linspace(test_start, last_origin, num=min(BACKTEST_ORIGINS, last_origin - test_start + 1)).astype(int))
    errors = []
    for origin in origins:
        origin_end_index = end_index - (n - origin)
        mean, _ = model.forecast(history[:origin], horizon, origin_end_index)
        errors.append(np.mean(np.abs(mean - history[origin : origin + horizon])))
    return float(np.mean(errors) / scale)


def fit_job(requested: str, history: np.ndarray, season: int, upper_quantile_ratio: float, end_index: int, horizon: int) -> FitOutcome:
    """Fit the requested model; for `auto`, pick the candidate with the lowest backtest MASE.

    Never raises for short or odd history: the outcome then has no model and a
    fallback reason, and the planner scales reactively.
    """
    history = np.asarray(history, dtype=float)
    names = AUTO_CANDIDATES if requested == "auto" else (requested,)
    outcome = FitOutcome(model=None, requested=requested)
    if not np.all(np.isfinite(history)):
        outcome.fallback_reason = "history contains unknown values"
        return outcome

    # Hold out one season (or what the history allows) for the backtest. Parameters are
    # fitted on the rest, so the score is out of sample.
    test_span = min(season, len(history) // 3)
    train = history[: len(history) - test_span]
    train_end_index = end_index - test_span
    scale = mase_scale(history, season)
    best_name, best_score = None, float("inf")
    fitted: dict[str, FittedModel] = {}
    failures = []
    for name in names:
        forecaster = FORECASTERS[name]()
        held_out = len(history) - len(train)
        if len(train) < forecaster.min_history(season):
            # Too short to hold a season out: fit on all of it, unscored (or fail on its length).
            held_out = 0
        try:
            if held_out:
                model = forecaster.fit(train, season, upper_quantile_ratio, train_end_index)
            else:
                model = forecaster.fit(history, season, upper_quantile_ratio, end_index)
        except InsufficientHistory as exc:
            failures.append(str(exc))
            continue
        except (ValueError, np.linalg.LinAlgError) as exc:
            failures.append(f"{name} failed to fit: {exc}")
            continue
        outcome.warnings.extend(f"{name}: {warning}" for warning in model.fit_warnings)
        fitted[name] = model
        score = backtest(model, history, len(train), horizon, end_index, scale) if held_out >= horizon else float("nan")
        # None marks a model fitted without a backtest (history too short to hold a season out).
        outcome.scores[name] = round(score, 4) if np.isfinite(score) else None
        rank = score if np.isfinite(score) else float("inf")
        if best_name is None or rank < best_score:
            best_name, best_score = name, rank
    if best_name is None:
        outcome.fallback_reason = "; ".join(failures) or "no model could be fitted"
        return outcome
    outcome.model = fitted[best_name]
    return outcome
