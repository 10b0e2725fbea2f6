"""TPU, IPU and Apple from recorded real outputs all the way to OTel data points, through SystemMonitor and
the SDK (their own tests check the readings; this checks what an exporter would receive)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from sysgauge import SystemMonitor
from sysgauge.options import resolve_options
from sysgauge.sources._tools import Tool
from sysgauge.sources.apple import AppleSource
from sysgauge.sources.base import Source
from sysgauge.sources.ipu import IpuSource
from tests.conftest import points
from tests.fake_modules import gcipuinfo as fake_gcipuinfo
from tests.sources.test_tpu import recorded_answer, serve, source_for  # noqa: F401 - serve is a fixture
from tests.vendor_tools import FIXTURES, fake_tool

GiB = 2**30


@pytest.fixture
def monitored() -> Iterator[Callable[[Source], MetricsData]]:
    monitors: list[tuple[SystemMonitor, MeterProvider]] = []

    def run(source: Source) -> MetricsData:
        assert source.probe() is None
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        monitor = SystemMonitor(
            provider, [source], resolve_options({"sampling_interval": 0.1, "window": 1}, environ={})
        )
        monitors.append((monitor, provider))
        deadline = time.monotonic() + 10
        while True:
            monitor.sampler.tick()
            data = reader.get_metrics_data()
            if data is not None and data.resource_metrics:
                return data
            assert time.monotonic() < deadline, "no data points"
            time.sleep(0.1)

    yield run
    for monitor, provider in monitors:
        monitor.shutdown()
        provider.shutdown()


def test_tpu_data_points(
    serve: Callable[[Any], Any],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monitored: Callable[[Source], MetricsData],
) -> None:
    data = monitored(source_for(serve(recorded_answer()), tmp_path, accelerator_type="v6e"))
    usage = {a["sysgauge.tpu.device_id"]: v for v, a in points(data, "sysgauge.tpu.hbm.usage")}
    assert usage[0] == pytest.approx(18.45 * GiB, rel=0.01)  # the v6e sample's chip 0: 18.45 GiB of 31.25
    limit = {a["sysgauge.tpu.device_id"]: v for v, a in points(data, "sysgauge.tpu.hbm.limit")}
    assert limit[0] == pytest.approx(31.25 * GiB, rel=0.01)
    duty = [v for v, _ in points(data, "sysgauge.tpu.duty_cycle")]
    assert len(duty) == 4 and all(v == pytest.approx(1.0) for v in duty)


def test_ipu_data_points(monitored: Callable[[Source], MetricsData]) -> None:
    module = fake_gcipuinfo.with_devices(fake_gcipuinfo.RECORDED)
    data = monitored(IpuSource(module=module, tool=Tool("gc-info", None), pid=None))
    temperatures = points(data, "sysgauge.ipu.temperature")
    assert temperatures and {a["sysgauge.ipu.sensor"] for _, a in temperatures} <= {"board", "die"}
    assert points(data, "sysgauge.ipu.clock.frequency")


def test_apple_data_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitored: Callable[[Source], MetricsData]
) -> None:
    tool = fake_tool(
        tmp_path, monkeypatch, "apple_gpu_stats", FIXTURES / "apple" / "apple-gpu-stats_m1max.json"
    )
    data = monitored(AppleSource(tool, interval=0.1, system="darwin", machine="arm64"))
    ((utilization, attrs),) = points(data, "hw.gpu.utilization")
    assert utilization == pytest.approx(0.29) and attrs["hw.vendor"] == "apple"
    ((system_power, _),) = points(data, "hw.host.power")
    assert system_power == pytest.approx(19.5678, rel=1e-4)
