"""Load forecasters: seasonal naive, Holt-Winters, STL + ETS, and automatic selection."""

from forecasters.auto import AUTO_CANDIDATES, FORECASTERS, FitOutcome, fit_job
from forecasters.base import FittedModel, Forecaster, InsufficientHistory

__all__ = ["AUTO_CANDIDATES", "FORECASTERS", "FitOutcome", "FittedModel", "Forecaster", "InsufficientHistory", "fit_job"]
