"""The OTLP/HTTP endpoint misbehaves: down (nothing listens), slow (answers after the exporter's timeout),
refusing (HTTP 500 and 503, which the exporter retries with backoff).

One 10 s run drives all four at once (one MeterProvider, PeriodicExportingMetricReader, OTLP exporter and
sysgauge handle each) while the main thread runs a busy loop; the tests below judge that run. The real
Collector absent/killed/restarted case is tests/test_collector_faults.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from sysgauge import instrument_system
from sysgauge.sampler import Sample
from tests.parts import free_port
from tests.reliability.helpers import MiB, Sink, otlp_sink, record, usage

RUN_S = 10.0
BUSY_S = 4.0
SAMPLING_S = 0.1
EXPORT_INTERVAL_S = 0.5
EXPORTER_TIMEOUT_S = 2.0
FAULTS = ("down", "slow", "http-500", "http-503")
RSS_BOUND = 8 * MiB


@dataclass
class Outcome:
    ticks: dict[str, list[float]] = field(default_factory=dict)
    posts: dict[str, int] = field(default_factory=dict)
    shutdown_s: dict[str, float] = field(default_factory=dict)
    longest_stall_s: float = 0.0  # phase A: between two iterations of a busy loop
    longest_sleep_overrun_s: float = 0.0  # phase B: how late a 5 ms sleep returned, at worst
    phase_b_start: float = 0.0
    loops: int = 0
    rss_start: int = 0
    rss_end: int = 0


def note_tick(ticks: list[float], sample: Sample) -> None:
    ticks.append(sample.time)


def worst_gap(ticks: list[float], after: float, before: float = float("inf")) -> float:
    inside = [t for t in ticks if after <= t < before]
    return max(b - a for a, b in itertools.pairwise(inside))


@pytest.fixture(scope="module")
def outcome() -> Iterator[Outcome]:
    result = Outcome()
    with ExitStack() as stack:
        sinks: dict[str, Sink | None] = {
            "down": None,
            "slow": stack.enter_context(otlp_sink(hang=60.0)),
            "http-500": stack.enter_context(otlp_sink(status=500)),
            "http-503": stack.enter_context(otlp_sink(status=503)),
        }
        providers, handles = {}, {}
        for fault, sink in sinks.items():
            url = sink.url if sink is not None else f"http://127.0.0.1:{free_port()}/v1/metrics"
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=url, timeout=EXPORTER_TIMEOUT_S),
                export_interval_millis=EXPORT_INTERVAL_S * 1000,
                export_timeout_millis=EXPORTER_TIMEOUT_S * 1000,
            )
            providers[fault] = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
            handles[fault] = instrument_system(
                providers[fault], sources=["cpu", "memory", "process"], sampling_interval=SAMPLING_S, window=1
            )
            ticks: list[float] = []
            result.ticks[fault] = ticks
            handles[fault].sampler.add_listener(partial(note_tick, ticks))

        # The "program", on the main thread. Phase A: a pure busy loop, for the longest stall (nothing may
        # hold the GIL long). Phase B: work with short sleeps, the shape of most programs; the sampler's
        # schedule is judged there, since a CPU-bound thread alone stretches every tick (test_hung_source).
        started = last = time.monotonic()
        loops = 0
        while (now := time.monotonic()) - started < BUSY_S:
            sum(range(200))
            result.longest_stall_s = max(result.longest_stall_s, now - last)
            last = now
            loops += 1
        result.rss_start = usage().rss  # the first failed exports have allocated what they do by now
        result.phase_b_start = time.monotonic()
        while (now := time.monotonic()) - started < RUN_S:
            sum(range(200))
            time.sleep(0.005)
            result.longest_sleep_overrun_s = max(
                result.longest_sleep_overrun_s, time.monotonic() - now - 0.005
            )
            loops += 1
        result.rss_end = usage().rss
        result.loops = loops

        for fault, sink in sinks.items():
            result.posts[fault] = len(sink.posts) if sink is not None else 0
            if sink is not None:
                sink.release.set()  # let the slow server answer, as it would eventually
            handles[fault].shutdown()
            began = time.monotonic()
            providers[fault].shutdown()
            result.shutdown_s[fault] = time.monotonic() - began
    record(
        "exporter-faults",
        run_s=RUN_S,
        loops=result.loops,
        longest_stall_ms=round(result.longest_stall_s * 1000, 1),
        longest_sleep_overrun_ms=round(result.longest_sleep_overrun_s * 1000, 1),
        rss_start_mib=round(result.rss_start / MiB, 2),
        rss_end_mib=round(result.rss_end / MiB, 2),
        rss_growth_mib=round((result.rss_end - result.rss_start) / MiB, 2),
        posts=result.posts,
        provider_shutdown_s={k: round(v, 2) for k, v in result.shutdown_s.items()},
        max_tick_gap_busy_ms={
            k: round(worst_gap(v, 0, result.phase_b_start) * 1000) for k, v in result.ticks.items()
        },
        max_tick_gap_ms={
            k: round(worst_gap(v, result.phase_b_start) * 1000, 1) for k, v in result.ticks.items()
        },
    )
    yield result


def test_the_main_thread_never_blocks(outcome: Outcome) -> None:
    assert outcome.longest_stall_s < 0.25, f"the busy loop stalled {outcome.longest_stall_s * 1000:.0f} ms"
    assert outcome.longest_sleep_overrun_s < 0.1, f"a 5 ms sleep overran by {outcome.longest_sleep_overrun_s}"


@pytest.mark.parametrize("fault", FAULTS)
def test_the_sampler_keeps_its_schedule(outcome: Outcome, fault: str) -> None:
    ticks = [t for t in outcome.ticks[fault] if t >= outcome.phase_b_start]
    expected = (RUN_S - BUSY_S) / SAMPLING_S
    assert len(ticks) >= 0.8 * expected, f"{fault}: {len(ticks)} ticks in {RUN_S - BUSY_S} s"
    worst = worst_gap(ticks, outcome.phase_b_start)
    assert worst < 2 * SAMPLING_S, f"{fault}: a tick came {worst * 1000:.0f} ms after the previous one"


@pytest.mark.parametrize("fault", ["slow", "http-500", "http-503"])
def test_the_exporter_really_tried(outcome: Outcome, fault: str) -> None:
    assert outcome.posts[fault] >= 2, outcome.posts


def test_memory_stays_bounded(outcome: Outcome) -> None:
    growth = outcome.rss_end - outcome.rss_start
    assert growth < RSS_BOUND, f"RSS grew {growth / MiB:.1f} MiB in {RUN_S - BUSY_S:.0f} s"


@pytest.mark.parametrize("fault", FAULTS)
def test_provider_shutdown_is_bounded_by_the_exporter_timeout(outcome: Outcome, fault: str) -> None:
    # Not sysgauge's doing, but what a program sees at exit: at most about one export timeout.
    assert outcome.shutdown_s[fault] < EXPORTER_TIMEOUT_S + 1.5, outcome.shutdown_s


def test_no_sysgauge_thread_outlives_the_run(outcome: Outcome) -> None:
    left = [t.name for t in threading.enumerate() if t.name.startswith("sysgauge-")]
    assert left == []
