"""A source whose read() does not return (a stuck NFS statfs, a driver call that hangs).

What holds: the SDK's collection never waits for a source (callbacks only read the precomputed window),
and the other sources of the handle keep their schedule: the watchdog abandons the reader stuck in the
read after `hang_after` (half an interval, at least 0.25 s) and starts a new one that skips the hung
source until its read returns. The stuck reader records nothing, hands the source back when the read
returns, and ends; a source still inside a read at shutdown is closed by that reader afterwards.
A CPU-bound Python thread in the program still stretches every tick (last test).
"""

from __future__ import annotations

import itertools
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import SystemMonitor, instrument_system
from sysgauge import metrics as m
from sysgauge.options import resolve_options
from sysgauge.sampler import Sample
from sysgauge.sources.memory import MemorySource
from tests.conftest import metric_names
from tests.nvml_fake.scenario import FakeNvml
from tests.reliability.helpers import (
    HangingSource,
    nvml_scenario,
    nvml_users,
    record,
    sysgauge_threads,
    two_gpus,
    wait_until,
)

COLLECTS = 50
INTERVAL = 0.5  # hang_after = 0.25 s
MEMORY = ("system.memory.usage", (("system.memory.state", "used"),))


def hanging_key(source: HangingSource) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (m.PROCESS_THREAD_COUNT.name, (("source", source.name),))


class Handle:
    def __init__(self, *hanging: HangingSource, interval: float = INTERVAL) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.hanging = hanging
        memory = MemorySource(psutil)
        assert memory.probe() is None
        options = resolve_options({"sampling_interval": interval, "window": 6 * interval}, environ={})
        self.monitor = SystemMonitor(self.provider, [*hanging, memory], options)
        self.samples: list[Sample] = []
        self.monitor.sampler.add_listener(self.samples.append)

    def close(self) -> None:
        for source in self.hanging:
            source.release.set()
        self.monitor.shutdown()
        self.provider.shutdown()


@pytest.fixture
def stuck() -> Iterator[Handle]:
    handle = Handle(HangingSource())
    try:
        yield handle
    finally:
        handle.close()


def sampler_threads() -> int:
    return sysgauge_threads().count("sysgauge-sampler")


def test_collect_returns_at_once_while_a_read_hangs(stuck: Handle) -> None:
    (hanging,) = stuck.hanging
    hanging.hang.set()
    wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
    durations = []
    names: set[str] = set()
    for _ in range(COLLECTS):
        started = time.perf_counter()
        data = stuck.reader.get_metrics_data()
        durations.append(time.perf_counter() - started)
        names |= metric_names(data)
    median, worst = statistics.median(durations), max(durations)
    record(
        "hung-source-collect",
        collects=COLLECTS,
        median_ms=round(median * 1000, 3),
        max_ms=round(worst * 1000, 3),
    )
    assert median < 0.050, f"median collect {median * 1000:.1f} ms with a hung source"
    assert worst < 0.5, f"slowest collect {worst * 1000:.1f} ms"
    assert "system.memory.usage" in names


def test_a_hung_read_delays_the_other_sources_by_at_most_hang_after(
    stuck: Handle, caplog: pytest.LogCaptureFixture
) -> None:
    (hanging,) = stuck.hanging
    sampler = stuck.monitor.sampler
    assert sampler.hang_after == INTERVAL / 2
    time.sleep(2 * INTERVAL)
    caplog.set_level(logging.INFO, logger="sysgauge")
    hanging.hang.set()
    wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
    hung_at = time.monotonic()
    wait_until(lambda: sampler.hung_sources() == ["hanging"], 2.0, "the hung read was never abandoned")
    abandoned_after = time.monotonic() - hung_at
    time.sleep(8 * INTERVAL)
    assert sampler_threads() == 2, "the stuck reader and its replacement"
    during = [sample for sample in stuck.samples if sample.time > hung_at]
    times = [sample.time for sample in stuck.samples]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # Every sample since the hang has memory, none the hung source (no stale value, no made-up one).
    assert len(during) >= 7
    assert all(MEMORY in sample.values and hanging_key(hanging) not in sample.values for sample in during)
    worst_gap = max(gaps)
    # One interval, plus at most hang_after for the tick the hang interrupted, plus scheduling slack.
    assert worst_gap < INTERVAL + sampler.hang_after + 0.1, gaps
    assert "system.memory.usage" in metric_names(stuck.reader.get_metrics_data())
    messages = [record.getMessage() for record in caplog.records]
    hung_warnings = [message for message in messages if "has taken" in message and "so far" in message]
    assert len(hung_warnings) == 1 and "source hanging" in hung_warnings[0]

    reads_before_release = hanging.reads
    hanging.release.set()
    wait_until(lambda: sampler.hung_sources() == [], 2.0, "the source was never handed back")
    wait_until(lambda: sampler_threads() == 1, 2.0, "the stuck reader did not end after its read returned")
    read_again = "the source was not read again"
    wait_until(lambda: hanging_key(hanging) in stuck.samples[-1].values, 3 * INTERVAL, read_again)
    assert hanging.reads > reads_before_release
    assert any("slow read of source hanging returned" in r.getMessage() for r in caplog.records)
    record(
        "hung-source-isolated",
        interval_s=INTERVAL,
        hang_after_s=sampler.hang_after,
        abandoned_after_s=round(abandoned_after, 3),
        samples_during_hang=len(during),
        longest_gap_s=round(worst_gap, 3),
    )


def test_two_sources_hung_at_once_leave_the_third_on_schedule() -> None:
    handle = Handle(HangingSource("first"), HangingSource("second"))
    first, second = handle.hanging
    sampler = handle.monitor.sampler
    try:
        first.hang.set()
        wait_until(lambda: sampler.hung_sources() == ["first"], 2.0, "the first hang was never abandoned")
        second.hang.set()
        wait_until(lambda: len(sampler.hung_sources()) == 2, 2.0, "the second hang was never abandoned")
        assert sampler_threads() == 3
        since = time.monotonic()
        time.sleep(6 * INTERVAL)
        during = [sample for sample in handle.samples if sample.time > since]
        assert len(during) >= 5 and all(MEMORY in sample.values for sample in during)
        first.release.set()
        second.release.set()
        wait_until(lambda: sampler_threads() == 1, 2.0, "the stuck readers did not end")
        wait_until(
            lambda: {hanging_key(first), hanging_key(second)} <= set(handle.samples[-1].values),
            3 * INTERVAL,
            "the sources were not read again",
        )
    finally:
        handle.close()


@pytest.mark.parametrize(
    ("interval", "at_least", "at_most", "first_sample"),
    # 2 s: set aside after hang_after (1 s), the others' first sample comes at once. One hour: hang_after is
    # 30 minutes, so the caller is let go after 1.5 s without a first sample.
    [(2.0, 0.9, 1.6, True), (3600.0, 1.4, 2.0, False)],
    ids=["2s", "1h"],
)
def test_start_does_not_wait_long_for_a_first_read_that_hangs(
    interval: float, at_least: float, at_most: float, first_sample: bool
) -> None:
    hanging = HangingSource()
    hanging.hang.set()
    started = time.monotonic()
    handle = Handle(hanging, interval=interval)
    took = time.monotonic() - started
    try:
        assert at_least < took < at_most, f"instrumenting took {took:.2f} s"
        assert handle.monitor.sampler.hung_sources() == (["hanging"] if first_sample else [])
        assert ("system.memory.usage" in metric_names(handle.reader.get_metrics_data())) is first_sample
        record("hung-first-read", interval_s=interval, start_s=round(took, 3))
    finally:
        handle.close()


@pytest.mark.parametrize("abandoned_first", [True, False], ids=["abandoned", "not-yet-abandoned"])
def test_shutdown_returns_and_the_hung_source_is_closed_once_its_read_returns(abandoned_first: bool) -> None:
    handle = Handle(HangingSource())
    (hanging,) = handle.hanging
    sampler = handle.monitor.sampler
    try:
        hanging.hang.set()
        wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
        if abandoned_first:
            wait_until(lambda: sampler.hung_sources() == ["hanging"], 2.0, "never abandoned")
        started = time.monotonic()
        handle.monitor.shutdown()
        took = time.monotonic() - started
        # The reader is joined for at most 1 s; a reader already abandoned is not waited for at all.
        assert took < (0.5 if abandoned_first else 1.5), f"shutdown took {took:.2f} s"
        assert sampler_threads() == 1, "the stuck reader stays until its read returns"
        assert hanging.closes == 0, "closed while a read was still inside it"
        assert not metric_names(handle.reader.get_metrics_data())
        hanging.release.set()
        wait_until(lambda: sampler_threads() == 0, 2.0, "the stuck reader did not end once read() returned")
        assert hanging.closes == 1 and not hanging.closed_during_read
        assert sampler.samples() == [], "a tick was recorded after shutdown"
        record("hung-source-shutdown", abandoned_first=abandoned_first, shutdown_s=round(took, 3))
    finally:
        handle.close()


def test_a_cpu_bound_python_thread_stretches_each_tick_but_ticks_go_on() -> None:
    """Documents today's behaviour: each file read in a tick gives up the GIL, and getting it back from a
    thread that never blocks takes up to the switch interval (5 ms), so a ~0.5 ms tick takes ~100+ ms."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    handle = instrument_system(
        provider, sources=["cpu", "memory", "process"], sampling_interval=3600, window=3600
    )
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(200))

    def tick_ms(count: int) -> list[float]:
        durations = []
        for _ in range(count):
            started = time.perf_counter()
            handle.sampler.tick()
            durations.append((time.perf_counter() - started) * 1000)
        return durations

    try:
        idle = tick_ms(20)
        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            contended = tick_ms(10)
        finally:
            stop.set()
            spinner.join()
        assert "process.cpu.time" in metric_names(reader.get_metrics_data())
    finally:
        handle.shutdown()
        provider.shutdown()
    record(
        "cpu-bound-thread-tick",
        idle_median_ms=round(statistics.median(idle), 2),
        contended_median_ms=round(statistics.median(contended), 1),
        contended_max_ms=round(max(contended), 1),
    )
    assert max(contended) < 2000, "a tick took longer than the default sampling interval"


def gpu_series(sample: Sample) -> bool:
    return any(name.startswith("hw.gpu.") for name, _ in sample.values)


def test_a_hung_nvml_call_leaves_the_host_sources_on_schedule(
    fake_nvml_library: FakeNvml, tmp_path: Path
) -> None:
    """The real NvidiaSource over the fake driver, whose queries of GPU 0 block while a file exists."""
    off_the_bus = tmp_path / "gpu0-off-the-bus"
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    with nvml_scenario(fake_nvml_library, two_gpus()):
        handle = instrument_system(
            provider, sources=["nvidia", "memory"], sampling_interval=INTERVAL, window=6 * INTERVAL
        )
    samples: list[Sample] = []
    handle.sampler.add_listener(samples.append)
    try:
        wait_until(lambda: bool(samples) and gpu_series(samples[-1]), 3.0, "no GPU reading before the hang")
        fake_nvml_library.set(f"dev.0.hang_while {off_the_bus}")
        off_the_bus.touch()
        hung_at = time.monotonic()
        wait_until(
            lambda: handle.sampler.hung_sources() == ["nvidia"], 3.0, "the NVML call was never abandoned"
        )
        time.sleep(6 * INTERVAL)
        during = [sample for sample in samples if sample.time > hung_at + handle.sampler.hang_after]
        assert len(during) >= 4
        assert all(MEMORY in sample.values and not gpu_series(sample) for sample in during)
        times = [sample.time for sample in samples]
        longest = max(later - earlier for earlier, later in itertools.pairwise(times))
        assert longest < INTERVAL + handle.sampler.hang_after + 0.1, times
        off_the_bus.unlink()
        wait_until(lambda: handle.sampler.hung_sources() == [], 3.0, "the NVML call never returned")
        wait_until(lambda: gpu_series(samples[-1]), 3 * INTERVAL, "the GPUs were not read again")
        record("hung-nvml-call", samples_during_hang=len(during), longest_gap_s=round(longest, 3))
    finally:
        if off_the_bus.exists():
            off_the_bus.unlink()
        handle.shutdown()
        provider.shutdown()
    assert nvml_users() == 0


def test_shutdown_during_a_hung_nvml_call_releases_nvml_once_the_call_returns(
    fake_nvml_library: FakeNvml, tmp_path: Path
) -> None:
    off_the_bus = tmp_path / "gpu0-off-the-bus"
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    with nvml_scenario(fake_nvml_library, two_gpus()):
        handle = instrument_system(provider, sources=["nvidia"], sampling_interval=INTERVAL, window=3.0)
    try:
        fake_nvml_library.set(f"dev.0.hang_while {off_the_bus}")
        off_the_bus.touch()
        wait_until(
            lambda: handle.sampler.hung_sources() == ["nvidia"], 3.0, "the NVML call was never abandoned"
        )
        started = time.monotonic()
        handle.shutdown()
        assert time.monotonic() - started < 0.5
        # nvmlShutdown while another thread is inside the driver would be unsafe: it waits for the call.
        assert nvml_users() == 1
        off_the_bus.unlink()
        wait_until(lambda: nvml_users() == 0, 3.0, "NVML was not released after the call returned")
        wait_until(lambda: sampler_threads() == 0, 3.0, "the stuck reader did not end")
    finally:
        if off_the_bus.exists():
            off_the_bus.unlink()
        handle.shutdown()
        provider.shutdown()
