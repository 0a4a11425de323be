"""OpenMetrics text built from the shipped traces, for backfilling a test Prometheus with promtool.

Used by tests/test_prometheus_source.py and benchmarks/prometheus_startup.py. It does
not depend on pytest.
"""

from __future__ import annotations

from pathlib import Path

from runtime.traces import load_trace

REPO_ROOT = Path(__file__).resolve().parent.parent
NASA_TRACE = REPO_ROOT / "data" / "nasa_http_1995jul_1min.csv"


def trace_openmetrics_lines(metric: str, end: float, window_seconds: float, trace_path: Path = NASA_TRACE) -> list[str]:
    """Return gauge samples of a trace's rate (requests per second), shifted so the last one is at `end`.

    Only the last `window_seconds` of the shifted trace are kept. Timestamps are whole
    seconds in ascending order, as promtool requires.
    """
    trace = load_trace(trace_path)
    rates = trace.rates
    shift = end - float(trace.timestamps[-1])
    lines = [f"# TYPE {metric} gauge"]
    for timestamp, rate in zip(trace.timestamps, rates):
        shifted = int(float(timestamp) + shift)
        if shifted < end - window_seconds:
            continue
        lines.append(f"{metric} {float(rate):.6f} {shifted}")
    return lines


def gauge_lines(metric: str, samples: list[tuple[dict[str, str], float | str, int]]) -> list[str]:
    """Return a gauge family: (labels, value, Unix seconds) per sample; values may be 'NaN' or '+Inf'."""
    lines = [f"# TYPE {metric} gauge"]
    for labels, value, timestamp in samples:
        label_text = ",".join(f'{key}="{item}"' for key, item in sorted(labels.items()))
        name = f"{metric}{{{label_text}}}" if label_text else metric
        lines.append(f"{name} {value} {timestamp}")
    return lines


def openmetrics_document(*families: list[str]) -> str:
    return "\n".join(line for family in families for line in family) + "\n# EOF\n"
