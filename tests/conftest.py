from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from tests.nvml_fake.scenario import CompilerMissing, FakeNvml, build
from tests.otelcol import collector, otelcol  # noqa: F401 - fixtures shared by several test files
from tests.parts import missing


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


@pytest.fixture(scope="session")
def fake_nvml_library(tmp_path_factory: pytest.TempPathFactory) -> FakeNvml:
    """The fake libnvidia-ml.so.1, built with gcc and loaded into this process once."""
    try:
        library = build("current")
    except CompilerMissing as exc:
        missing(f"{exc} (Debian package gcc; ./scripts/test installs it)")
    return FakeNvml(library, tmp_path_factory.mktemp("nvml"))


@pytest.fixture
def use_scenario(
    fake_nvml_library: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, Any]], FakeNvml]]:
    """use_scenario(dict) points the fake at that scenario (read at the next nvmlInit)."""

    def use(scenario: dict[str, Any]) -> FakeNvml:
        monkeypatch.setenv("FAKE_NVML_SCENARIO", str(fake_nvml_library.write(scenario)))
        fake_nvml_library.reset_counts()
        return fake_nvml_library

    yield use
    from sysgauge.sources import _nvml

    # Every test must shut down what it started, or the next scenario would never be read.
    assert _nvml._init_users == 0, "NVML left initialized: a monitor or source was not shut down"
