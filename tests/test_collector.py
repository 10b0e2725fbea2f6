"""sysgauge -> a real OpenTelemetry Collector (built from collector-config/builder-config.yaml) -> files.

The Collector is built once per machine by scripts/build-otelcol (a few minutes cold, cached by the
manifest's sha256 afterwards). Without Go the Collector tests skip, naming what is missing; under CI=true
they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge import instrument_system
from tests.otelcol import Collector

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "collector-config"
BUILDER_CONFIG = CONFIG_DIR / "builder-config.yaml"
RUN_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.yaml") if p.name != BUILDER_CONFIG.name)

# Dummy values for every ${env:...} the run configs read: `validate` checks them, it connects to nothing.
DUMMY_ENV = {
    "OTELCOL_GATEWAY_ENDPOINT": "otel-gateway.invalid:4317",
    "OTELCOL_GATEWAY_TLS_CERT": "/etc/otelcol/tls/gateway.crt",
    "OTELCOL_GATEWAY_TLS_KEY": "/etc/otelcol/tls/gateway.key",
    "PROMETHEUS_REMOTE_WRITE_URL": "https://prometheus.invalid/api/v1/write",
    "HONEYCOMB_API_KEY": "dummy-api-key",
    "HONEYCOMB_DATASET": "sysgauge-test",
}


def validate(binary: Path, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_builder_config_keeps_every_collector_module_at_one_release() -> None:
    text = BUILDER_CONFIG.read_text()
    modules = dict(re.findall(r"^\s*-?\s*gomod:\s*(\S+)\s+(v\S+)\s*$", text, flags=re.MULTILINE))
    core_v0 = {
        v
        for mod, v in modules.items()
        if mod.startswith("go.opentelemetry.io/collector/") and v.startswith("v0.")
    }
    core_v1 = {
        v
        for mod, v in modules.items()
        if mod.startswith("go.opentelemetry.io/collector/") and v.startswith("v1.")
    }
    contrib = {v for mod, v in modules.items() if "opentelemetry-collector-contrib/" in mod}
    assert len(core_v0) == 1 and len(core_v1) == 1, modules
    assert contrib == core_v0, modules
    for component in (
        "otlpreceiver",
        "hostmetricsreceiver",
        "batchprocessor",
        "memorylimiterprocessor",
        "resourcedetectionprocessor",
        "debugexporter",
        "fileexporter",
        "otlpexporter",
        "otlphttpexporter",
        "prometheusexporter",
        "prometheusremotewriteexporter",
    ):
        assert any(mod.endswith("/" + component) for mod in modules), f"{component} is not built"


def test_run_configs_are_found() -> None:
    assert {"local.yaml", "agent.yaml", "gateway.yaml"} <= set(RUN_CONFIGS)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_config_passes_collector_validate(otelcol: Path, name: str, tmp_path: Path) -> None:
    env = {**os.environ, **DUMMY_ENV, "OTELCOL_METRICS_FILE": str(tmp_path / "metrics.jsonl")}
    done = validate(otelcol, CONFIG_DIR / name, env)
    assert done.returncode == 0, f"{name} does not validate:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("name", ["agent.yaml", "gateway.yaml"])
def test_remote_configs_take_endpoints_and_secrets_from_the_environment(otelcol: Path, name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}
    done = validate(otelcol, CONFIG_DIR / name, env)
    assert done.returncode != 0, f"{name} validated without its environment variables"


# --- end to end: sysgauge -> OTLP -> Collector (local.yaml) -> file exporter ---------------------------


@dataclass(frozen=True)
class Exported:
    """One data point as the Collector's file exporter wrote it (OTLP JSON)."""

    resource: dict[str, object]
    scope: str
    name: str
    unit: str
    value: float
    attributes: dict[str, object]


def any_value(value: dict[str, Any]) -> object:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])  # int64 travels as a JSON string
    return value


def attributes(items: list[dict[str, Any]] | None) -> dict[str, object]:
    return {item["key"]: any_value(item.get("value", {})) for item in items or []}


def exported(path: Path) -> list[Exported]:
    """Every data point in the file, in the order the Collector wrote them."""
    out: list[Exported] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rm in json.loads(line).get("resourceMetrics", []):
            resource = attributes(rm.get("resource", {}).get("attributes"))
            for sm in rm.get("scopeMetrics", []):
                scope = sm.get("scope", {}).get("name", "")
                for metric in sm.get("metrics", []):
                    for kind in ("gauge", "sum"):
                        for p in metric.get(kind, {}).get("dataPoints", []):
                            number = p["asDouble"] if "asDouble" in p else int(p.get("asInt", 0))
                            out.append(
                                Exported(
                                    resource,
                                    scope,
                                    metric["name"],
                                    metric.get("unit", ""),
                                    float(number),
                                    attributes(p.get("attributes")),
                                )
                            )
    return out


def tree_rss() -> float:
    """psutil's resident memory of this process and all its descendants (the Collector among them)."""
    me = psutil.Process()
    total = float(me.memory_info().rss)
    for child in me.children(recursive=True):
        try:
            total += float(child.memory_info().rss)
        except psutil.Error:
            pass
    return total


def otlp_exporter(protocol: str, running: Collector) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(endpoint=f"127.0.0.1:{running.grpc_port}", insecure=True, timeout=5)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(endpoint=f"http://127.0.0.1:{running.http_port}/v1/metrics", timeout=5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sysgauge_metrics_arrive_through_the_collector(collector: Collector, protocol: str) -> None:
    service = f"sysgauge-collector-test-{protocol}"
    reader = PeriodicExportingMetricReader(otlp_exporter(protocol, collector), export_interval_millis=1000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": service}), metric_readers=[reader], shutdown_on_exit=False
    )
    monitor = instrument_system(provider, sources=["memory", "process"], sampling_interval=0.2, window=1)
    try:
        time.sleep(1.3)
        rss = tree_rss()
        total = float(psutil.virtual_memory().total)
        available = float(psutil.virtual_memory().available)
    finally:
        provider.shutdown()  # the last export goes out here
        monitor.shutdown()

    wanted = {"system.memory.usage", "process.memory.usage"}
    deadline = time.monotonic() + 15
    while True:
        ours = [p for p in exported(collector.output) if p.resource.get("service.name") == service]
        if wanted <= {p.name for p in ours}:
            break
        assert time.monotonic() < deadline, (
            f"{sorted(wanted)} not in {collector.output} after 15 s; got {sorted({p.name for p in ours})}\n"
            f"Collector log:\n{collector.log_tail()}"
        )
        time.sleep(0.1)

    def last(name: str, **attrs: object) -> Exported:
        matching = [
            p for p in ours if p.name == name and all(p.attributes.get(k) == v for k, v in attrs.items())
        ]
        assert matching, f"no {name} {attrs} among {[(p.name, p.attributes) for p in ours]}"
        return matching[-1]

    assert {p.scope for p in ours} == {"sysgauge"}
    assert {p.unit for p in ours if p.name in wanted} == {"By"}
    states = {p.attributes.get("system.memory.state") for p in ours if p.name == "system.memory.usage"}
    assert {"used", "free"} <= states, states

    # Plausible versus psutil. The process tree is this test process plus its children (the Collector).
    process_rss = last("process.memory.usage").value
    assert process_rss == pytest.approx(rss, rel=0.2), (process_rss, rss)
    used = last("system.memory.usage", **{"system.memory.state": "used"}).value
    limit = last("system.memory.limit").value
    assert 0 < used <= limit <= total * 1.001, (used, limit, total)
    if limit == total:  # not under a cgroup memory limit: used = total - available
        assert used == pytest.approx(total - available, rel=0.2, abs=256 * 2**20), (used, total - available)

    # The same data is served to Prometheus by local.yaml's pull exporter.
    url = f"http://127.0.0.1:{collector.prometheus_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        scraped = response.read().decode()
    assert re.search(r'^system_memory_usage_bytes\{[^}]*system_memory_state="used"', scraped, re.MULTILINE), (
        scraped[:2000]
    )
