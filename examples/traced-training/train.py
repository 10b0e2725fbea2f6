"""A training-style loop traced with OpenTelemetry, one span per epoch, each span carrying what the epoch
cost the machine (sysgauge.SystemMetricsSpanProcessor).

    python examples/traced-training/train.py --epochs 3            # spans printed as JSON on the console
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python examples/traced-training/train.py --otlp
"""

from __future__ import annotations

import argparse
import os
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from sysgauge import SystemMetricsSpanProcessor, instrument_system


def exporter(otlp: bool) -> SpanExporter:
    if otlp:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_* variables apply
    return ConsoleSpanExporter()


def epoch(seconds: float, step: int) -> None:
    """Work that looks like training: compute, memory that grows, a checkpoint written."""
    weights = [float(i % 97) for i in range(200_000)]
    activations = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        weights = [w * 0.999 + 0.001 for w in weights]
        activations.append(bytearray(2 * 10**6))
        if len(activations) > 60:  # about 120 MB held at most
            activations.pop(0)
    with open(os.devnull, "wb") as checkpoint:
        checkpoint.write(bytes(len(activations)))
    del activations
    _ = step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seconds-per-epoch", type=float, default=2.0)
    parser.add_argument("--otlp", action="store_true", help="export spans over OTLP instead of the console")
    args = parser.parse_args()

    resource = Resource.create({"service.name": "traced-training"})
    meter_provider = MeterProvider(resource=resource)  # add your metric readers here as usual
    monitor = instrument_system(meter_provider, sampling_interval=0.5, window=args.seconds_per_epoch)
    tracer_provider = TracerProvider(resource=resource)
    # The exporting processor goes *inside* sysgauge's: it receives each span with the attributes added.
    tracer_provider.add_span_processor(
        SystemMetricsSpanProcessor(monitor, BatchSpanProcessor(exporter(args.otlp)))
    )
    tracer = tracer_provider.get_tracer("training")

    with tracer.start_as_current_span("training"):
        for step in range(args.epochs):
            # Epochs are child spans: ask for them by attribute (root spans are measured anyway).
            with tracer.start_as_current_span(f"epoch {step}", attributes={"sysgauge.measure": True}):
                epoch(args.seconds_per_epoch, step)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    monitor.shutdown()


if __name__ == "__main__":
    main()
