"""The examples in examples/ run as their READMEs say.

The OTel setup example exports to a local HTTP server standing in for a Collector; the training loop runs
under `sysgauge run` and its recording is charted; the Grafana dashboard is checked statically (each panel
has a query, and every metric and label it names is one the Collector's prometheus exporter produces from
sysgauge's declarations); the compose file is parsed (Docker is not run here).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sysgauge.metrics import ALL_SPECS, SPECS_BY_NAME, InstrumentKind, MetricSpec
from tests.httpfake import serve
from tests.parts import missing

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DASHBOARD = EXAMPLES / "grafana-dashboard.json"
SYSGAUGE = [sys.executable, "-m", "sysgauge"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYSGAUGE_"))}
    env.update(extra)
    return env


# --- examples/otel-setup ---------------------------------------------------------------------------


def decode(headers: dict[str, str], body: bytes) -> ExportMetricsServiceRequest:
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    return request


def sysgauge_metrics(request: ExportMetricsServiceRequest) -> dict[str, int]:
    """Metric name -> number of data points, for the `sysgauge` scope."""
    found: dict[str, int] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != "sysgauge":
                continue
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                points = len(getattr(metric, kind).data_points) if kind else 0
                found[metric.name] = found.get(metric.name, 0) + points
    return found


def test_otel_setup_app_exports_sysgauge_metrics_over_otlp_http() -> None:
    with serve() as server:
        endpoint = server.url.removesuffix("/metrics")
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "otel-setup" / "app.py"), "--seconds", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(
                OTEL_METRIC_EXPORT_INTERVAL="500",
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                OTEL_SERVICE_NAME="otel-setup-example",
            ),
            check=False,
        )
        posts = list(server.posts)
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(posts) >= 2, f"expected several exports at 0.5 s over 2 s, got {len(posts)}"
    assert {path for path, _, _ in posts} == {"/v1/metrics"}
    requests = [decode(headers, body) for _, headers, body in posts]
    names: set[str] = set()
    for request in requests:
        names.update(sysgauge_metrics(request))
    for expected in (
        "system.cpu.utilization",
        "system.memory.usage",
        "process.cpu.utilization",
        "process.memory.usage",
        "sysgauge.peak.process.memory.usage",
    ):
        assert expected in names, sorted(names)
    resource = {kv.key: kv.value.string_value for kv in requests[0].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "otel-setup-example"
    assert resource["host.name"]


def test_otel_setup_app_exports_once_more_on_shutdown() -> None:
    """With a 60 s interval and 0.5 s of work the only export is the provider's final one at shutdown; it
    carries sysgauge's data only because the provider shuts down before the monitor."""
    with serve() as server:
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "otel-setup" / "app.py"), "--seconds", "0.5"],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(
                OTEL_METRIC_EXPORT_INTERVAL="60000",
                OTEL_EXPORTER_OTLP_ENDPOINT=server.url.removesuffix("/metrics"),
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            ),
            check=False,
        )
        posts = list(server.posts)
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(posts) == 1, f"expected only the final export, got {len(posts)}"
    final = sysgauge_metrics(decode(posts[0][1], posts[0][2]))
    assert final.get("process.memory.usage", 0) >= 1, final


# --- examples/training-loop ------------------------------------------------------------------------


def test_training_loop_runs_under_sysgauge_run_and_its_recording_plots(tmp_path: Path) -> None:
    recording = tmp_path / "run.jsonl"
    checkpoints = tmp_path / "checkpoints"
    result = subprocess.run(
        [
            *SYSGAUGE,
            "run",
            "--interval",
            "0.2",
            "--window",
            "0.5",
            "--jsonl",
            str(recording),
            "--",
            sys.executable,
            str(EXAMPLES / "training-loop" / "train.py"),
            "--epochs",
            "2",
            "--seconds-per-epoch",
            "1",
            "--checkpoint-dir",
            str(checkpoints),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "epoch 2/2" in result.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-001.ckpt", "epoch-002.ckpt"]
    assert len(recording.read_text().splitlines()) >= 2

    if importlib.util.find_spec("matplotlib") is None:
        missing("matplotlib is missing: `sysgauge plot` needs it (pip install 'sysgauge[plot]')")
    chart = tmp_path / "run.png"
    plotted = subprocess.run(
        [*SYSGAUGE, "plot", str(recording), "-o", str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert plotted.returncode == 0, plotted.stderr[-4000:]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- examples/grafana-dashboard.json ---------------------------------------------------------------

# The units the Collector's prometheus exporter (github.com/prometheus/otlptranslator v1.0.0, collector
# v0.161.0) spells out for the units sysgauge uses; "{thing}" annotations are dropped.
PROMETHEUS_UNITS = {
    "s": "seconds",
    "By": "bytes",
    "J": "joules",
    "W": "watts",
    "Cel": "celsius",
    "Hz": "hertz",
}


def prometheus_name(spec: MetricSpec) -> str:
    """The exporter's name for a metric: dots to underscores, a unit word, `_total` for monotonic counters,
    `_ratio` for gauges of unit 1 (updowncounters of unit 1 get neither)."""
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]+", spec.name) if t]
    unit = "" if spec.unit == "1" or spec.unit.startswith("{") else PROMETHEUS_UNITS[spec.unit]
    if unit and unit not in tokens:
        tokens.append(unit)
    if spec.kind is InstrumentKind.COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if spec.unit == "1" and spec.kind is InstrumentKind.GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    return "_".join(tokens)


def exposed_series() -> dict[str, set[str]]:
    """Prometheus metric name -> its label names, for every sysgauge metric and peak."""
    specs = [*ALL_SPECS, *(spec.peak() for spec in ALL_SPECS if spec.can_peak)]
    series = {
        prometheus_name(spec): {"job", "instance", *(a.replace(".", "_") for a in spec.attributes)}
        for spec in specs
    }
    series["target_info"] = {"job", "instance", "host_name"}  # resource attributes (host.name) live here
    return series


@pytest.mark.parametrize(
    ("name", "exposed"),
    [  # as scraped from the Collector's /metrics page (examples/README.md)
        ("system.cpu.time", "system_cpu_time_seconds_total"),
        ("system.cpu.utilization", "system_cpu_utilization_ratio"),
        ("system.cpu.logical.count", "system_cpu_logical_count"),
        ("system.disk.operations", "system_disk_operations_total"),
        ("process.unix.file_descriptor.count", "process_unix_file_descriptor_count"),
        ("hw.energy", "hw_energy_joules_total"),
        ("hw.temperature", "hw_temperature_celsius"),
        ("hw.status", "hw_status"),
        ("sysgauge.gpu.clock.frequency", "sysgauge_gpu_clock_frequency_hertz"),
        ("sysgauge.process.gpu.in_use", "sysgauge_process_gpu_in_use_ratio"),
    ],
)
def test_prometheus_name_follows_the_exporter(name: str, exposed: str) -> None:
    spec = SPECS_BY_NAME[name]  # several sources may declare one name (NVIDIA, AMD, Apple GPUs)
    assert prometheus_name(spec) == exposed


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in panels if p["type"] != "row"]


def test_grafana_dashboard_has_a_query_in_every_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    panels = dashboard_panels()
    assert len(panels) >= 14
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert any(exprs), f"panel {panel['title']!r} has no query"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "host_name" in variables["host"]["query"]


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def test_grafana_dashboard_names_only_series_the_collector_exposes() -> None:
    series = exposed_series()
    every_label = set().union(*series.values())
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        (p["title"], t["expr"], t.get("legendFormat", "")) for p in dashboard_panels() for t in p["targets"]
    ]
    queries += [(f"variable {v['name']}", v["query"], "") for v in dashboard["templating"]["list"]]
    for where, expr, legend in queries:
        if not isinstance(expr, str) or "{" not in expr:
            continue  # the datasource variable
        selectors = SELECTOR.findall(expr)
        assert selectors, f"{where}: no metric selector in {expr!r}"
        for name, matchers in selectors:
            assert name in series, f"{where}: {name} is not a name the Collector exposes"
            for label in MATCHER_LABEL.findall(matchers):
                assert label in series[name], f"{where}: {name} has no label {label}"
        grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
        for label in grouped | set(LEGEND_LABEL.findall(legend)):
            assert label in every_label, f"{where}: no sysgauge series has the label {label}"


# --- examples/docker-compose.yaml ------------------------------------------------------------------


def test_docker_compose_and_its_configs_parse() -> None:
    yaml: Any = importlib.import_module("yaml")  # a test dependency (pyyaml), untyped
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yaml").read_text())
    assert set(compose["services"]) == {"otelcol", "prometheus", "grafana"}
    release = re.search(
        r"opentelemetry-collector-contrib/\S+\s+v(\d+\.\d+\.\d+)",
        (REPO / "collector-config" / "builder-config.yaml").read_text(),
    )
    assert release is not None
    image = compose["services"]["otelcol"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{release.group(1)}"
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (EXAMPLES / source).exists(), f"{name}: {source} does not exist"
    prometheus = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["honor_labels"] is True
    port = yaml.safe_load((EXAMPLES / "collector-docker.yaml").read_text())["exporters"]["prometheus"][
        "endpoint"
    ].rsplit(":", 1)[1]
    assert job["static_configs"][0]["targets"] == [f"otelcol:{port}"]
    for provisioning in (EXAMPLES / "grafana" / "provisioning").rglob("*.yaml"):
        assert yaml.safe_load(provisioning.read_text())["apiVersion"] == 1


def test_collector_config_of_the_compose_file_validates(otelcol: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(otelcol),
            "validate",
            f"--config={REPO / 'collector-config' / 'local.yaml'}",
            f"--config={EXAMPLES / 'collector-docker.yaml'}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTELCOL_METRICS_FILE": str(tmp_path / "metrics.jsonl")},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_traced_training_example_annotates_each_epoch() -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "traced-training" / "train.py"),
            "--epochs",
            "2",
            "--seconds-per-epoch",
            "0.6",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    decoder = json.JSONDecoder()
    spans, text, index = [], run.stdout, 0
    while text[index:].strip():
        rest = text[index:].lstrip()
        span, consumed = decoder.raw_decode(rest)
        spans.append(span)
        index = len(text) - len(rest) + consumed
    epochs = [s for s in spans if s["name"].startswith("epoch ")]
    assert len(epochs) == 2
    for span in epochs:
        assert span["attributes"]["sysgauge.process.cpu.time"] > 0.3
        # The epoch's pure-Python work holds the GIL, so few or no sampler ticks may land inside it
        # (docs/spans.md); the counter delta is there regardless.
        assert isinstance(span["attributes"]["sysgauge.span.samples"], int)
