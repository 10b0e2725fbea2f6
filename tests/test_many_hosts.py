"""Many hosts through one agent-style Collector: 50 processes, each with its own host.name, export for a
minute; Prometheus ends with exactly 50 hosts and the Collector's file shows no host with a gap longer than
one export interval. The CPU used by the Collector and by the 50 processes is printed (-s) for the notes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.otelcol import run_collector
from tests.prometheus import prometheus

HOSTS = 50
EXPORT_S = 5.0
STEADY_S = 60.0
CHILD = """
import sys, time
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from sysgauge import instrument_system
url, host, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url), export_interval_millis=5000)
provider = MeterProvider(resource=Resource.create({"service.name": "fleet", "host.name": host}),
                         metric_readers=[reader])
monitor = instrument_system(provider, sources=["memory", "process"], sampling_interval=1.0, window=5.0)
print("ready", flush=True)
time.sleep(seconds)
provider.shutdown()
monitor.shutdown()
"""


def export_times(path: Path) -> dict[str, list[float]]:
    times: dict[str, set[float]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rm in json.loads(line)["resourceMetrics"]:
            attrs = {a["key"]: a["value"].get("stringValue") for a in rm["resource"].get("attributes", [])}
            host = attrs.get("host.name")
            if attrs.get("service.name") != "fleet" or not host:
                continue
            for sm in rm["scopeMetrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == "system.memory.limit":
                        for p in metric["sum"]["dataPoints"]:
                            times.setdefault(host, set()).add(int(p["timeUnixNano"]) / 1e9)
    return {host: sorted(ts) for host, ts in times.items()}


def test_fifty_hosts_through_one_collector(otelcol: Path, tmp_path: Path) -> None:
    with (
        run_collector(otelcol, tmp_path) as collector,
        prometheus(tmp_path, scrape=[f"127.0.0.1:{collector.prometheus_port}"]) as prom,
    ):
        url = f"http://127.0.0.1:{collector.http_port}/v1/metrics"
        children = []
        try:
            for i in range(HOSTS):
                child = subprocess.Popen(
                    [sys.executable, "-c", CHILD, url, f"host-{i:02d}", str(STEADY_S + 10)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                children.append(child)
            for child in children:
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            processes = [psutil.Process(c.pid) for c in children]
            otelcol_process = psutil.Process(collector.process.pid)

            def cpu(process: psutil.Process) -> float:
                times = process.cpu_times()
                return float(times.user + times.system)

            before_collector, before_fleet = cpu(otelcol_process), sum(cpu(p) for p in processes)
            started = time.time()
            time.sleep(STEADY_S)
            collector_cpu = cpu(otelcol_process) - before_collector
            fleet_cpu = sum(cpu(p) for p in processes) - before_fleet
            hosts = prom.wait_for('count(count by (host_name) (target_info{job="fleet"}))')
        finally:
            for child in children:
                child.wait(timeout=60)
        time.sleep(0.5)
        per_host = export_times(collector.output)

    assert int(float(hosts[0]["value"][1])) == HOSTS
    assert sorted(per_host) == [f"host-{i:02d}" for i in range(HOSTS)]
    for host, stamps in per_host.items():
        steady = [t for t in stamps if started <= t <= started + STEADY_S]
        gaps = [b - a for a, b in itertools.pairwise(steady)]
        assert len(steady) >= STEADY_S / EXPORT_S - 1, (host, len(steady))
        assert max(gaps) <= 2 * EXPORT_S, (host, max(gaps))
    print(
        f"\n{HOSTS} hosts for {STEADY_S:g} s: Collector CPU {collector_cpu / STEADY_S:.1%} of one core; "
        f"the {HOSTS} processes together {fleet_cpu / STEADY_S:.1%} of one core "
        f"({fleet_cpu / STEADY_S / HOSTS:.2%} each)"
    )
