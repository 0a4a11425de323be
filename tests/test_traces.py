"""Trace files: the shipped ones load, malformed ones fail with file, line, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.traces import TraceError, load_trace

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.parametrize("name", sorted(path.name for path in DATA.glob("*.csv")))
def test_shipped_traces_load(name):
    trace = load_trace(DATA / name)
    assert len(trace.counts) > 100
    assert trace.interval_seconds in (1.0, 60.0, 600.0)
    assert (trace.counts >= 0).all()


CASES = [
    ("bad-header", "time,count\n0,1\n60,2\n", ":1: header is 'time,count'"),
    ("non-numeric", "timestamp,value\n0,1\n60,abc\n", ":3: value 'abc' is not a number"),
    ("negative", "timestamp,value\n0,1\n60,-4\n", ":3: value '-4' is negative"),
    ("nan", "timestamp,value\n0,1\n60,nan\n", ":3: value 'nan' is not finite"),
    ("unsorted", "timestamp,value\n0,1\n120,2\n60,3\n", ":4: timestamp '60' is not after"),
    ("duplicate", "timestamp,value\n0,1\n0,2\n", ":3: timestamp '0' is not after"),
    ("gap", "timestamp,value\n0,1\n60,2\n180,3\n", ":4: interval is 120 s where the file's interval is 60 s"),
    ("bad-timestamp", "timestamp,value\nyesterday,1\n", ":2: timestamp 'yesterday'"),
    ("mixed-formats", "timestamp,value\n0,1\n2023-01-01T00:00:00Z,2\n", "mixes ISO-8601 and plain seconds"),
    ("one-row", "timestamp,value\n0,1\n", "at least two rows"),
    ("empty", "", "the file is empty"),
    ("columns", "timestamp,value\n0,1,2\n", "expected 2 columns"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_malformed_trace_named(tmp_path, text, expected):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_trace(tmp_path):
    with pytest.raises(TraceError, match="trace file not found"):
        load_trace(tmp_path / "absent.csv")


def test_iso_timestamps_parsed(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("timestamp,value\n2023-11-16T18:17:03Z,1\n2023-11-16T18:17:04Z,7\n")
    trace = load_trace(path)
    assert trace.interval_seconds == 1.0
    assert trace.start == 1700158623.0
    assert list(trace.rates) == [1.0, 7.0]


def test_byte_order_mark_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftimestamp,value\n0,1\n60,2\n".encode("utf-8"))
    assert list(load_trace(path).counts) == [1.0, 2.0]
