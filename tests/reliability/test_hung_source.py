"""A source whose read() never returns (a stuck NFS statfs, a driver call that hangs).

What holds: the SDK's collection never waits for a source (callbacks only read the precomputed window).
What does not, today: every source of a handle is read by its one sampler thread, one after the other, so
a hung read() stops the ticks of all the handle's sources; their window drains and they report nothing
until the read returns. Only the OpenMetrics scrapes run on threads of their own (tests/sources/
test_openmetrics.py checks that a hung endpoint delays nothing). shutdown() gives up on the hung thread
after 1 s and returns; the daemon thread stays blocked until the read returns, then ends without writing.
The same single thread is why a CPU-bound Python thread in the program stretches every tick (last test).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import SystemMonitor, instrument_system
from sysgauge.options import resolve_options
from sysgauge.sources.memory import MemorySource
from tests.conftest import metric_names
from tests.reliability.helpers import HangingSource, record, wait_until

COLLECTS = 50


@pytest.fixture
def stuck() -> Iterator[tuple[SystemMonitor, HangingSource, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    hanging = HangingSource()
    memory = MemorySource(psutil)
    assert memory.probe() is None
    options = resolve_options({"sampling_interval": 0.05, "window": 0.6}, environ={})
    handle = SystemMonitor(provider, [hanging, memory], options)
    try:
        yield handle, hanging, reader
    finally:
        hanging.release.set()
        handle.shutdown()
        provider.shutdown()


def test_collect_returns_at_once_while_a_read_hangs(
    stuck: tuple[SystemMonitor, HangingSource, InMemoryMetricReader],
) -> None:
    _handle, hanging, reader = stuck
    time.sleep(0.2)
    hanging.hang.set()
    wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
    durations = []
    names: set[str] = set()
    for _ in range(COLLECTS):
        started = time.perf_counter()
        data = reader.get_metrics_data()
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
    assert "system.memory.usage" in names  # the window taken before the hang is still there


def test_a_hung_read_stops_the_ticks_of_every_source_of_that_handle(
    stuck: tuple[SystemMonitor, HangingSource, InMemoryMetricReader],
) -> None:
    """Documents today's behaviour (docs/reliability.md): one sampler thread reads all the sources."""
    handle, hanging, reader = stuck
    time.sleep(0.2)
    hanging.hang.set()
    wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
    ticks_at_hang = len(handle.sampler.samples())
    last_tick = handle.sampler.samples()[-1].time
    time.sleep(0.8)  # longer than the 0.6 s window
    assert handle.sampler.samples()[-1].time == last_tick, "a tick happened while a read() hung"
    # The memory source was not read either, and its window drained: no point rather than a stale one.
    assert "system.memory.usage" not in metric_names(reader.get_metrics_data())
    hanging.release.set()
    resumed = wait_until(lambda: handle.sampler.samples()[-1].time > last_tick, 2.0, "ticks never resumed")
    wait_until(lambda: "system.memory.usage" in metric_names(reader.get_metrics_data()), 2.0, "no data again")
    record("hung-source-stall", ticks_before_hang=ticks_at_hang, resumed_after_release_s=round(resumed, 3))


def test_shutdown_gives_up_on_a_hung_read_after_a_second() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    hanging = HangingSource()
    handle = SystemMonitor(provider, [hanging], resolve_options({"sampling_interval": 0.05}, environ={}))
    try:
        hanging.hang.set()
        wait_until(hanging.inside.is_set, 2.0, "the source never started hanging")
        thread = next(t for t in threading.enumerate() if t.name == "sysgauge-sampler" and t.is_alive())
        started = time.monotonic()
        handle.shutdown()
        took = time.monotonic() - started
        assert 0.9 < took < 1.5, f"shutdown took {took:.2f} s"
        assert thread.is_alive()  # still inside read(): a daemon thread, left behind for now
        assert not metric_names(reader.get_metrics_data())
        hanging.release.set()
        thread.join(2.0)
        assert not thread.is_alive(), "the sampler thread did not end once read() returned"
        assert handle.sampler.samples() == [], "a tick was recorded after shutdown"
        record("hung-source-shutdown", shutdown_s=round(took, 3))
    finally:
        hanging.release.set()
        provider.shutdown()


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
