"""Vendor tool parsers fuzzed from the recorded samples: rocm-smi JSON, apple_gpu_stats JSON, gc-info text and
neuron-monitor reports. Parsing may refuse input with ValueError (the source then says why once); shaping
what was parsed must never raise, whatever the values are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sysgauge.sources.amd import card_readings, identities, parse_rocm_smi
from sysgauge.sources.apple import parse_apple_gpu_stats, to_readings
from sysgauge.sources.ipu import parse_gc_info, readings_of
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


def shape_rocm(text: str) -> None:
    try:
        cards = parse_rocm_smi(text)
    except ValueError:
        return
    ident = identities(cards)
    for card, fields in cards.items():
        card_readings(fields, ident[card])


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
    to_readings(stats)


@FUZZ
@given(mutated([GC_INFO]))
def test_gc_info_text(text: str) -> None:
    try:
        devices = parse_gc_info(text)
    except ValueError:
        return
    readings_of(devices, None)


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
    neuron_readings(broken, None)
    neuron_readings(broken, {1337})
