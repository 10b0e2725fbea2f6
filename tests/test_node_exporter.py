"""A real node_exporter on loopback, scraped through sysgauge, checked against what it serves itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from sysgauge import instrument_system
from tests.conftest import points
from tests.parts import missing

BINARIES = ("prometheus-node-exporter", "node_exporter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    binary = next((path for name in BINARIES if (path := shutil.which(name))), None)
    if binary is None:
        missing("node_exporter not installed (Debian prometheus-node-exporter; ./scripts/test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.meminfo",
            "--collector.cpu",
            "--collector.stat",
            "--collector.loadavg",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"node_exporter did not start: {err.decode(errors='replace')[-500:]}")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def served(url: str, family_name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return {tuple(sorted(s.labels.items())): s.value for s in family.samples}
    raise AssertionError(f"{family_name} not served")


def test_node_exporter_values_arrive_unchanged_and_counters_grow(node_exporter: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    monitor = instrument_system(
        provider,
        sources=["openmetrics"],
        openmetrics_endpoints={"node": node_exporter},
        # The text name of a counter (with _total) works in filters as well as the emitted name.
        openmetrics_filters=[
            "node\\.node_memory_MemTotal_bytes",
            "node\\.node_cpu_seconds_total",
            "node\\.node_boot_time_seconds",
        ],
        sampling_interval=0.2,
        window=0.6,
    )
    try:
        deadline = time.monotonic() + 10
        while not points(data := reader.get_metrics_data(), "node_cpu_seconds"):
            assert time.monotonic() < deadline, "no scrape arrived"
            time.sleep(0.1)
        ((mem_total, attrs),) = points(data, "node_memory_memtotal_bytes")
        assert attrs == {"sysgauge.endpoint": "node"}
        assert mem_total == served(node_exporter, "node_memory_MemTotal_bytes")[()]
        ((boot, _),) = points(data, "node_boot_time_seconds")
        assert boot == served(node_exporter, "node_boot_time_seconds")[()]
        first = {tuple(sorted(a.items())): v for v, a in points(data, "node_cpu_seconds")}
        time.sleep(1.5)
        later = {
            tuple(sorted(a.items())): v for v, a in points(reader.get_metrics_data(), "node_cpu_seconds")
        }
        assert set(first) == set(later)
        assert all(later[k] >= first[k] for k in first)
        assert sum(later.values()) > sum(first.values())
        # Between our scrape and node_exporter's own answer the CPU counters only move forward.
        direct = served(node_exporter, "node_cpu_seconds")
        for key, value in later.items():
            labels = tuple((k, str(v)) for k, v in key if k != "sysgauge.endpoint")
            assert direct[labels] >= value
    finally:
        monitor.shutdown()
        provider.shutdown()
    # Served (the loadavg collector is on) but not asked for by the filters.
    assert served(node_exporter, "node_load1")
    assert points(data, "node_load1") == []
