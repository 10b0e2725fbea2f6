"""What the CLI wires around instrument_system: a MeterProvider, its readers and exporters."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from sysgauge.monitor import SystemMonitor, instrument_system
from sysgauge.options import resolve_options
from sysgauge.sampler import TickListener

_HTTP_PROTOCOLS = ("http/protobuf", "http")


def build_exporters(
    args: argparse.Namespace, window: float, console_default: bool = True
) -> list[MetricExporter]:
    """The exporters the flags ask for; with none, the console table (unless `console_default` is off:
    `sysgauge run` then prints only its summary, leaving the command's own output alone)."""
    exporters: list[MetricExporter] = []
    if args.jsonl:
        from opentelemetry.exporter.otlp.json.file import FileMetricExporter

        try:
            with open(args.jsonl, "a"):
                pass
        except OSError as exc:
            raise ValueError(f"--jsonl {args.jsonl!r}: cannot write: {exc.strerror or exc}") from None
        exporters.append(FileMetricExporter(args.jsonl))
    otlp = args.otlp
    if (
        otlp is None
        and not exporters
        and not args.console
        and (
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        )
    ):
        otlp = ""
    if otlp is not None:
        exporters.append(_otlp_exporter(otlp))
    if args.console or (not exporters and console_default):
        from sysgauge._console import ConsoleTableExporter

        exporters.append(ConsoleTableExporter(window=window))
    return exporters


def _otlp_exporter(url: str) -> MetricExporter:
    protocol = (
        (
            os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        .strip()
        .lower()
    )
    if protocol in _HTTP_PROTOCOLS:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        if url and not url.rstrip("/").endswith("/v1/metrics"):
            url = url.rstrip("/") + "/v1/metrics"
        return HttpExporter(endpoint=url or None)
    if protocol != "grpc":
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not valid: expected grpc or http/protobuf"
        )
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

    return GrpcExporter(endpoint=url or None)


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; ours only fill gaps."""
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = "sysgauge"
    if "host.name" not in resource.attributes:
        defaults["host.name"] = socket.gethostname()
    return resource.merge(Resource(defaults)) if defaults else resource


@dataclass
class Pipeline:
    provider: MeterProvider
    monitor: SystemMonitor

    @classmethod
    def start(
        cls,
        args: argparse.Namespace,
        options: dict[str, Any],
        listener: TickListener | None = None,
        console_default: bool = True,
    ) -> Pipeline:
        window = resolve_options(options).window
        exporters = build_exporters(args, window, console_default)
        readers = [PeriodicExportingMetricReader(e, export_interval_millis=window * 1000) for e in exporters]
        resource = _resource()
        provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        try:
            monitor = instrument_system(provider, **options)
        except BaseException:
            provider.shutdown()
            raise
        if listener is not None:
            monitor.sampler.add_listener(listener)
            for sample in monitor.sampler.samples():  # the first sample, taken before the listener existed
                listener(sample)
        return cls(provider, monitor)

    def close(self) -> None:
        # The readers' final collect needs the window, so the provider goes first.
        self.monitor.sampler.last_tick()
        self.provider.shutdown()
        self.monitor.shutdown()
