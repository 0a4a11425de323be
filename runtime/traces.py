"""Loading of workload traces: CSV files `timestamp,value`, one row per fixed interval.

`value` is the number of requests that arrived in the interval starting at
`timestamp`. Timestamps are ISO-8601 UTC (`2023-11-16T18:17:03Z`) or whole seconds
since the trace start. Each malformed file raises TraceError naming the file, the line,
the value and the fix.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


class TraceError(Exception):
    """A trace file that cannot be used, with the file, line and fix in the message."""


@dataclass(frozen=True)
class Trace:
    name: str
    path: str
    timestamps: np.ndarray  # interval starts, Unix seconds (or seconds since start)
    counts: np.ndarray  # requests per interval
    interval_seconds: float

    @property
    def rates(self) -> np.ndarray:
        """Requests per second in each interval."""
        return self.counts / self.interval_seconds

    @property
    def start(self) -> float:
        return float(self.timestamps[0])

    @property
    def end(self) -> float:
        return float(self.timestamps[-1]) + self.interval_seconds

    @property
    def duration_seconds(self) -> float:
        return self.end - self.start


def _parse_timestamp(raw: str, path: Path, line: int) -> tuple[float, bool]:
    text = raw.strip()
    try:
        return float(int(text)), False
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TraceError(
            f"{path}:{line}: timestamp {raw!r} is neither whole seconds nor ISO-8601; "
            "write it as 2023-11-16T18:17:03Z or as an integer number of seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp(), True


def load_trace(path: Path | str) -> Trace:
    """Read and validate a trace file; raise TraceError on the first problem."""
    path = Path(path)
    try:
        # utf-8-sig drops the byte-order mark that spreadsheet exports put before the header.
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise TraceError(f"{path}: trace file not found; pass an existing CSV file with the header timestamp,value") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot open the trace file ({exc.strerror}); check the path and its permissions") from None

    timestamps: list[float] = []
    counts: list[float] = []
    iso_kind: bool | None = None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TraceError(f"{path}:1: cannot read the header ({exc}); the file must be UTF-8 CSV") from None
        if header is None:
            raise TraceError(f"{path}: the file is empty; it needs the header timestamp,value and at least two rows")
        if [cell.strip().lower() for cell in header] != ["timestamp", "value"]:
            raise TraceError(f"{path}:1: header is {','.join(header)!r}; the first line must be exactly timestamp,value")
        try:
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != 2:
                    raise TraceError(f"{path}:{line}: expected 2 columns, found {len(row)} ({','.join(row)!r}); write timestamp,value")
                timestamp, is_iso = _parse_timestamp(row[0], path, line)
                if iso_kind is None:
                    iso_kind = is_iso
                elif iso_kind != is_iso:
                    raise TraceError(f"{path}:{line}: timestamp {row[0]!r} mixes ISO-8601 and plain seconds; use one format for the whole file")
                try:
                    value = float(row[1])
                except ValueError:
                    raise TraceError(f"{path}:{line}: value {row[1]!r} is not a number; write the request count of the interval") from None
                if not math.isfinite(value):
                    raise TraceError(f"{path}:{line}: value {row[1]!r} is not finite; write the request count of the interval")
                if value < 0:
                    raise TraceError(f"{path}:{line}: value {row[1]!r} is negative; request counts are 0 or more")
                if timestamps and timestamp <= timestamps[-1]:
                    raise TraceError(
                        f"{path}:{line}: timestamp {row[0]!r} is not after the previous row's; sort the rows by timestamp and remove duplicates"
                    )
                timestamps.append(timestamp)
                counts.append(value)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise TraceError(f"{path}:{reader.line_num}: cannot read the row ({exc}); the file must be UTF-8 CSV") from None

    if len(timestamps) < 2:
        raise TraceError(f"{path}: found {len(timestamps)} data row(s); a trace needs at least two rows to define its interval")
    stamps = np.asarray(timestamps, dtype=float)
    steps = np.diff(stamps)
    interval = float(steps[0])
    irregular = np.flatnonzero(np.abs(steps - interval) > 1e-6)
    if irregular.size:
        index = int(irregular[0])
        # +2: one for the header line, one because diff index i compares rows i and i+1.
        line = index + 3
        raise TraceError(
            f"{path}:{line}: interval is {steps[index]:g} s where the file's interval is {interval:g} s "
            f"(a gap or an irregular step); fill missing intervals with explicit rows, 0 if nothing arrived"
        )
    return Trace(path.stem, str(path), stamps, np.asarray(counts, dtype=float), interval)
