from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield mp
    mp.shutdown()


Point = tuple[float, dict[str, object]]


def points(data: MetricsData | None, name: str) -> list[Point]:
    """Every (value, attributes) of metric `name` in one collection."""
    out: list[Point] = []
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out.append((float(p.value), dict(p.attributes or {})))  # type: ignore[union-attr]
    return out


def value(data: MetricsData | None, name: str, **attrs: object) -> float:
    """The one value of `name` whose attributes include `attrs`."""
    matching = [v for v, a in points(data, name) if all(a.get(k) == want for k, want in attrs.items())]
    assert len(matching) == 1, (
        f"{name} {attrs}: expected one point, got {matching} among {points(data, name)}"
    )
    return matching[0]


def metric_names(data: MetricsData | None) -> set[str]:
    names: set[str] = set()
    if data is None:
        return names
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            names.update(m.name for m in sm.metrics)
    return names
