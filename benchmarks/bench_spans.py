"""Overhead of SystemMetricsSpanProcessor per span, side by side with the same pipeline without it.

    .venv/bin/python benchmarks/bench_spans.py

Both pipelines end in a SimpleSpanProcessor with an exporter that drops spans, so the difference is ours:
- skipped spans (children, not selected): the cost of deciding to skip;
- measured spans (roots): the cost of reading CPU counters at start and end, reading the samples inside the
  span and handing on an annotated copy (process tree of one process, no GPU).
Timings are printed, never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from sysgauge import SystemMetricsSpanProcessor, instrument_system

ROUNDS = 7
SPANS = 20_000


class Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_span_us(tracer_provider: TracerProvider, children: bool, count: int) -> float:
    tracer = tracer_provider.get_tracer("bench")
    samples = []
    for _ in range(ROUNDS):
        if children:
            with tracer.start_as_current_span("root"):
                start = time.perf_counter()
                for _ in range(count):
                    with tracer.start_as_current_span("child"):
                        pass
                samples.append((time.perf_counter() - start) / count)
        else:
            start = time.perf_counter()
            for _ in range(count):
                with tracer.start_as_current_span("root"):
                    pass
            samples.append((time.perf_counter() - start) / count)
    return statistics.median(samples) * 1e6


def main() -> None:
    provider = MeterProvider(shutdown_on_exit=False)
    monitor = instrument_system(provider, sources=["process"], sampling_interval=2.0, window=30.0)
    plain = TracerProvider()
    plain.add_span_processor(SimpleSpanProcessor(Drop()))
    ours = TracerProvider()
    ours.add_span_processor(SystemMetricsSpanProcessor(monitor, SimpleSpanProcessor(Drop())))
    rows = []
    for label, children, count in (
        ("skipped (child) span", True, SPANS),
        ("measured (root) span", False, 2_000),
    ):
        without = per_span_us(plain, children, count)
        with_ours = per_span_us(ours, children, count)
        rows.append((label, without, with_ours))
    monitor.shutdown()
    print(f"median of {ROUNDS} rounds, µs per span (start + end)")
    for label, without, with_ours in rows:
        print(
            f"  {label:<22} without {without:6.2f}   with the processor {with_ours:6.2f}   "
            f"added {with_ours - without:6.2f}"
        )


if __name__ == "__main__":
    main()
