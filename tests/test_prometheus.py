"""sysgauge -> OTLP -> the real Collector -> a real Prometheus, by both paths the configs ship:
local.yaml's pull exporter scraped by Prometheus, and gateway.yaml's remote write (agents reach the gateway
over TLS)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge import instrument_system
from tests.otelcol import CONFIG_DIR, Collector, accepts, otlp_receivers
from tests.parts import free_port
from tests.prometheus import prometheus


def export_for(seconds: float, exporter: object, service: str, **options: object) -> None:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=500)  # type: ignore[arg-type]
    provider = MeterProvider(
        resource=Resource.create({"service.name": service, "host.name": f"{service}-host"}),
        metric_readers=[reader],
        shutdown_on_exit=False,
    )
    monitor = instrument_system(provider, sampling_interval=0.2, window=0.5, **options)
    try:
        time.sleep(seconds)
    finally:
        provider.shutdown()
        monitor.shutdown()


def test_local_pipeline_reaches_prometheus_by_scrape(collector: Collector, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    with prometheus(tmp_path, scrape=[f"127.0.0.1:{collector.prometheus_port}"]) as prom:
        exporter = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/metrics")
        export_for(3.0, exporter, "prom-scrape", sources=["cpu", "memory", "process"])
        used = prom.wait_for('system_memory_usage_bytes{system_memory_state="used"}')
        assert len(used) == 1
        total = psutil.virtual_memory().total
        assert 0 < float(used[0]["value"][1]) < total
        assert used[0]["metric"]["job"] == "prom-scrape"  # service.name became the job label
        assert prom.wait_for("process_memory_usage_bytes")
        cpus = prom.wait_for('system_cpu_utilization_ratio{cpu_mode="idle"}')
        assert len(cpus) == os.cpu_count()
        # Resource attributes other than service.* live in target_info.
        (info,) = prom.wait_for('target_info{job="prom-scrape"}')
        assert info["metric"]["host_name"] == "prom-scrape-host"


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_gateway_remote_writes_into_prometheus_and_accepts_tls_only(
    otelcol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    cert, key = self_signed(tmp_path)
    grpc_port, http_port = free_port(), free_port()
    with prometheus(tmp_path, remote_write=True) as prom:
        override = {
            "receivers": otlp_receivers(grpc_port, http_port),
            # Honeycomb is not reachable from here: the test pipeline leaves it out (lists are replaced).
            "service": {
                "pipelines": {"metrics": {"exporters": ["prometheus_remote_write", "file"]}},
                "telemetry": {"metrics": {"level": "none"}},
            },
        }
        (tmp_path / "override.yaml").write_text(json.dumps(override))
        env = {
            **os.environ,
            "OTELCOL_GATEWAY_TLS_CERT": str(cert),
            "OTELCOL_GATEWAY_TLS_KEY": str(key),
            "PROMETHEUS_REMOTE_WRITE_URL": f"{prom.url}/api/v1/write",
            "HONEYCOMB_API_KEY": "unused",
            "HONEYCOMB_DATASET": "unused",
            "OTELCOL_METRICS_FILE": str(tmp_path / "gateway.jsonl"),
        }
        log = tmp_path / "gateway.log"
        with log.open("wb") as log_file:
            gateway = subprocess.Popen(
                [
                    str(otelcol),
                    f"--config={CONFIG_DIR / 'gateway.yaml'}",
                    f"--config={tmp_path / 'override.yaml'}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            deadline = time.monotonic() + 20
            while not accepts(grpc_port):
                assert gateway.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            # The agent side speaks TLS and checks the gateway's certificate.
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(cert))
            exporter = OTLPMetricExporter(endpoint=f"https://127.0.0.1:{grpc_port}")
            export_for(3.0, exporter, "prom-remote-write", sources=["memory", "process"])
            used = prom.wait_for(
                'system_memory_usage_bytes{system_memory_state="used",job="prom-remote-write"}'
            )
            assert 0 < float(used[0]["value"][1]) < psutil.virtual_memory().total
            assert prom.wait_for('target_info{job="prom-remote-write",host_name="prom-remote-write-host"}')
            # A plaintext client is refused: the gateway accepts only TLS.
            plain = OTLPMetricExporter(endpoint=f"http://127.0.0.1:{grpc_port}", insecure=True, timeout=2)
            export_for(1.0, plain, "plaintext", sources=["memory"])
            time.sleep(1.5)
            assert prom.query('target_info{job="plaintext"}') == []
        finally:
            gateway.terminate()
            gateway.wait(timeout=10)
