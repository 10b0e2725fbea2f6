"""Every declared metric is emitted by its source, named and typed by the rules, and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from opentelemetry.semconv._incubating.metrics import hw_metrics, process_metrics, system_metrics

from sysgauge import metrics as m
from sysgauge.metric_table import (
    METRICS_BEGIN,
    METRICS_END,
    OPTIONS_BEGIN,
    OPTIONS_END,
    SPANS_BEGIN,
    SPANS_END,
    metric_table,
    option_table,
    span_table,
)
from sysgauge.options import SOURCE_NAMES, resolve_options
from sysgauge.sources import build_source
from tests.fakes import FakePsutil, fake_children

README = Path(__file__).resolve().parent.parent / "README.md"
SEMCONV_NAMES = {
    value
    for module in (system_metrics, process_metrics, hw_metrics)
    for key, value in vars(module).items()
    if key.isupper()
}


def emitted_by(name: str) -> set[str]:
    ps = FakePsutil()
    options = resolve_options({"pid": 4242, "cgroup": False}, environ={})
    source = build_source(name, options, ps)
    if name == "process":  # walk the fake process table, not /proc
        source._children_of = fake_children(ps)  # type: ignore[attr-defined]
    assert source.probe() is None
    return {reading.spec.name for reading in source.read()}


# The psutil sources; the others read a fake driver, tool or endpoint and check this in their own tests.
@pytest.mark.parametrize(
    "source", [name for name in SOURCE_NAMES if name in ("cpu", "memory", "disk", "network", "process")]
)
def test_each_source_emits_exactly_its_declared_metrics(source: str) -> None:
    declared = {spec.name for spec in m.specs_of(source)}
    assert emitted_by(source) == declared


def test_names_are_semconv_or_prefixed() -> None:
    for spec in m.ALL_SPECS:
        assert spec.name in SEMCONV_NAMES or spec.name.startswith("sysgauge."), spec.name
        assert not spec.name.startswith(m.PEAK_PREFIX)


def test_units_are_ucum() -> None:
    for spec in m.ALL_SPECS:
        assert spec.unit in {"1", "By", "s", "Cel", "W", "J", "Hz"} or re.fullmatch(
            r"\{[a-z_]+\}", spec.unit
        ), (
            spec.name,
            spec.unit,
        )


def test_kinds_and_aggregations_agree() -> None:
    for spec in m.ALL_SPECS:
        if spec.kind is m.InstrumentKind.COUNTER:
            assert spec.aggregation is m.Aggregation.LAST, spec.name  # counters report the cumulative value
        if spec.aggregation is m.Aggregation.RATE:
            assert spec.kind is m.InstrumentKind.GAUGE and spec.unit == "1", spec.name
        if spec.unit == "1" and spec.aggregation is not m.Aggregation.LAST:
            assert spec.kind is m.InstrumentKind.GAUGE, spec.name  # sampled fractions are gauges


def test_seed_metrics_are_all_declared() -> None:
    seed = {
        "process.cpu.utilization",
        "system.cpu.utilization",
        "process.thread.count",
        "system.filesystem.utilization",
        "system.filesystem.usage",
        "system.disk.io",
        "process.memory.usage",
        "process.memory.utilization",
        "system.memory.utilization",
        "system.memory.linux.available",
        "system.network.io",
    }
    assert seed <= set(m.SPECS_BY_NAME)


def section(text: str, begin: str, end: str) -> str:
    start = text.index(begin) + len(begin)
    return text[start : text.index(end)].strip()


def test_readme_tables_match_the_declarations() -> None:
    text = README.read_text()
    assert section(text, METRICS_BEGIN, METRICS_END) == metric_table(), "run: python -m sysgauge.metric_table"
    assert section(text, OPTIONS_BEGIN, OPTIONS_END) == option_table(), "run: python -m sysgauge.metric_table"
    assert section(text, SPANS_BEGIN, SPANS_END) == span_table(), "run: python -m sysgauge.metric_table"


def test_span_attributes_are_prefixed() -> None:
    assert all(spec.name.startswith("sysgauge.") for spec in m.SPAN_ATTRIBUTES)
