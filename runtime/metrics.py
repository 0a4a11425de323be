"""The daemon's own Prometheus metrics, on a private registry so that tests can create several."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from runtime.model import Decision


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.desired_replicas = Gauge("autoscaler_desired_replicas", "Final replica count of the last decision.", ["workload"], registry=self.registry)
        self.spot_replicas = Gauge("autoscaler_spot_replicas", "Spot replicas of the last decision.", ["workload"], registry=self.registry)
        self.forecast = Gauge("autoscaler_forecast_load_per_second", "Forecast upper quantile over the startup lead window, load units per second.", ["workload"], registry=self.registry)
        self.observed_load = Gauge("autoscaler_observed_load_per_second", "Last usable observation of the load signal.", ["workload"], registry=self.registry)
        self.budget_remaining = Gauge("autoscaler_budget_remaining_ratio", "Share of the period's budget not yet spent.", ["budget"], registry=self.registry)
        self.budget_hourly_cost = Gauge("autoscaler_budget_hourly_cost", "Current spend rate per hour.", ["budget"], registry=self.registry)
        self.decisions = Counter("autoscaler_decisions_total", "Decisions by reason.", ["workload", "reason"], registry=self.registry)
        self.decision_latency = Histogram(
            "autoscaler_decision_latency_seconds", "Time to evaluate one workload, from trigger to decision.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=self.registry,
        )
        self.errors = Counter("autoscaler_errors_total", "Errors caught and handled, by component and kind.", ["component", "kind"], registry=self.registry)
        self.fits = Counter("autoscaler_forecaster_fits_total", "Forecaster fits by model chosen ('none' when none fitted).", ["workload", "model"], registry=self.registry)

    def record_decision(self, decision: Decision) -> None:
        self.desired_replicas.labels(decision.workload).set(decision.final_replicas)
        self.spot_replicas.labels(decision.workload).set(decision.spot_replicas)
        if decision.forecast_upper_per_second is not None:
            self.forecast.labels(decision.workload).set(decision.forecast_upper_per_second)
        if decision.load_per_second == decision.load_per_second:  # not NaN
            self.observed_load.labels(decision.workload).set(decision.load_per_second)
        self.decisions.labels(decision.workload, decision.reason.value).inc()


class SourceCollector:
    """Exports the counters that signal sources keep on themselves, read at scrape time.

    Sources count failed queries (`failures`) and rejected lag events (`rejections`)
    without knowing about the metrics registry; this collector turns them into
    counters so that repeats show on /metrics and not only in rate-limited logs.
    """

    def __init__(self, sources: Callable[[], Iterable[object]]):
        self._sources = sources

    def collect(self):
        failures = CounterMetricFamily(
            "autoscaler_source_failures", "Failed source queries (timeouts, HTTP and broker errors).", labels=["source", "workload"],
        )
        rejected = CounterMetricFamily("autoscaler_lag_events_rejected", "Lag events skipped, by reason.", labels=["reason"])
        totals: dict[str, int] = {}
        for source in self._sources():
            count = getattr(source, "failures", None)
            if isinstance(count, int):
                failures.add_metric([getattr(source, "name", "source"), str(getattr(source, "workload", ""))], count)
            counter = getattr(source, "rejections", None)
            for reason, value in getattr(counter, "counts", {}).items():
                totals[reason] = totals.get(reason, 0) + value
        for reason, value in sorted(totals.items()):
            rejected.add_metric([reason], value)
        yield failures
        yield rejected
