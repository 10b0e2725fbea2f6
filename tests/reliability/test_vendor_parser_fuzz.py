"""Vendor tool parsers fuzzed from the recorded samples: rocm-smi JSON, apple_gpu_stats JSON, gc-info text,
neuron-monitor reports and TPU runtime-metrics answers (protobuf). Parsing may refuse input with ValueError
(the source then says why once); shaping what was parsed must never raise, whatever the values are, and
gives finite values, shares of a whole within 0..1."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgauge.sources import _tpu_proto as pb
from sysgauge.sources.amd import card_readings, identities, parse_rocm_smi
from sysgauge.sources.apple import parse_apple_gpu_stats, to_readings
from sysgauge.sources.base import Reading
from sysgauge.sources.ipu import parse_gc_info, readings_of
from sysgauge.sources.tpu import DUTY_CYCLE, HBM_TOTAL, HBM_USAGE, _decode, sdk_percentages, values_of
from sysgauge.sources.tpu import shape as tpu_shape
from sysgauge.sources.trainium import to_readings as neuron_readings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROCM = [p.read_text() for p in sorted((FIXTURES / "amd").glob("*"))]
APPLE = (FIXTURES / "apple" / "apple-gpu-stats_m1max.json").read_text()
GC_INFO = next((FIXTURES / "ipu").glob("gc-info*")).read_text()
NEURON = [json.loads(line) for line in next((FIXTURES / "trainium").glob("*.jsonl")).read_text().splitlines()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, texts: list[str]) -> str:
    """A recorded text cut, with bytes flipped or lines inserted."""
    text = draw(st.sampled_from(texts))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return text[: draw(st.integers(0, len(text)))]
    if choice == 1 and text:
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.characters()) + text[at + 1 :]
    if choice == 2:
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        return "\n".join([*lines[:at], draw(st.text(max_size=80)), *lines[at:]])
    return text


def assert_sane(readings: list[Reading]) -> None:
    """Finite values; a share of a whole (unit "1", power aside: a card may draw over its cap) in 0..1."""
    for reading in readings:
        assert math.isfinite(reading.value), reading
        if reading.spec.unit == "1" and "power" not in reading.spec.name:
            assert 0.0 <= reading.value <= 1.0, reading


def shape_rocm(text: str) -> None:
    try:
        cards = parse_rocm_smi(text)
    except ValueError:
        return
    ident = identities(cards)
    for card, fields in cards.items():
        assert_sane(card_readings(fields, ident[card]))


@FUZZ
@given(mutated(ROCM))
def test_rocm_smi_text(text: str) -> None:
    shape_rocm(text)


@FUZZ
@given(
    st.dictionaries(
        st.text(max_size=12).map(lambda k: "card" + k),
        st.dictionaries(
            st.sampled_from(
                [
                    "GPU use (%)",
                    "GPU memory use (%)",
                    "VRAM Total Memory (B)",
                    "VRAM Total Used Memory (B)",
                    "Temperature (Sensor edge) (C)",
                    "Average Graphics Package Power (W)",
                    "Max Graphics Package Power (W)",
                    "Unique ID",
                    "PCI Bus",
                    "Card series",
                ]
            ),
            json_values,
            max_size=6,
        ),
        max_size=4,
    )
)
def test_rocm_smi_values_of_any_type(document: dict[str, Any]) -> None:
    shape_rocm(json.dumps(document))


@FUZZ
@given(st.one_of(mutated([APPLE]), json_values.map(json.dumps)))
def test_apple_gpu_stats(text: str) -> None:
    try:
        stats = parse_apple_gpu_stats(text)
    except ValueError:
        return
    assert_sane(to_readings(stats))


@FUZZ
@given(mutated([GC_INFO]))
def test_gc_info_text(text: str) -> None:
    try:
        devices = parse_gc_info(text)
    except ValueError:
        return
    assert_sane(readings_of(devices, None))


@FUZZ
@given(
    st.sampled_from(NEURON),
    json_values,
    st.lists(
        st.sampled_from(
            [
                "neuron_runtime_data",
                "report",
                "neuroncore_counters",
                "memory_used",
                "neuroncores_in_use",
                "pid",
                "neuron_runtime_used_bytes",
                "usage_breakdown",
                "host",
                "neuroncore_memory_usage",
            ]
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_neuron_monitor_reports_with_any_part_replaced(
    report: dict[str, Any], junk: Any, path: list[str]
) -> None:
    broken = json.loads(json.dumps(report))
    node: Any = broken
    for key in path[:-1]:  # walk down where the path exists, then replace what is there with junk
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[0]
    if isinstance(node, dict):
        node[path[-1]] = junk
    assert_sane(neuron_readings(broken, None))
    assert_sane(neuron_readings(broken, {1337}))


# --- TPU runtime-metrics answers ------------------------------------------------------------------

TPU_RECORDED = json.loads((FIXTURES / "tpu" / "v6e_4chips_runtime_metrics.json").read_text())["metrics"]
INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def attr_values(draw: st.DrawFn, recorded_device: int) -> Any:
    """An AttrValue: mostly the recorded device id, else any kind libtpu's message allows."""
    value = pb.AttrValue()
    kinds = ["recorded"] * 6 + ["int", "string", "double", "bool", "bytes", "kvlist", "unset"]
    kind = draw(st.sampled_from(kinds))
    if kind == "recorded":
        value.int_attr = recorded_device
    elif kind == "int":
        value.int_attr = draw(INT64)
    elif kind == "string":
        value.string_attr = draw(st.text(max_size=30) | st.just(str(recorded_device)) | st.just(" 9 "))
    elif kind == "double":
        value.double_attr = draw(st.floats())
    elif kind == "bool":
        value.bool_attr = draw(st.booleans())
    elif kind == "bytes":
        value.bytes_attr = draw(st.binary(max_size=20))
    elif kind == "kvlist":
        for _ in range(draw(st.integers(0, 3))):
            inner = value.kvlist_attr.attributes.add()
            inner.key = draw(st.sampled_from(["device-id", "chip_id", "core", ""]) | st.text(max_size=10))
            inner.value.int_attr = draw(INT64 | st.just(recorded_device))
    return value


@st.composite
def tpu_answers(draw: st.DrawFn, name: str) -> bytes:
    """The recorded answer for `name`, its devices and values replaced at random, its bytes maybe cut."""
    response = pb.MetricResponse()
    response.metric.name = name
    recorded = list(TPU_RECORDED[name].items())
    for device, value in draw(st.lists(st.sampled_from(recorded), max_size=8)):
        entry = response.metric.metrics.add()
        entry.attribute.key = draw(st.sampled_from(["device-id", "device_ordinal", "x"]))
        entry.attribute.value.CopyFrom(draw(attr_values(int(device))))
        kind = draw(
            st.sampled_from(["recorded", "recorded", "double", "double", "int", "string", "bool", "none"])
        )
        if kind == "recorded":
            entry.gauge.as_double = float(value)
        elif kind == "double":
            entry.gauge.as_double = draw(st.floats())
        elif kind == "int":
            entry.gauge.as_int = draw(INT64)
        elif kind == "string":
            entry.gauge.as_string = draw(st.text(max_size=10))
        elif kind == "bool":
            entry.gauge.as_bool = draw(st.booleans())
    answer: bytes = response.SerializeToString()
    if answer and draw(st.booleans()):
        at = draw(st.integers(0, len(answer) - 1))
        answer = answer[:at] + draw(st.binary(max_size=4)) + answer[at + 1 :]
    return answer


def tpu_values(answer: bytes) -> dict[int, float]:
    try:
        response = _decode(answer)
    except ValueError:
        return {}
    values, problems = values_of(response)
    assert all(isinstance(problem, str) for problem in problems)
    return values


@FUZZ
@given(
    usage=tpu_answers(HBM_USAGE),
    total=tpu_answers(HBM_TOTAL),
    duty=tpu_answers(DUTY_CYCLE),
    sdk=st.lists(st.text(max_size=8) | st.floats().map(str), max_size=8),
)
def test_tpu_answers_decode_or_refuse_and_shape_to_finite_readings(
    usage: bytes, total: bytes, duty: bytes, sdk: list[str]
) -> None:
    used, limit, busy = tpu_values(usage), tpu_values(total), tpu_values(duty)
    # As TpuSource._tensorcore passes them on: only the SDK strings that are no number are left out.
    tensorcore = {device: p for device, p in enumerate(sdk_percentages(sdk)) if p is not None}
    assert_sane(tpu_shape(used, limit, busy, "v6e", tensorcore))
