from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from sysgauge import metrics as m
from sysgauge.metrics import Aggregation, InstrumentKind, MetricSpec
from sysgauge.sampler import Sample, Sampler
from sysgauge.sources.base import Reading

GAUGE = MetricSpec("test.gauge", InstrumentKind.GAUGE, "1", "", (), "test", Aggregation.MEAN)
COUNTER = MetricSpec("test.counter", InstrumentKind.COUNTER, "s", "", (), "test", Aggregation.LAST)
RATE = MetricSpec("test.rate", InstrumentKind.GAUGE, "1", "", (), "test", Aggregation.RATE)
PEAK = MetricSpec("test.peak", InstrumentKind.GAUGE, "1", "", (), "test", Aggregation.MAX, reads="test.gauge")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A source whose next readings the test sets; `fail` makes read() raise."""

    name = "scripted"

    def __init__(self) -> None:
        self.next: list[Reading] = []
        self.fail: Exception | None = None
        self.reads = 0
        self.closed = False

    def probe(self) -> str | None:
        return None

    def specs(self) -> tuple[MetricSpec, ...]:
        return (GAUGE, COUNTER, RATE)

    def read(self) -> list[Reading]:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return list(self.next)

    def close(self) -> None:
        self.closed = True


def values(sampler: Sampler, spec: MetricSpec) -> list[float]:
    return [v for v, _ in sampler.aggregate(spec)]


def feed(
    sampler: Sampler, source: Scripted, clock: Clock, gauge: float, counter: float, step: float = 2.0
) -> None:
    source.next = [Reading(GAUGE, gauge), Reading(COUNTER, counter), Reading(RATE, counter)]
    sampler.tick()
    clock.now += step


def test_gauge_is_window_mean_counter_is_latest_rate_is_delta_over_time() -> None:
    clock, source = Clock(), Scripted()
    sampler = Sampler([source], interval=2.0, window=6.0, clock=clock)
    for i, gauge in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):
        feed(sampler, source, clock, gauge, counter=3.0 * i)
    clock.now -= 2.0  # collect right at the last tick (t=108): window (102, 108] holds 20..50
    assert values(sampler, GAUGE) == [pytest.approx((30 + 40 + 50) / 3)]
    assert values(sampler, PEAK) == [50.0]
    assert values(sampler, COUNTER) == [12.0]
    # The base is the last sample at or before the window start (t=102, counter 3); newest t=108, 12.
    assert values(sampler, RATE) == [pytest.approx((12.0 - 3.0) / 6.0)]


def test_empty_window_yields_no_point_and_stale_samples_expire() -> None:
    clock, source = Clock(), Scripted()
    sampler = Sampler([source], interval=2.0, window=6.0, clock=clock)
    assert values(sampler, GAUGE) == []
    feed(sampler, source, clock, 1.0, 1.0)
    assert values(sampler, GAUGE) == [1.0]
    assert values(sampler, RATE) == []  # one reading: no rate rather than an invented one
    clock.now += 10.0  # the sampler stalled: nothing newer than the window
    assert values(sampler, GAUGE) == []
    assert values(sampler, COUNTER) == []


def test_counter_reset_gives_no_rate() -> None:
    clock, source = Clock(), Scripted()
    sampler = Sampler([source], interval=1.0, window=5.0, clock=clock)
    feed(sampler, source, clock, 0, 100.0, step=1.0)
    feed(sampler, source, clock, 0, 5.0, step=1.0)
    assert values(sampler, RATE) == []


def test_window_stays_bounded_over_many_ticks() -> None:
    clock, source = Clock(), Scripted()
    sampler = Sampler([source], interval=0.5, window=3.0, clock=clock)
    for i in range(5000):
        feed(sampler, source, clock, float(i), float(i), step=0.5)
    # 3 s / 0.5 s = 6 samples inside, plus the base sample just before the window.
    assert len(sampler.samples()) <= 7


def test_a_failing_source_drops_only_its_readings_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, broken, healthy = Clock(), Scripted(), Scripted()
    broken.fail = RuntimeError("driver gone")
    healthy.next = [Reading(GAUGE, 7.0)]
    sampler = Sampler([broken, healthy], interval=1.0, window=5.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="sysgauge"):
        for _ in range(5):
            sampler.tick()
            clock.now += 1
    assert values(sampler, GAUGE) == [7.0]
    messages = [r.getMessage() for r in caplog.records if "driver gone" in r.getMessage()]
    assert len(messages) == 1 and "scripted" in messages[0]


def test_first_sample_is_taken_before_start_returns_and_shutdown_joins_fast() -> None:
    source = Scripted()
    source.next = [Reading(GAUGE, 1.0)]
    sampler = Sampler([source], interval=5.0, window=30.0)
    sampler.start()
    assert source.reads == 1 and values(sampler, GAUGE) == [1.0]
    began = time.monotonic()
    sampler.shutdown()
    sampler.shutdown()  # idempotent
    assert time.monotonic() - began < 1.0
    assert not any(t.name.startswith("sysgauge-") and t.is_alive() for t in threading.enumerate())
    assert source.closed
    assert values(sampler, GAUGE) == []


class Slow(Scripted):
    """Each read takes `seconds` (only the first one with once=True: delayed, say by the GIL, not hung)."""

    def __init__(self, seconds: float, once: bool = False) -> None:
        super().__init__()
        self.seconds = seconds
        self.once = once

    def read(self) -> list[Reading]:
        if not (self.once and self.reads):
            time.sleep(self.seconds)
        return super().read()


def test_a_slow_read_shorter_than_hang_after_is_not_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    source = Slow(0.1)
    source.next = [Reading(GAUGE, 1.0)]
    sampler = Sampler([source], interval=0.2, window=1.0)
    assert sampler.hang_after == 0.25  # the floor, not half the interval
    sampler.start()
    try:
        time.sleep(1.0)
        assert sampler.hung_sources() == []
        assert [t.name for t in threading.enumerate()].count("sysgauge-sampler") == 1
        assert source.reads >= 4
    finally:
        sampler.shutdown()
    assert not [r for r in caplog.records if r.name == "sysgauge"]


def test_background_ticks_follow_a_monotonic_schedule() -> None:
    source = Scripted()
    source.next = [Reading(GAUGE, 1.0)]
    sampler = Sampler([source], interval=0.05, window=1.0)
    sampler.start()
    time.sleep(0.53)
    sampler.shutdown()
    # 1 synchronous + ~10 scheduled; generous bounds for a loaded 2-core CI machine.
    assert 6 <= source.reads <= 13


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_forked_child_stays_silent_and_parent_keeps_sampling() -> None:
    source = Scripted()
    source.next = [Reading(GAUGE, 1.0)]
    sampler = Sampler([source], interval=0.05, window=1.0)
    sampler.start()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running atexit handlers
        os.close(read)
        seen = values(sampler, GAUGE)
        os.write(write, b"silent" if seen == [] and not sampler.running else b"reports")
        os._exit(0)
    os.close(write)
    verdict = os.read(read, 100)
    os.waitpid(pid, 0)
    assert verdict == b"silent"
    assert values(sampler, GAUGE) == [1.0]
    sampler.shutdown()


def test_peak_spec_reads_its_gauge() -> None:
    peak = m.PROCESS_MEMORY_USAGE.peak()
    assert peak.name == "sysgauge.peak.process.memory.usage"
    assert peak.series == "process.memory.usage"
    with pytest.raises(ValueError, match="no peak"):
        m.PROCESS_CPU_TIME.peak()


def test_a_replacement_reader_takes_over_the_tick_without_reading_any_source_twice() -> None:
    before, slow, after = Scripted(), Slow(0.4, once=True), Scripted()
    before.next, slow.next, after.next = [Reading(GAUGE, 1.0)], [Reading(COUNTER, 2.0)], [Reading(RATE, 3.0)]
    sampler = Sampler([before, slow, after], interval=0.5, window=5.0)
    samples: list[Sample] = []
    sampler.add_listener(samples.append)
    sampler.start()  # the first read of `slow` outlasts hang_after (0.25 s)
    try:
        first = samples[0]
        assert (before.reads, after.reads) == (1, 1), "a source of the interrupted tick was read again"
        assert set(first.values) == {("test.gauge", ()), ("test.rate", ())}
        deadline = time.monotonic() + 3
        while len(samples) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert ("test.counter", ()) in samples[1].values, "the slow source was not read again"
    finally:
        sampler.shutdown()
