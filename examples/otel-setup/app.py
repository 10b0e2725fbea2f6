"""sysgauge in an existing OpenTelemetry setup: a MeterProvider, a periodic reader, the SDK's OTLP exporter.

    python app.py --seconds 120

The exporter reads the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
OTEL_EXPORTER_OTLP_HEADERS, ...). The export interval is OTEL_METRIC_EXPORT_INTERVAL in milliseconds
(default here 30000); sysgauge's window is set to the same length, so each export describes exactly the
last interval.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge import instrument_system


def otlp_exporter() -> MetricExporter:
    """The SDK's OTLP exporter for the protocol in OTEL_EXPORTER_OTLP_PROTOCOL (default grpc)."""
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    if protocol.strip().lower() in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

        return Http()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

    return Grpc()


def busy_work(seconds: float) -> None:
    """Placeholder for the application: some CPU and some memory, in steps of about 0.1 s."""
    end = time.monotonic() + seconds
    held: list[bytes] = []
    while time.monotonic() < end:
        step_end = min(end, time.monotonic() + 0.1)
        total = 0
        while time.monotonic() < step_end:
            total += sum(i * i for i in range(1000))
        held.append(bytes(1_000_000))
        if len(held) > 50:
            held.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the placeholder work runs")
    args = parser.parse_args()

    interval_ms = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "30000"))
    reader = PeriodicExportingMetricReader(otlp_exporter(), export_interval_millis=interval_ms)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still apply; host.name lets dashboards pick the host.
    resource = Resource({"host.name": socket.gethostname()}).merge(Resource.create())
    provider = MeterProvider(metric_readers=[reader], resource=resource)

    window = interval_ms / 1000
    monitor = instrument_system(provider, window=window, sampling_interval=min(2.0, window))
    try:
        busy_work(args.seconds)
    finally:
        # The provider first: its shutdown runs one last collect and export, which reads sysgauge's
        # window. Shutting the monitor down first would leave that last export without sysgauge's data.
        provider.shutdown()
        monitor.shutdown()


if __name__ == "__main__":
    main()
