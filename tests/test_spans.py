"""SystemMetricsSpanProcessor: what a span cost the machine, on the span."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sysgauge import SystemMetricsSpanProcessor, SystemMonitor, instrument_system
from tests.nvml_fake.scenario import FakeNvml, load
from tests.otelcol import Collector

GiB = 2**30


@pytest.fixture
def traced(
    provider: MeterProvider,
) -> Iterator[Callable[..., tuple[Any, InMemorySpanExporter, SystemMonitor]]]:
    made: list[tuple[TracerProvider, SystemMonitor]] = []

    def make(**options: Any) -> tuple[Any, InMemorySpanExporter, SystemMonitor]:
        selection = {k: options.pop(k) for k in ("names", "attribute", "roots") if k in options}
        monitor = instrument_system(provider, sampling_interval=0.1, window=1.0, **options)
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(
            SystemMetricsSpanProcessor(monitor, SimpleSpanProcessor(exporter), **selection)
        )
        made.append((tracer_provider, monitor))
        return tracer_provider.get_tracer("test"), exporter, monitor

    yield make
    for tracer_provider, monitor in made:
        tracer_provider.shutdown()
        monitor.shutdown()


def number(attributes: Any, key: str) -> float:
    value = attributes[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_cpu_bound_span_shows_the_cpu_time_the_process_measured(traced: Callable[..., Any]) -> None:
    tracer, exporter, _ = traced(sources=["process"])
    with tracer.start_as_current_span("epoch"):
        before = time.process_time()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            pass
        measured = time.process_time() - before
    attributes = finished(exporter, "epoch").attributes or {}
    assert number(attributes, "sysgauge.process.cpu.time") == pytest.approx(measured, rel=0.10)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert number(attributes, "sysgauge.process.cpu.utilization") == pytest.approx(
        measured / 1.0 / cpus, rel=0.15
    )
    # A pure-Python busy loop holds the GIL: the sampler gets fewer ticks in than scheduled (docs/spans.md).
    assert number(attributes, "sysgauge.span.samples") >= 2


def test_a_span_that_allocates_200_mb_shows_the_peak(traced: Callable[..., Any]) -> None:
    tracer, exporter, monitor = traced(sources=["process"])
    time.sleep(0.3)
    baseline = max(s.values[("process.memory.usage", ())] for s in monitor.sampler.samples())
    with tracer.start_as_current_span("allocate"):
        block = bytearray(200 * 10**6)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(0.5)
        del block
        time.sleep(0.3)
    attributes = finished(exporter, "allocate").attributes or {}
    assert number(attributes, "sysgauge.process.memory.peak") - baseline == pytest.approx(
        200 * 10**6, rel=0.1
    )
    assert number(attributes, "sysgauge.process.memory.end") < number(
        attributes, "sysgauge.process.memory.peak"
    )


def test_short_spans_get_counter_deltas_only_and_children_are_not_measured(
    traced: Callable[..., Any],
) -> None:
    tracer, exporter, _ = traced(sources=["process"], names="step-.*")
    with tracer.start_as_current_span("request"):
        with tracer.start_as_current_span("child"):
            pass
        with tracer.start_as_current_span("step-1"):
            pass
        with tracer.start_as_current_span("marked", attributes={"sysgauge.measure": True}):
            pass
    request = finished(exporter, "request").attributes or {}
    assert number(request, "sysgauge.span.samples") == 0  # shorter than one sampling interval
    assert "sysgauge.process.cpu.time" in request and "sysgauge.process.memory.peak" not in request
    assert not any(k.startswith("sysgauge.") for k in finished(exporter, "child").attributes or {})
    assert "sysgauge.process.cpu.time" in (finished(exporter, "step-1").attributes or {})
    assert "sysgauge.process.cpu.time" in (finished(exporter, "marked").attributes or {})


def test_gpu_values_come_from_the_fake_driver(
    use_scenario: Callable[[dict[str, Any]], FakeNvml], traced: Callable[..., Any]
) -> None:
    # The scenario's "child" is pid 2 (kthreadd): on GPU 0, but not in this process's tree.
    scenario = load("h100x8", root=os.getpid(), child=2, other=1)
    scenario["devices"] = scenario["devices"][:2]
    fake = use_scenario(scenario)
    tracer, exporter, _ = traced(sources=["process", "nvidia"])
    time.sleep(0.25)
    fake.set("dev.0.energy_mj 5000000")
    with tracer.start_as_current_span("epoch"):
        time.sleep(0.6)
        fake.set("dev.0.energy_mj 5750000")  # 750 J during the span
    attributes = finished(exporter, "epoch").attributes or {}
    gpu0 = scenario["devices"][0]
    assert number(attributes, "sysgauge.gpu.0.energy") == pytest.approx(750.0)
    assert number(attributes, "sysgauge.gpu.0.utilization") == pytest.approx(gpu0["util"]["gpu"] / 100)
    assert number(attributes, "sysgauge.gpu.0.memory.peak") == 3 * GiB  # only the tree's process on GPU 0
    assert not any(k.startswith("sysgauge.gpu.1.") for k in attributes)  # the tree does not use GPU 1


def test_spans_reach_the_collector_with_their_attributes(collector: Collector, tmp_path: Path) -> None:
    import json

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = MeterProvider(shutdown_on_exit=False)
    monitor = instrument_system(provider, sources=["process"], sampling_interval=0.1, window=1.0)
    tracer_provider = TracerProvider()
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True)
    tracer_provider.add_span_processor(SystemMetricsSpanProcessor(monitor, BatchSpanProcessor(exporter)))
    with tracer_provider.get_tracer("test").start_as_current_span("train-epoch"):
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        time.sleep(0.5)  # a pure-Python busy loop starves the sampler thread of the GIL (docs/spans.md)
    tracer_provider.shutdown()
    monitor.shutdown()
    provider.shutdown()
    deadline = time.monotonic() + 15
    while True:
        spans = [
            span
            for line in (collector.output.read_text().splitlines() if collector.output.exists() else [])
            for rs in json.loads(line).get("resourceSpans", [])
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
        if spans:
            break
        assert time.monotonic() < deadline, collector.log_tail()
        time.sleep(0.1)
    (span,) = [s for s in spans if s["name"] == "train-epoch"]
    attributes = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
    # OTLP JSON carries doubles as numbers and int64 as strings.
    assert float(attributes["sysgauge.process.cpu.time"]) > 0.25
    assert int(attributes["sysgauge.span.samples"]) >= 2
