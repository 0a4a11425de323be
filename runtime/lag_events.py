"""Lag events read from a Kafka topic: parsing, validation and routing, free of I/O.

The JSON schema (version 1) is documented in docs/lag-events.md. Every rejected
event is counted by reason and logged at most once per reason and interval, so a
flood of bad events cannot flood the log or stop the consumer.
"""

from __future__ import annotations

import enum
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("agent_autoscaler.lag_events")

SCHEMA_VERSION = 1


class Rejection(str, enum.Enum):
    """Reason a lag event was skipped."""

    OVERSIZE = "oversize"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_WORKLOAD = "unknown_workload"
    FUTURE_TIMESTAMP = "future_timestamp"
    OLD_TIMESTAMP = "old_timestamp"


class EventRejected(Exception):
    """Raised by `parse_lag_event` with the reason and a message naming the bad value."""

    def __init__(self, reason: Rejection, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventLimits:
    max_event_bytes: int = 65536
    max_future_seconds: float = 30.0
    max_age_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class LagEvent:
    """One accepted event: who it is about, when it was measured (Unix seconds) and the total lag in records."""

    timestamp: float
    total_lag: int
    workload: str | None = None
    group: str | None = None
    topic: str | None = None
    partition_count: int | None = None


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but true/false is not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise EventRejected(Rejection.WRONG_TYPE, f"field {key!r} must be a non-empty string, got {value!r}")
    return value


# Kafka offsets are signed 64-bit integers, so no real lag or offset is larger.
MAX_KAFKA_OFFSET = 2**63 - 1


def _non_negative_int(value: Any, where: str) -> int:
    if not _is_int(value):
        raise EventRejected(Rejection.WRONG_TYPE, f"{where} must be an integer, got {value!r}")
    if value < 0:
        raise EventRejected(Rejection.INVALID_VALUE, f"{where} must not be negative, got {value}")
    if value > MAX_KAFKA_OFFSET:
        raise EventRejected(Rejection.INVALID_VALUE, f"{where}={value} exceeds the largest Kafka offset ({MAX_KAFKA_OFFSET})")
    return value


def _partition_lag(item: Any, index: int) -> int:
    where = f"partitions[{index}]"
    if not isinstance(item, dict):
        raise EventRejected(Rejection.WRONG_TYPE, f"{where} must be an object, got {type(item).__name__}")
    if "partition" not in item:
        raise EventRejected(Rejection.MISSING_FIELD, f"{where} has no 'partition'")
    _non_negative_int(item["partition"], f"{where}.partition")
    if "lag" in item:
        return _non_negative_int(item["lag"], f"{where}.lag")
    if "log_end_offset" not in item or "committed_offset" not in item:
        raise EventRejected(Rejection.MISSING_FIELD, f"{where} needs 'lag', or 'committed_offset' and 'log_end_offset'")
    end = _non_negative_int(item["log_end_offset"], f"{where}.log_end_offset")
    committed = _non_negative_int(item["committed_offset"], f"{where}.committed_offset")
    # A committed offset past the log end (a recreated topic) is no lag, never negative lag.
    return max(0, end - committed)


def parse_lag_event(raw: bytes | None, now: float, limits: EventLimits) -> LagEvent:
    """Parse and validate one event; raises EventRejected with the reason."""
    if raw is None:
        raise EventRejected(Rejection.NOT_JSON, "the record has no value")
    if len(raw) > limits.max_event_bytes:
        raise EventRejected(Rejection.OVERSIZE, f"event of {len(raw)} bytes exceeds max_event_bytes={limits.max_event_bytes}")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventRejected(Rejection.NOT_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventRejected(Rejection.NOT_OBJECT, f"expected a JSON object, got {type(data).__name__}")

    if "version" not in data:
        raise EventRejected(Rejection.MISSING_FIELD, "field 'version' is missing")
    if data["version"] != SCHEMA_VERSION or not _is_int(data["version"]):
        raise EventRejected(Rejection.UNSUPPORTED_VERSION, f"version {data['version']!r} is not supported; this daemon reads version {SCHEMA_VERSION}")

    if "timestamp" not in data:
        raise EventRejected(Rejection.MISSING_FIELD, "field 'timestamp' is missing")
    timestamp = data["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise EventRejected(Rejection.WRONG_TYPE, f"timestamp must be finite Unix seconds, got {timestamp!r}")
    if timestamp > now + limits.max_future_seconds:
        raise EventRejected(Rejection.FUTURE_TIMESTAMP, f"timestamp {timestamp} is {timestamp - now:.0f} s ahead of the daemon clock (limit {limits.max_future_seconds:.0f} s)")
    if timestamp < now - limits.max_age_seconds:
        raise EventRejected(Rejection.OLD_TIMESTAMP, f"timestamp {timestamp} is {now - timestamp:.0f} s old (limit {limits.max_age_seconds:.0f} s)")

    workload = _optional_string(data, "workload")
    group = _optional_string(data, "group")
    topic = _optional_string(data, "topic")
    if workload is None and group is None:
        raise EventRejected(Rejection.MISSING_FIELD, "set 'workload', or 'group' with an optional 'topic'")

    partition_count = None
    if "total_lag" in data:
        total = _non_negative_int(data["total_lag"], "total_lag")
    elif "partitions" in data:
        partitions = data["partitions"]
        if not isinstance(partitions, list):
            raise EventRejected(Rejection.WRONG_TYPE, f"partitions must be a list, got {type(partitions).__name__}")
        if not partitions:
            raise EventRejected(Rejection.INVALID_VALUE, "partitions is empty; send total_lag 0 to report that nothing is waiting")
        total = sum(_partition_lag(item, index) for index, item in enumerate(partitions))
        numbers = [item["partition"] for item in partitions]
        repeated = sorted({number for number in numbers if numbers.count(number) > 1})
        if repeated:
            raise EventRejected(Rejection.INVALID_VALUE, f"partitions {repeated} appear more than once; send each partition once")
        partition_count = len(partitions)
    else:
        raise EventRejected(Rejection.MISSING_FIELD, "set 'total_lag' or 'partitions'")
    return LagEvent(float(timestamp), total, workload, group, topic, partition_count)


@dataclass(frozen=True, slots=True)
class EventRoute:
    """One signal that lag events can feed."""

    workload: str
    signal: str
    match_group: str | None = None
    match_topic: str | None = None


class EventRouter:
    """Maps an event to the (workload, signal) pairs it updates."""

    def __init__(self, routes: list[EventRoute]):
        self.by_workload: dict[str, list[EventRoute]] = {}
        self.by_group: dict[str, list[EventRoute]] = {}
        for route in routes:
            self.by_workload.setdefault(route.workload, []).append(route)
            if route.match_group is not None:
                self.by_group.setdefault(route.match_group, []).append(route)

    def match(self, event: LagEvent) -> list[EventRoute]:
        """Return the matching routes; raises EventRejected (unknown_workload) when none match."""
        if event.workload is not None:
            routes = self.by_workload.get(event.workload, [])
        else:
            candidates = self.by_group.get(event.group or "", [])
            routes = [route for route in candidates if route.match_topic is None or route.match_topic == event.topic]
        if not routes:
            subject = f"workload {event.workload!r}" if event.workload is not None else f"group {event.group!r} topic {event.topic!r}"
            raise EventRejected(Rejection.UNKNOWN_WORKLOAD, f"no signal reads lag events for {subject}; check the event or the kafka_events source config")
        return routes


@dataclass(slots=True)
class RejectionCounter:
    """Counts rejected events by reason and logs each reason at most once per `log_interval_seconds`.

    The log line of a reason carries how many events of that reason were skipped
    without a log line since the previous one.
    """

    log_interval_seconds: float = 60.0
    counts: Counter[str] = field(default_factory=Counter)
    _last_logged: dict[str, float] = field(default_factory=dict)
    _unlogged: Counter[str] = field(default_factory=Counter)

    def record(self, rejection: EventRejected, now: float, partition: int | None = None, offset: int | None = None) -> bool:
        """Count one rejected event; return whether it was logged."""
        reason = rejection.reason.value
        self.counts[reason] += 1
        last = self._last_logged.get(reason)
        if last is not None and now - last < self.log_interval_seconds:
            self._unlogged[reason] += 1
            return False
        log.warning(
            "lag event skipped", reason=reason, detail=rejection.detail, partition=partition, offset=offset,
            skipped_without_log=self._unlogged.pop(reason, 0), total_for_reason=self.counts[reason],
        )
        self._last_logged[reason] = now
        return True
