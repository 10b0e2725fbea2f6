"""Parser fuzzing from recorded samples: OpenMetrics text (the dcgm-exporter fixtures, mutated) and the
strings an NVIDIA driver hands back (names, UUIDs, PCI bus ids, through the fake libnvidia-ml.so.1).

Contracts: only ValueError may escape parse_scrape; samples_of and to_readings never raise; every input
is handled within a bounded time. The NVIDIA source never raises and its identity attributes are str.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from sysgauge import metrics as m
from sysgauge.sources.nvidia import NvidiaSource
from sysgauge.sources.openmetrics import (
    MAX_LINE_CHARS,
    MetricFilter,
    SeriesCap,
    SpecRegistry,
    parse_scrape,
    samples_of,
    to_readings,
)
from tests.conftest import metric_names
from tests.httpfake import Reply, serve
from tests.nvml_fake.scenario import FakeNvml
from tests.reliability.helpers import OPENMETRICS_SAMPLES, gpu, nvml_scenario, nvml_users, record

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PER_INPUT_LIMIT_S = 2.0
MAX_TEXT = 512 * 1024  # characters of mutated text before the one huge label (the scrape cap is 10 MB)
CONTENT_TYPES = ("text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0")
OTEL_NAME = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")


def seeds() -> list[str]:
    texts = [path.read_text() for path in sorted(Path(OPENMETRICS_SAMPLES).glob("*.txt"))]
    return [text.replace("%f", "1.5") for text in texts]


SEEDS = seeds()
TOKENS = [
    "# TYPE ",
    "# HELP ",
    "# UNIT ",
    "# EOF",
    "x",
    "DCGM_FI_DEV_GPU_UTIL",
    "_total",
    "_bucket",
    "_count",
    "_sum",
    "_created",
    "_info",
    "{",
    "}",
    "=",
    '"',
    ",",
    "le",
    "quantile",
    "\\",
    "\\n",
    " ",
    "\t",
    "0",
    "1",
    "-1",
    "1e400",
    "NaN",
    "+Inf",
    "-Inf",
    "counter",
    "gauge",
    "histogram",
    "summary",
    "info",
    "stateset",
    "gaugehistogram",
    "unknown",
    "untyped",
    ":",
    "#",
    ".",
    "é",
    ' # {a="b"} 1 1',
]
JUNK_LINES = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12).map("".join),
    st.sampled_from(
        [
            "# TYPE x counter",
            "# TYPE x histogram",
            'x_bucket{le="+Inf"} 1',
            'x{a="b",a="c"} 1',
            "x 1 2 3",
            "x{} NaN",
            'x_total 1 # {a="b"} 1 1',
            "# UNIT x_seconds seconds",
            "x{" + ",".join(f'l{i}="v"' for i in range(300)) + "} 1",
        ]
    ),
)


def replace_first_label(text: str, value: str) -> str:
    match = re.search(r'="[^"]*"', text)
    return text if match is None else text[: match.start()] + value + text[match.end() :]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "drop", "repeat", "swap"]))
        lines = text.split("\n")
        if kind == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        elif kind == "flip":
            raw = bytearray(text.encode())
            for _ in range(draw(st.integers(1, 8))):
                if raw:
                    raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            text = raw.decode(errors="replace")  # the scraper refuses bytes that are not UTF-8
        elif kind == "insert":
            for junk in draw(st.lists(JUNK_LINES, min_size=1, max_size=5)):
                lines.insert(draw(st.integers(0, len(lines))), junk)
            text = "\n".join(lines)
        elif kind == "drop" and lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "\n".join(lines)
        elif kind == "repeat":
            text = (text * draw(st.integers(2, 20)))[:MAX_TEXT]
        elif kind == "swap" and len(lines) > 1:
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    if draw(st.booleans()):
        # One huge label value, last, so no repeat multiplies it: under and over the line length limit.
        size = draw(st.sampled_from([10_000, 60_000, 100_000, 200_000]))
        filler = draw(st.sampled_from(["x", "é", "\\\\", '\\"', "\U0001f600"]))
        text = replace_first_label(text, '="' + filler * (size // len(filler)) + '"')
    return text


def shape(text: str, content_type: str, cap: int = 2000) -> tuple[list[Any] | None, float]:
    """parse -> samples -> readings, as a scrape does: the readings (None if unparseable) and seconds."""
    started = time.perf_counter()
    try:
        families, _dropped = parse_scrape(text, content_type)
    except ValueError:
        return None, time.perf_counter() - started
    samples = samples_of(families)
    readings = to_readings("ep", samples, MetricFilter(()), SpecRegistry(), SeriesCap(cap))
    return readings, time.perf_counter() - started


slowest = [0.0]  # seconds of the slowest input across the fuzz tests of this module


@pytest.fixture(scope="module", autouse=True)
def report_slowest() -> Iterator[None]:
    yield
    record("parser-fuzz", slowest_input_s=round(slowest[0], 3), per_input_limit_s=PER_INPUT_LIMIT_S)


@FUZZ
@given(text=mutated(), content_type=st.sampled_from(CONTENT_TYPES))
def test_mutated_recorded_scrapes_raise_only_value_error_and_are_bounded_in_time(
    text: str, content_type: str
) -> None:
    readings, seconds = shape(text, content_type)
    slowest[0] = max(slowest[0], seconds)
    assert seconds < PER_INPUT_LIMIT_S, f"{seconds:.2f} s for {len(text)} characters"
    event("unparseable" if readings is None else "parsed")
    for reading in readings or []:
        assert OTEL_NAME.fullmatch(reading.spec.name), reading.spec.name
        assert isinstance(reading.value, float) and math.isfinite(reading.value)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in reading.attributes)


@FUZZ
@given(lines=st.lists(JUNK_LINES, max_size=30), content_type=st.sampled_from(CONTENT_TYPES))
def test_junk_alone_raises_only_value_error(lines: list[str], content_type: str) -> None:
    _, seconds = shape("\n".join(lines), content_type)
    slowest[0] = max(slowest[0], seconds)
    assert seconds < PER_INPUT_LIMIT_S


def test_the_series_cap_holds_for_an_endpoint_with_a_hundred_thousand_series() -> None:
    text = "# TYPE x gauge\n" + "".join(f'x{{i="{i}"}} 1\n' for i in range(100_000))
    readings, seconds = shape(text, CONTENT_TYPES[0], cap=2000)
    assert readings is not None and len(readings) == 2000
    record("openmetrics-100k-series", bytes=len(text), seconds=round(seconds, 2), kept=len(readings))


def parse_seconds(lines: int, label_chars: int) -> tuple[float, int]:
    """Seconds to parse `lines` lines that each hold a label value of `label_chars` escaped quotes."""
    label = '\\"' * (label_chars // 2)
    text = "# TYPE x gauge\n" + "".join(f'x{{i="{i}",a="{label}"}} 1\n' for i in range(lines))
    started = time.perf_counter()
    families, dropped = parse_scrape(text, CONTENT_TYPES[0])
    seconds = time.perf_counter() - started
    assert sum(len(family.samples) for family in families) == lines - dropped
    return seconds, dropped


def test_parse_time_grows_linearly_with_lines_of_escaped_quotes() -> None:
    """prometheus_client parses a line in time quadratic in its length (bug 12 of docs/reliability.md):
    lines over MAX_LINE_CHARS are dropped, so a body of lines just under it is the slowest per byte."""
    under = MAX_LINE_CHARS - 100
    (small, small_dropped), (large, large_dropped) = parse_seconds(3, under), parse_seconds(12, under)
    assert small_dropped == large_dropped == 0
    one_line, one_dropped = parse_seconds(1, 800_000)  # 2 s of parsing before the limit
    assert one_dropped == 1
    record(
        "openmetrics-escaped-quotes",
        seconds_3_lines_under_limit=round(small, 3),
        seconds_12_lines_under_limit=round(large, 3),
        seconds_one_800k_line_dropped=round(one_line, 4),
    )
    ratio = large / small
    assert ratio < 6, f"4x the input took {ratio:.1f}x the time ({small:.2f} s, {large:.2f} s)"
    assert one_line < small, f"dropping one 800 KB line took {one_line:.3f} s"


# A unit is valid OpenMetrics whatever its length (it is a suffix of the metric name), but the OTel SDK
# refuses units over 63 characters when the instrument is created.
LONG_UNIT = "s" * 70
LONG_UNIT_TEXT = f"""# TYPE aaa_first gauge
aaa_first 1
# TYPE long_{LONG_UNIT} gauge
# UNIT long_{LONG_UNIT} {LONG_UNIT}
long_{LONG_UNIT} 2
# TYPE zzz_after gauge
zzz_after 3
# EOF
"""


def test_a_scraped_metric_with_a_long_unit_does_not_hide_the_metrics_after_it() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    reply = Reply(
        body=LONG_UNIT_TEXT.encode(), headers={"Content-Type": "application/openmetrics-text; version=1.0.0"}
    )
    with serve(reply) as server:
        handle = instrument_system(
            provider,
            sources=["openmetrics"],
            openmetrics_endpoints={"ep": server.url},
            openmetrics_interval=0.05,
            sampling_interval=0.05,
            window=1,
        )
        try:
            deadline = time.monotonic() + 5
            names: set[str] = set()
            while time.monotonic() < deadline and "aaa_first" not in names:
                time.sleep(0.05)
                names = metric_names(reader.get_metrics_data())
            time.sleep(0.3)
            names = metric_names(reader.get_metrics_data())
        finally:
            handle.shutdown()
            provider.shutdown()
    assert "aaa_first" in names
    assert "zzz_after" in names, names


# --- strings from the NVIDIA driver -----------------------------------------------------------------------

# The fake driver reads "key value" lines: no line breaks or NUL inside a value.
DRIVER_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\x00")
DRIVER_STRINGS = st.one_of(
    st.text(DRIVER_TEXT, max_size=40),
    st.text(DRIVER_TEXT, min_size=95, max_size=95),
    st.builds(lambda c: c * 95, DRIVER_TEXT),
    st.sampled_from(
        ["", " ", "NVIDIA H100 80GB HBM3", "GPU-" + "f" * 91, "x" * 95, "x" * 200, "00000000:18:00.0"]
    ),
)


@FUZZ
@given(name=DRIVER_STRINGS, uuid=DRIVER_STRINGS, bus_id=DRIVER_STRINGS)
def test_any_driver_strings_give_string_attributes_and_no_exception(
    fake_nvml_library: FakeNvml, name: str, uuid: str, bus_id: str
) -> None:
    scenario = {"devices": [gpu(0, name=name, uuid=uuid, pci_bus_id=bus_id), gpu(1)]}
    users = nvml_users()
    source = NvidiaSource()
    with nvml_scenario(fake_nvml_library, scenario, "strings-fuzz"):
        try:
            assert source.probe() is None
            readings = source.read()
        finally:
            source.close()
    assert nvml_users() == users
    identities = {r.attributes for r in readings if r.spec is m.HW_GPU_MEMORY_USAGE}
    assert len(identities) == 2
    for attrs in identities:
        values = dict(attrs)
        for key in (m.HW_ID, m.HW_NAME, m.HW_MODEL, m.HW_VENDOR, m.HW_TYPE):
            assert isinstance(values[key], str) and values[key], (key, values)
        assert values[m.GPU_INDEX] in (0, 1)
        if m.GPU_PCI_BUS_ID in values:
            assert isinstance(values[m.GPU_PCI_BUS_ID], str)


@pytest.mark.parametrize(
    "field", ["name", "uuid", "pci_bus_id"], ids=["name-96-bytes", "uuid-96-bytes", "bus-id-40-bytes"]
)
def test_a_driver_string_cut_inside_a_character_is_tolerated(fake_nvml_library: FakeNvml, field: str) -> None:
    text = "é" * (20 if field == "pci_bus_id" else 48)  # 2 bytes each: the cut falls inside one
    source = NvidiaSource()
    with nvml_scenario(fake_nvml_library, {"devices": [gpu(0, **{field: text})]}, "cut-string"):
        try:
            assert source.probe() is None
            models = {
                dict(r.attributes)[m.HW_MODEL] for r in source.read() if r.spec is m.HW_GPU_MEMORY_USAGE
            }
        finally:
            source.close()
    assert len(models) == 1 and all(isinstance(model, str) for model in models)
