"""Tests of lag event parsing, validation, routing and rejection counting (no server needed)."""

from __future__ import annotations

import json

import pytest

from runtime.lag_events import (
    EventLimits,
    EventRejected,
    EventRoute,
    EventRouter,
    Rejection,
    RejectionCounter,
    parse_lag_event,
)

NOW = 1_700_000_000.0
LIMITS = EventLimits(max_event_bytes=512, max_future_seconds=30, max_age_seconds=300)


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_parse_total_lag_event():
    event = parse_lag_event(encode({"version": 1, "workload": "orders", "timestamp": NOW - 1, "total_lag": 1234}), NOW, LIMITS)
    assert event.workload == "orders"
    assert event.total_lag == 1234
    assert event.timestamp == NOW - 1


def test_parse_partition_offsets_event():
    payload = {
        "version": 1, "group": "billing", "topic": "invoices", "timestamp": NOW,
        "partitions": [
            {"partition": 0, "committed_offset": 10, "log_end_offset": 110},
            {"partition": 1, "lag": 5},
            # A committed offset past the log end counts as no lag.
            {"partition": 2, "committed_offset": 500, "log_end_offset": 400},
        ],
    }
    event = parse_lag_event(encode(payload), NOW, LIMITS)
    assert event.total_lag == 105
    assert event.partition_count == 3
    assert event.group == "billing"
    assert event.topic == "invoices"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 600, Rejection.OVERSIZE),
        (b"{not json", Rejection.NOT_JSON),
        (b"\xff\xfe", Rejection.NOT_JSON),
        (None, Rejection.NOT_JSON),
        (encode([1, 2]), Rejection.NOT_OBJECT),
        (encode({"workload": "a", "timestamp": NOW, "total_lag": 1}), Rejection.MISSING_FIELD),
        (encode({"version": 2, "workload": "a", "timestamp": NOW, "total_lag": 1}), Rejection.UNSUPPORTED_VERSION),
        (encode({"version": True, "workload": "a", "timestamp": NOW, "total_lag": 1}), Rejection.UNSUPPORTED_VERSION),
        (encode({"version": 1, "workload": "a", "total_lag": 1}), Rejection.MISSING_FIELD),
        (encode({"version": 1, "workload": "a", "timestamp": "now", "total_lag": 1}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW + 3600, "total_lag": 1}), Rejection.FUTURE_TIMESTAMP),
        (encode({"version": 1, "workload": "a", "timestamp": NOW - 3600, "total_lag": 1}), Rejection.OLD_TIMESTAMP),
        (encode({"version": 1, "timestamp": NOW, "total_lag": 1}), Rejection.MISSING_FIELD),
        (encode({"version": 1, "workload": 7, "timestamp": NOW, "total_lag": 1}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "total_lag": "12"}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "total_lag": 1.5}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "total_lag": True}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "total_lag": -3}), Rejection.INVALID_VALUE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW}), Rejection.MISSING_FIELD),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "partitions": {"0": 1}}), Rejection.WRONG_TYPE),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "partitions": [{"lag": 1}]}), Rejection.MISSING_FIELD),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "partitions": [{"partition": 0}]}), Rejection.MISSING_FIELD),
        (encode({"version": 1, "workload": "a", "timestamp": NOW, "partitions": [{"partition": 0, "lag": -1}]}), Rejection.INVALID_VALUE),
    ],
)
def test_parse_rejects_malformed(raw, reason):
    with pytest.raises(EventRejected) as caught:
        parse_lag_event(raw, NOW, LIMITS)
    assert caught.value.reason is reason


def test_parse_rejects_nan_timestamp():
    # json.dumps writes NaN, which Python's json module reads back.
    raw = b'{"version": 1, "workload": "a", "timestamp": NaN, "total_lag": 1}'
    with pytest.raises(EventRejected) as caught:
        parse_lag_event(raw, NOW, LIMITS)
    assert caught.value.reason is Rejection.WRONG_TYPE


def test_router_matches_workload_and_group():
    router = EventRouter([
        EventRoute("orders", "lag"),
        EventRoute("billing", "lag", match_group="billing-consumers", match_topic="invoices"),
    ])
    by_name = parse_lag_event(encode({"version": 1, "workload": "orders", "timestamp": NOW, "total_lag": 1}), NOW, LIMITS)
    assert [route.workload for route in router.match(by_name)] == ["orders"]
    by_group = parse_lag_event(encode({"version": 1, "group": "billing-consumers", "topic": "invoices", "timestamp": NOW, "total_lag": 1}), NOW, LIMITS)
    assert [route.workload for route in router.match(by_group)] == ["billing"]


@pytest.mark.parametrize(
    "payload",
    [
        {"version": 1, "workload": "unknown", "timestamp": NOW, "total_lag": 1},
        {"version": 1, "group": "billing-consumers", "topic": "other", "timestamp": NOW, "total_lag": 1},
        {"version": 1, "group": "nobody", "timestamp": NOW, "total_lag": 1},
    ],
)
def test_router_rejects_unknown_workload(payload):
    router = EventRouter([EventRoute("billing", "lag", match_group="billing-consumers", match_topic="invoices")])
    event = parse_lag_event(encode(payload), NOW, LIMITS)
    with pytest.raises(EventRejected) as caught:
        router.match(event)
    assert caught.value.reason is Rejection.UNKNOWN_WORKLOAD


def test_rejection_counter_rate_limits_logging():
    counter = RejectionCounter(log_interval_seconds=60)
    rejection = EventRejected(Rejection.NOT_JSON, "not valid JSON")
    logged = [counter.record(rejection, NOW + offset) for offset in (0, 1, 2, 59, 61)]
    assert logged == [True, False, False, False, True]
    assert counter.counts["not_json"] == 5
    # Another reason has its own interval.
    assert counter.record(EventRejected(Rejection.OVERSIZE, "too big"), NOW + 1)
    assert counter.counts["oversize"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"partitions": []}, "partitions is empty"),
        ({"partitions": [{"partition": 0, "lag": 5}, {"partition": 0, "lag": 5}]}, "partitions [0] appear more than once"),
        ({"total_lag": 10**26}, "exceeds the largest Kafka offset"),
    ],
    ids=["empty-partitions", "repeated-partition", "lag-beyond-offsets"],
)
def test_implausible_lag_rejected(extra, message):
    payload = {"version": 1, "workload": "orders", "timestamp": NOW, **extra}
    with pytest.raises(EventRejected) as caught:
        parse_lag_event(encode(payload), NOW, LIMITS)
    assert caught.value.reason is Rejection.INVALID_VALUE
    assert message in str(caught.value)
