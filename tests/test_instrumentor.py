from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import sysgauge
from tests.conftest import metric_names


def test_entry_point_names_the_instrumentor() -> None:
    (entry,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "sysgauge"]
    assert entry.load() is sysgauge.SystemMetricsInstrumentor


def test_auto_instrumentation_default_is_the_process_tree_only(
    provider: MeterProvider, reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYSGAUGE_SOURCES", raising=False)
    instrumentor = sysgauge.SystemMetricsInstrumentor()
    instrumentor.instrument(meter_provider=provider)
    try:
        names = metric_names(reader.get_metrics_data())
        assert "process.memory.usage" in names
        assert not any(name.startswith("system.") for name in names)
    finally:
        instrumentor.uninstrument()
    assert not metric_names(reader.get_metrics_data())


def test_variables_opt_into_host_sources(
    provider: MeterProvider, reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYSGAUGE_SOURCES", "memory")
    instrumentor = sysgauge.SystemMetricsInstrumentor()
    instrumentor.instrument(meter_provider=provider)
    try:
        assert "system.memory.usage" in metric_names(reader.get_metrics_data())
    finally:
        instrumentor.uninstrument()


def test_importing_sysgauge_does_not_load_nvml_or_the_instrumentation_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sysgauge; print('pynvml' in sys.modules, 'opentelemetry.instrumentation' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_default_sources_on_a_machine_without_accelerators_load_no_vendor_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from sysgauge import instrument_system\n"
        "monitor = instrument_system(MeterProvider())\n"
        "vendor = ('grpc', 'google.protobuf', 'pynvml', 'amdsmi', 'urllib.request')\n"
        "print(sorted(m for m in vendor if m in sys.modules))\n"
        "monitor.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
