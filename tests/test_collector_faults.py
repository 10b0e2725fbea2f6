"""The Collector goes away and comes back: the instrumented program never blocks, its sampler keeps time,
memory stays bounded, and data flows again soon after the Collector returns."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
from pathlib import Path

import psutil
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge import instrument_system
from tests.otelcol import run_collector
from tests.parts import free_port

EXPORT_INTERVAL_S = 0.5
SAMPLING_S = 0.1


def arrivals(path: Path, service: str) -> int:
    """How many exports of `service` the Collector has written to its file."""
    if not path.exists():
        return 0
    count = 0
    for line in path.read_text().splitlines():
        for rm in json.loads(line).get("resourceMetrics", []) if line.strip() else []:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rm["resource"].get("attributes", [])}
            count += attrs.get("service.name") == service
    return count


def wait_for_new_data(path: Path, service: str, before: int, timeout: float) -> float:
    started = time.monotonic()
    while arrivals(path, service) <= before:
        assert time.monotonic() - started < timeout, f"no data within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_collector_absent_killed_and_restarted(otelcol: Path, tmp_path: Path) -> None:
    service = "faults"
    grpc_port, http_port, prometheus_port = free_port(), free_port(), free_port()
    exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/metrics", timeout=1)
    reader = PeriodicExportingMetricReader(
        exporter, export_interval_millis=EXPORT_INTERVAL_S * 1000, export_timeout_millis=1000
    )
    provider = MeterProvider(
        resource=Resource.create({"service.name": service}), metric_readers=[reader], shutdown_on_exit=False
    )
    monitor = instrument_system(
        provider, sources=["memory", "process"], sampling_interval=SAMPLING_S, window=0.5
    )

    # The "program": a loop that notes its longest stall while all of this goes on.
    stop = threading.Event()
    longest = [0.0]

    def program() -> None:
        last = time.monotonic()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.monotonic()
            longest[0] = max(longest[0], now - last)
            last = now

    worker = threading.Thread(target=program)
    worker.start()
    ticks: list[float] = []
    monitor.sampler.add_listener(lambda sample: ticks.append(sample.time))
    me = psutil.Process()
    latencies = []
    try:
        time.sleep(2.0)  # no Collector yet: exports fail, retry, give up
        rss_start = me.memory_info().rss
        with run_collector(otelcol, tmp_path, grpc_port, http_port, prometheus_port) as collector:
            latencies.append(wait_for_new_data(collector.output, service, 0, timeout=10))
            collector.process.send_signal(signal.SIGKILL)  # killed mid-run, no goodbye
            collector.process.wait()
            before = arrivals(collector.output, service)
            time.sleep(2.0)
        with run_collector(otelcol, tmp_path, grpc_port, http_port, prometheus_port) as collector:
            latencies.append(wait_for_new_data(collector.output, service, before, timeout=10))
            time.sleep(1.0)
        time.sleep(1.0)  # gone again, for good
        rss_end = me.memory_info().rss
    finally:
        stop.set()
        worker.join()
        provider.shutdown()
        monitor.shutdown()

    # Data flows again within two export intervals of the Collector listening (plus its 100 ms file flush and
    # the batch processor's 200 ms).
    assert max(latencies) < 2 * EXPORT_INTERVAL_S + 0.5, latencies
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 2 * SAMPLING_S, max(gaps)  # the sampler never waited for the exporter
    assert longest[0] < 0.25, longest[0]  # the program never blocked
    assert rss_end - rss_start < 20 * 2**20, (rss_start, rss_end)
