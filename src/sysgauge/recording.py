"""Reading recorded runs: OTLP-JSON lines as sysgauge's --jsonl and the Collector's file exporter write them.

Pure parsing into time series, so `sysgauge plot` and tests share it. A file may hold many exports (one JSON
document per line), and several files (rotated, or concatenated) may be given together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DELTA = 1  # OTLP AggregationTemporality


class RecordingError(ValueError):
    """A recording that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Point:
    name: str
    unit: str
    attributes: tuple[tuple[str, str], ...]
    time: float  # seconds since the epoch
    value: float
    monotonic: bool  # a counter: plotted as a rate
    delta: bool  # delta temporality: the value is the increase since `start`
    start: float
    host: str


@dataclass
class Recording:
    points: list[Point] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    @property
    def start(self) -> float:
        return min(p.time for p in self.points)

    @property
    def end(self) -> float:
        return max(p.time for p in self.points)

    def named(self, name: str) -> list[Point]:
        return [p for p in self.points if p.name == name]


def read_recording(paths: Iterable[str | Path]) -> Recording:
    recording = Recording()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordingError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if (
                isinstance(document, dict)
                and "resourceMetrics" not in document
                and ("resourceSpans" in document or "resourceLogs" in document)
            ):
                continue  # a Collector file also holds the spans and logs it received
            try:
                recording.points.extend(_points(document, recording.hosts))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise RecordingError(
                    f"{path}:{number}: not OTLP-JSON metrics ({type(exc).__name__}: {exc})"
                ) from None
    if not recording.points:
        raise RecordingError("no metric data points in " + ", ".join(str(p) for p in paths))
    recording.points.sort(key=lambda p: p.time)
    return recording


def _points(document: dict[str, Any], hosts: set[str]) -> Iterator[Point]:
    if not isinstance(document, dict) or "resourceMetrics" not in document:
        raise ValueError("no resourceMetrics")
    for resource_metrics in document["resourceMetrics"]:
        resource = _attributes(resource_metrics.get("resource", {}).get("attributes", []))
        host = str(dict(resource).get("host.name", ""))
        hosts.add(host)
        for scope_metrics in resource_metrics.get("scopeMetrics", []):
            for metric in scope_metrics.get("metrics", []):
                name, unit = metric["name"], metric.get("unit", "")
                if "gauge" in metric:
                    data, monotonic, delta = metric["gauge"], False, False
                elif "sum" in metric:
                    data = metric["sum"]
                    monotonic = bool(data.get("isMonotonic", False))
                    delta = int(data.get("aggregationTemporality", 2)) == DELTA
                else:
                    continue  # histograms and summaries have no single value to draw
                for point in data.get("dataPoints", []):
                    value = point.get("asDouble", point.get("asInt"))
                    if value is None:
                        continue
                    yield Point(
                        name,
                        unit,
                        _attributes(point.get("attributes", [])),
                        int(point["timeUnixNano"]) / 1e9,
                        float(value),
                        monotonic,
                        delta,
                        int(point.get("startTimeUnixNano", 0)) / 1e9,
                        host,
                    )


def _attributes(items: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        value = item.get("value", {})
        scalar = next(iter(value.values()), "") if value else ""
        out.append((str(item["key"]), str(scalar)))
    return tuple(out)
