"""End to end through the real SDK: instrument_system -> InMemoryMetricReader."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import SystemMonitor, instrument_system
from sysgauge.metrics import ALL_SPECS, SPECS_BY_NAME
from sysgauge.monitor import SCHEMA_URL
from sysgauge.options import resolve_options
from sysgauge.sources.base import Source
from sysgauge.sources.cpu import CpuSource
from sysgauge.sources.memory import MemorySource
from sysgauge.sources.process import ProcessSource
from tests.conftest import metric_names, points, value
from tests.fakes import FakePsutil, VirtualMemory, fake_children


def sampler_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "sysgauge-sampler")


def test_first_collect_has_data_with_declared_names_units_and_scope(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    monitor = instrument_system(provider, sampling_interval=0.5)
    try:
        data = reader.get_metrics_data()
        assert data is not None
        names = metric_names(data)
        assert {
            "system.cpu.time",
            "system.memory.usage",
            "process.memory.usage",
            "process.cpu.time",
            "system.filesystem.usage",
            "sysgauge.peak.process.memory.usage",
        } <= names
        declared = {spec.name: spec for spec in monitor.specs}
        scope_metrics = data.resource_metrics[0].scope_metrics
        assert len(scope_metrics) == 1
        scope = scope_metrics[0].scope
        assert (scope.name, scope.schema_url) == ("sysgauge", SCHEMA_URL)
        for metric in scope_metrics[0].metrics:
            assert metric.unit == declared[metric.name].unit
            for point in metric.data.data_points:
                assert set(point.attributes or {}) <= set(declared[metric.name].attributes)
        assert value(data, "process.memory.usage") > 1_000_000
        assert value(data, "sysgauge.process.count") >= 1
    finally:
        monitor.shutdown()


def fake_monitor(provider: MeterProvider, ps: FakePsutil, **options: object) -> SystemMonitor:
    sources: list[Source] = [
        CpuSource(ps),
        MemorySource(ps),
        ProcessSource(ps, pid=4242, children_of=fake_children(ps)),
    ]
    for source in sources:
        assert source.probe() is None
    return SystemMonitor(provider, sources, resolve_options(options, environ={}))


def test_collect_does_no_io(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    ps = FakePsutil()
    monitor = fake_monitor(provider, ps, sampling_interval=60, window=120)
    try:
        calls = ps.calls
        for _ in range(5):
            data = reader.get_metrics_data()
        assert ps.calls == calls
        assert value(data, "system.memory.usage", **{"system.memory.state": "used"}) == 4 * 2**30
    finally:
        monitor.shutdown()


def test_several_providers_each_get_their_own_handle() -> None:
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r], shutdown_on_exit=False) for r in readers]
    monitors = [instrument_system(p, sources=["memory"]) for p in providers]
    try:
        assert monitors[0] is not monitors[1]
        for r in readers:
            assert "system.memory.usage" in metric_names(r.get_metrics_data())
        monitors[0].shutdown()
        assert "system.memory.usage" not in metric_names(readers[0].get_metrics_data())
        assert "system.memory.usage" in metric_names(readers[1].get_metrics_data())
    finally:
        for monitor in monitors:
            monitor.shutdown()
        for p in providers:
            p.shutdown()


def test_sources_option_registers_only_those(provider: MeterProvider, reader: InMemoryMetricReader) -> None:
    with instrument_system(provider, sources="cpu", per_cpu=False) as monitor:
        names = metric_names(reader.get_metrics_data())
        assert names == {spec.name for spec in monitor.specs if spec.name in names}
        assert all(SPECS_BY_NAME[n].source == "cpu" for n in names)
        # per_cpu off: one series per mode
        assert all(
            "cpu.logical_number" not in a for _, a in points(reader.get_metrics_data(), "system.cpu.time")
        )


def test_missing_pid_is_a_clear_error_at_start(provider: MeterProvider) -> None:
    with pytest.raises(ValueError, match=r"pid=4194300: no such process"):
        instrument_system(provider, pid=4194300)


def test_unknown_option_raises_value_error(provider: MeterProvider) -> None:
    with pytest.raises(ValueError, match="unknown option 'interval'"):
        instrument_system(provider, interval=1)


def test_a_failing_source_never_breaks_collection(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    ps = FakePsutil()
    monitor = fake_monitor(provider, ps, sampling_interval=0.05, window=0.5)
    try:

        def broken() -> VirtualMemory:
            raise OSError("meminfo vanished")

        ps.virtual_memory = broken  # type: ignore[method-assign]
        monitor.sampler.tick()
        data = reader.get_metrics_data()
        assert "system.cpu.time" in metric_names(data)
        assert "process.memory.usage" in metric_names(data)
    finally:
        monitor.shutdown()


def test_shutdown_is_idempotent_silences_instruments_and_leaves_no_thread(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    before = sampler_threads()
    monitor = instrument_system(provider, sources=["memory"])
    assert sampler_threads() == before + 1
    monitor.shutdown()
    monitor.shutdown()
    assert sampler_threads() == before
    assert not metric_names(reader.get_metrics_data())


@pytest.mark.parametrize("provider_first", [True, False])
def test_provider_shutdown_in_either_order(provider_first: bool) -> None:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    monitor = instrument_system(mp, sources=["memory"])
    if provider_first:
        mp.shutdown()
        monitor.shutdown()
    else:
        monitor.shutdown()
        mp.shutdown()
    assert not monitor.sampler.running


def test_sdk_disabled_means_no_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    mp = MeterProvider(shutdown_on_exit=False)
    before = sampler_threads()
    monitor = instrument_system(mp)
    assert not monitor.enabled
    assert sampler_threads() == before
    monitor.shutdown()


def test_environment_configures_and_keywords_win(
    provider: MeterProvider, reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSGAUGE_SOURCES", "memory")
    monkeypatch.setenv("SYSGAUGE_WINDOW", "12")
    with instrument_system(provider, window=8) as monitor:
        assert monitor.options.window == 8.0
        assert {s.name for s in monitor.sources} == {"memory"}


def test_every_declared_metric_is_unique_per_source_and_alike_across_sources() -> None:
    keys = [(spec.name, spec.source) for spec in ALL_SPECS]
    assert len(keys) == len(set(keys))
    for spec in ALL_SPECS:
        first = SPECS_BY_NAME[spec.name]
        assert (spec.kind, spec.unit, spec.attributes, spec.aggregation) == (
            first.kind,
            first.unit,
            first.attributes,
            first.aggregation,
        ), spec.name


def test_global_provider_is_used_when_none_is_given() -> None:
    monitor = instrument_system(None, sources=["memory"])
    try:
        assert monitor.enabled  # the API's proxy provider binds to whatever SDK is set later
    finally:
        monitor.shutdown()


def test_when_the_monitored_process_exits_process_metrics_stop_and_host_metrics_go_on(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    monitor = instrument_system(
        provider, pid=child.pid, sources=["memory", "process"], sampling_interval=0.05, window=0.2
    )
    try:
        assert "process.memory.usage" in metric_names(reader.get_metrics_data())
        child.kill()
        child.wait()
        monitor.sampler.tick()
        time.sleep(0.3)  # the window moves past the last sample of the process
        monitor.sampler.tick()
        names = metric_names(reader.get_metrics_data())
        assert "system.memory.usage" in names
        assert not any(name.startswith("process.") for name in names)
    finally:
        monitor.shutdown()


def test_instrumenting_the_same_provider_again_after_a_shutdown_reports(
    provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    # The SDK keeps the first callback of a name on a meter: the second handle must still be heard.
    first = instrument_system(provider, sources=["memory"])
    first.shutdown()
    assert "system.memory.usage" not in metric_names(reader.get_metrics_data())
    second = instrument_system(provider, sources=["memory", "cpu"])
    try:
        names = metric_names(reader.get_metrics_data())
        assert {"system.memory.usage", "system.cpu.time"} <= names
    finally:
        second.shutdown()
