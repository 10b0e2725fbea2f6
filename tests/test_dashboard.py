"""Every query of examples/grafana-dashboard.json, run against a real Prometheus fed by sysgauge through the
real Collector (local.yaml), returns data: host sources from this machine, GPUs from the fake NVML driver."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge import instrument_system
from tests.nvml_fake.scenario import FakeNvml, load
from tests.otelcol import Collector
from tests.prometheus import prometheus

DASHBOARD = Path(__file__).resolve().parents[1] / "examples" / "grafana-dashboard.json"
JOB = "dashboard-test"
# What Grafana would put in for the dashboard's variables and its built-in ones.
VARIABLES = {"$job": JOB, "$instance": ".+", "$host": ".+", "$__rate_interval": "10s", "$__range": "1m"}


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def substituted(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    return expr


def test_every_dashboard_query_returns_data(
    collector: Collector, tmp_path: Path, use_scenario: Callable[[dict[str, Any]], FakeNvml]
) -> None:
    scenario = load("h100x8", root=os.getpid(), child=os.getpid(), other=1)
    scenario["devices"] = scenario["devices"][:2]
    use_scenario(scenario)
    with prometheus(tmp_path, scrape=[f"127.0.0.1:{collector.prometheus_port}"]) as prom:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/metrics"),
            export_interval_millis=1000,
        )
        provider = MeterProvider(
            resource=Resource.create({"service.name": JOB, "host.name": "dash-host"}),
            metric_readers=[reader],
            shutdown_on_exit=False,
        )
        monitor = instrument_system(provider, sampling_interval=0.25, window=1.0)
        try:
            prom.wait_for(f'system_memory_usage_bytes{{job="{JOB}"}}')
            time.sleep(12)  # rate() over 10 s needs two scrapes of a moving counter
            empty = [(title, expr) for title, expr in expressions() if not prom.query(substituted(expr))]
            variables = {
                "job": prom.query("count by (job) (target_info)"),
                "host": prom.query(f'count by (host_name) (target_info{{job="{JOB}"}})'),
            }
        finally:
            provider.shutdown()
            monitor.shutdown()
    assert len(expressions()) >= 20
    assert empty == [], f"queries without data: {empty}"
    assert any(r["metric"].get("job") == JOB for r in variables["job"])
    assert [r["metric"]["host_name"] for r in variables["host"]] == ["dash-host"]
