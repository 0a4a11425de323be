"""Signal source that reads a PromQL query from Prometheus with prometheus-api-client.

Each poll runs an instant query that must return exactly one series. At start, the
history of the load signal is read with range queries split into chunks below
Prometheus' limit of 11,000 points per series, so the forecaster is trained at once.

An empty result, NaN, +-Inf, a negative value, a stale sample or several series are
reported as unknown observations with the reason, never as zero. A timeout or HTTP
error reports the source as down and retries with exponential backoff. The first
failure of a streak is logged with the query id, and the repeats are counted and
logged once when the query recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import requests
import structlog
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from runtime.config import PrometheusSourceConfig
from runtime.credentials import read_secret
from runtime.daemon import ObservationSink, SignalSource
from runtime.model import Observation, Validity

log = structlog.get_logger("agent_autoscaler.prometheus")

# Prometheus rejects a range query that would return more than this many points per series.
MAX_POINTS_PER_SERIES = 11_000

QUERY_ERRORS = (requests.RequestException, PrometheusApiClientException, ValueError, KeyError, TypeError)


def history_chunks(start: float, end: float, step_seconds: int, max_points: int = MAX_POINTS_PER_SERIES) -> list[tuple[float, float]]:
    """Split [start, end] into range-query windows that each return at most `max_points` points."""
    if end < start:
        return []
    span = step_seconds * (max_points - 1)
    chunks = []
    chunk_start = start
    while chunk_start <= end:
        chunk_end = min(chunk_start + span, end)
        chunks.append((chunk_start, chunk_end))
        chunk_start = chunk_end + step_seconds
    return chunks


def interpret_instant_result(result: Any, now: float, stale_after_seconds: float, query_id: str) -> Observation:
    """Turn the `result` list of an instant vector query into one observation."""
    if not isinstance(result, list):
        return Observation.unknown(now, Validity.MISSING, f"query {query_id} returned {type(result).__name__}, expected an instant vector")
    if not result:
        return Observation.unknown(now, Validity.MISSING, f"query {query_id} returned no series")
    if len(result) > 1:
        labels = [series.get("metric", {}) for series in result[:3]]
        return Observation.unknown(
            now, Validity.AMBIGUOUS,
            f"query {query_id} returned {len(result)} series where one was expected (first labels {labels}); aggregate it, for example with sum()",
        )
    timestamp_raw, value_raw = result[0]["value"]
    timestamp = float(timestamp_raw)
    # Prometheus encodes NaN and infinities as the strings "NaN", "+Inf" and "-Inf", which float() accepts.
    value = float(value_raw)
    observation = Observation.checked(value, timestamp)
    if observation.validity is not Validity.OK:
        return Observation.unknown(timestamp, observation.validity, f"query {query_id}: {observation.detail}")
    # NOTE: Prometheus stamps an instant result with the evaluation time, so this only
    # catches a lagging server clock. A series that stopped updating drops out after the
    # server's lookback delta (5 minutes by default) and then shows as MISSING.
    age = now - timestamp
    if age > stale_after_seconds:
        return Observation.unknown(timestamp, Validity.STALE, f"query {query_id}: sample is {age:.0f} s old (limit {stale_after_seconds:.0f} s)")
    return observation


def build_client(config: PrometheusSourceConfig) -> PrometheusConnect:
    """Create the HTTP client with auth, CA file and headers; raises SecretError for unreadable secrets."""
    headers = dict(config.headers)
    token = read_secret(config.bearer_token_file, config.bearer_token_env, "bearer token")
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    auth = None
    password = read_secret(config.basic_auth_password_file, config.basic_auth_password_env, "basic auth password")
    if config.basic_auth_username is not None and password is not None:
        auth = (config.basic_auth_username, password)
    session = requests.Session()
    session.verify = str(config.tls_ca_file) if config.tls_ca_file is not None else True
    # The source retries with its own backoff, so the client must not retry and block the poll.
    return PrometheusConnect(
        url=config.url.rstrip("/"),
        headers=headers or None,
        retry=Retry(total=0, raise_on_status=False),
        auth=auth,
        session=session,
        timeout=config.timeout_seconds,
    )


class PrometheusSource(SignalSource):
    """Polls one PromQL query for one (workload, signal) pair; see the module docstring."""

    name = "prometheus"

    def __init__(
        self,
        workload: str,
        signal_name: str,
        config: PrometheusSourceConfig,
        stale_after_seconds: float,
        is_load_signal: bool,
        clock: Callable[[], float] = time.time,
    ):
        self.workload = workload
        self.signal = signal_name
        self.config = config
        self.stale_after_seconds = stale_after_seconds
        self.is_load_signal = is_load_signal
        self.clock = clock
        self.query_id = config.query_id or f"{workload}/{signal_name}"
        self.client = build_client(config)
        # Failed queries since start, and unknown results by reason; exposed for tests and logs.
        self.failures = 0
        self.unknown_counts: Counter[str] = Counter()

    def _range_query(self, query: str, start: float, end: float) -> Any:
        return self.client.custom_query_range(
            query,
            start_time=datetime.fromtimestamp(start, tz=timezone.utc),
            end_time=datetime.fromtimestamp(end, tz=timezone.utc),
            step=f"{self.config.history_step_seconds}s",
        )

    async def load_history(self, sink_history: Callable[[str, np.ndarray, np.ndarray], None]) -> None:
        """Read `history_window_seconds` of the load signal in chunks and pass it to `sink_history`."""
        if not self.is_load_signal or self.config.history_window_seconds == 0:
            return
        query = self.config.history_query or self.config.query
        end = self.clock()
        start = end - self.config.history_window_seconds
        timestamps: list[float] = []
        values: list[float] = []
        chunks = history_chunks(start, end, self.config.history_step_seconds)
        for chunk_start, chunk_end in chunks:
            try:
                result = await asyncio.to_thread(self._range_query, query, chunk_start, chunk_end)
            except QUERY_ERRORS as exc:
                log.error("prometheus history query failed; the forecaster trains on collected data instead", query_id=self.query_id, error=str(exc), error_type=type(exc).__name__)
                return
            if len(result) > 1:
                log.error("prometheus history query returned several series; aggregate it, for example with sum()", query_id=self.query_id, series=len(result))
                return
            for series in result:
                for timestamp_raw, value_raw in series["values"]:
                    timestamps.append(float(timestamp_raw))
                    values.append(float(value_raw))
        # Unknown samples (NaN, infinities, negative) are dropped by the history itself, never zeroed.
        sink_history(self.workload, np.asarray(timestamps, dtype=float), np.asarray(values, dtype=float))
        log.info("prometheus history loaded", query_id=self.query_id, points=len(values), chunks=len(chunks), window_seconds=self.config.history_window_seconds)

    async def poll_once(self) -> Observation:
        """Run the instant query once and return the observation; raises QUERY_ERRORS on failure."""
        result = await asyncio.to_thread(self.client.custom_query, self.config.query)
        return interpret_instant_result(result, self.clock(), self.stale_after_seconds, self.query_id)

    async def run(self, sink: ObservationSink) -> None:
        streak = 0
        last_validity = Validity.OK
        while True:
            try:
                observation = await self.poll_once()
            except QUERY_ERRORS as exc:
                streak += 1
                self.failures += 1
                delay = min(self.config.backoff_initial_seconds * 2 ** (streak - 1), self.config.backoff_max_seconds)
                if streak == 1:
                    log.warning(
                        "prometheus query failed; the signal is unknown and the workload keeps its replica count until the query succeeds",
                        query_id=self.query_id, workload=self.workload, error=str(exc), error_type=type(exc).__name__, retry_in_seconds=delay,
                        hint=_failure_hint(exc),
                    )
                detail = f"query {self.query_id} failed {streak} time(s) in a row: {type(exc).__name__}"
                sink(self.workload, self.signal, Observation.unknown(self.clock(), Validity.SOURCE_DOWN, detail), False)
                await asyncio.sleep(delay)
                continue
            if streak:
                log.info("prometheus query recovered", query_id=self.query_id, workload=self.workload, failed_attempts=streak)
                streak = 0
            if observation.validity is not Validity.OK:
                self.unknown_counts[observation.validity.value] += 1
                if observation.validity is not last_validity:
                    log.warning("prometheus result unusable", query_id=self.query_id, workload=self.workload, validity=observation.validity.value, detail=observation.detail)
            last_validity = observation.validity
            sink(self.workload, self.signal, observation, False)
            await asyncio.sleep(self.config.poll_interval_seconds)


def _failure_hint(exc: BaseException) -> str:
    """Suggest the likely fix for a failed query, from the error alone."""
    text = str(exc)
    if "404" in text or isinstance(exc, ValueError):
        return "the URL does not answer like a Prometheus server; set url to the server's base URL, for example http://prometheus:9090"
    if "401" in text or "403" in text:
        return "the server refused the credentials; check the bearer token or basic auth settings"
    if "400" in text:
        return "the server rejected the query; check its PromQL syntax, for example with promtool or the Prometheus UI"
    return "check that the server at url is reachable from the daemon and answers within timeout_seconds"
