"""Read every source once per tick into a bounded, time-stamped window, in the background.

Callbacks never do I/O: they ask `Sampler.aggregate()` for numbers computed from the window.

Threads per handle: one reader ("sysgauge-sampler") reads the sources one after the other, and a watchdog
("sysgauge-watchdog") replaces the reader when one source's read() has gone on for `hang_after` seconds (a
statvfs on a dead NFS mount, an NVML call on a GPU that fell off the bus). The stuck reader is abandoned:
it records nothing, and when its read returns it hands the source back and ends. Until then the new reader
skips that source, so the others keep their schedule (docs/reliability.md, section 3).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

from sysgauge._logonce import LogOnce
from sysgauge.metrics import Aggregation, MetricSpec
from sysgauge.sources.base import Attributes, Source

_logger = logging.getLogger("sysgauge")

# A read is given half an interval before it counts as hung, so the other sources' next tick is late by
# at most half an interval; never less than this, so that a tick stretched by a program holding the GIL
# (up to ~0.2 s, docs/reliability.md) is not mistaken for a hang.
MIN_HANG_AFTER_S = 0.25

SeriesKey = tuple[str, Attributes]
# Per attribute set, the (time, value) points of one metric, oldest first.
Series = dict[Attributes, list[tuple[float, float]]]


class Sample(NamedTuple):
    time: float  # monotonic seconds
    values: dict[SeriesKey, float]


TickListener = Callable[[Sample], None]


class _Reader:
    """One reader thread and what the watchdog needs to know about it."""

    def __init__(self, next_tick: float) -> None:
        self.thread: threading.Thread | None = None
        self.next_tick = next_tick
        # The read in progress and when it began; a new tuple per read, so the watchdog can tell two
        # reads of the same source apart.
        self.current: tuple[Source, float] | None = None
        self.abandoned = False
        # The tick in progress: values read so far and the sources they came from. A replacement reader
        # takes them over, so a read that was only slow (a program holding the GIL) wastes no other read.
        self.values: dict[SeriesKey, float] = {}
        self.done: set[int] = set()


class Sampler:
    def __init__(
        self,
        sources: Sequence[Source],
        interval: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources = list(sources)
        self._interval = interval
        self._window = window
        self._clock = clock
        self.hang_after = max(interval / 2, MIN_HANG_AFTER_S)
        # Samples newer than `window`, plus the one just before it (the base of RATE metrics).
        # maxlen is a safety net; pruning by age keeps it far smaller.
        self._samples: collections.deque[Sample] = collections.deque(maxlen=int(window / interval) + 3)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False  # shut down: silent, no sample appended
        self._closing_sources = False  # from now on a hung source's reader closes it when its read returns
        # Guards the hand-over between a reader, the watchdog and shutdown: who owns which source.
        self._handoff = threading.Lock()
        self._reader: _Reader | None = None
        self._watchdog: threading.Thread | None = None
        # Sources whose read() is still running on an abandoned reader, by id (sources need not be hashable).
        self._hung: dict[int, Source] = {}
        self._first_tick = threading.Event()
        self._cache: dict[tuple[str, Aggregation], list[tuple[float, Attributes]]] = {}
        self._cache_stamp: tuple[int, float] = (-1, 0.0)
        self._grouped: dict[str, Series] = {}
        self._generation = 0
        self._listeners: list[TickListener] = []
        self._log = LogOnce(_logger)
        self._forked = False
        _LIVE_SAMPLERS.add(self)

    @property
    def interval(self) -> float:
        return self._interval

    @property
    def window(self) -> float:
        return self._window

    def add_listener(self, listener: TickListener) -> None:
        """Call `listener(sample)` from the sampler thread after every tick (the run summary uses it)."""
        self._listeners.append(listener)

    def hung_sources(self) -> list[str]:
        """Names of the sources skipped because a read of theirs has not returned yet."""
        with self._handoff:
            return [source.name for source in self._hung.values()]

    def start(self) -> None:
        """Start sampling; wait for the first sample (the first export has data) but not for a hung read."""
        with self._handoff:
            self._start_reader(self._clock())
        self._watchdog = threading.Thread(target=self._watch, name="sysgauge-watchdog", daemon=True)
        self._watchdog.start()
        # A hung first read is abandoned after hang_after and the next reader takes the sample at once;
        # with long intervals (a long hang_after) the caller is not held that long: the sample comes later.
        self._first_tick.wait(min(self.hang_after, 1.0) + 0.5)

    def last_tick(self, timeout: float = 1.0) -> None:
        """Stop sampling in the background and take one last sample on this thread (for a final export)."""
        self._stop_threads(timeout)
        self._tick(None)

    def shutdown(self, timeout: float = 1.0) -> None:
        with self._lock:
            self._closed = True
        self._stop_threads(timeout)
        with self._handoff:
            self._closing_sources = True
            # A source still inside read() is closed by the thread that reads it, once the read returns.
            busy = set(self._hung)
        with self._lock:
            self._samples.clear()
            self._cache.clear()
        for source in self._sources:
            if id(source) not in busy:
                self._close(source)

    def _stop_threads(self, timeout: float) -> None:
        self._stop.set()
        with self._handoff:
            reader = self._reader  # final: the watchdog starts no reader once _stop is set
        current = threading.current_thread()
        if reader is not None and reader.thread is not None and reader.thread is not current:
            reader.thread.join(timeout)
        if self._watchdog is not None and self._watchdog is not current:
            self._watchdog.join(timeout)
        if reader is not None:
            with self._handoff:
                if reader.current is not None:
                    self._abandon(reader, reader.current[0])

    def _close(self, source: Source) -> None:
        try:
            source.close()
        except Exception as exc:  # a source's cleanup must not stop the others'
            self._log.warning(
                f"close:{source.name}:{exc!r}", "sysgauge: closing source %s failed: %r", source.name, exc
            )

    @property
    def running(self) -> bool:
        return not self._closed

    def tick(self) -> None:
        """Read every source once, on the caller's thread, and append one sample."""
        self._tick(None)

    def _start_reader(self, first_tick: float, takes_over: _Reader | None = None) -> None:
        # Called with _handoff held.
        reader = _Reader(first_tick)
        if takes_over is not None:  # it is inside read(), not touching its tick's values
            reader.values, reader.done = dict(takes_over.values), set(takes_over.done)
        thread = threading.Thread(target=self._run, args=(reader,), name="sysgauge-sampler", daemon=True)
        reader.thread = thread
        self._reader = reader
        reader.thread.start()

    def _run(self, reader: _Reader) -> None:
        interval = self._interval
        while not self._stop.wait(max(0.0, reader.next_tick - self._clock())):
            self._tick(reader)
            if reader.abandoned:
                return
            self._first_tick.set()
            now = self._clock()
            next_tick = reader.next_tick + interval
            if next_tick <= now:
                # A tick overran (a slow source, a suspended VM): skip the missed slots, keep the phase.
                next_tick += (int((now - next_tick) // interval) + 1) * interval
            reader.next_tick = next_tick

    def _watch(self) -> None:
        hang_after = self.hang_after
        while True:
            reader = self._reader
            if reader is None:
                return
            current = reader.current
            if current is not None:
                wait = current[1] + hang_after - self._clock()
            else:
                # Idle: the earliest a read could be overdue is hang_after past the next tick.
                wait = reader.next_tick + hang_after - self._clock()
                if wait <= 0:
                    wait = hang_after  # the reader is late to start (the GIL); not a hung read
            if wait > 0:
                if self._stop.wait(wait):
                    return
                continue
            assert current is not None
            source, since = current
            with self._handoff:
                if self._stop.is_set():
                    return
                if reader.current is not current:
                    continue  # it returned meanwhile
                self._abandon(reader, source)
                self._start_reader(self._clock(), takes_over=reader)
            self._log.warning(
                f"hung:{source.name}",
                # Also seen, rarely, when the program's threads hold the GIL for long: hence no "hung".
                "sysgauge: a read of source %s has taken %.2f s so far; the other sources go on without "
                "it until it returns",
                source.name,
                self._clock() - since,
            )

    def _abandon(self, reader: _Reader, source: Source) -> None:
        # Called with _handoff held.
        reader.abandoned = True
        self._hung[id(source)] = source

    def _hand_back(self, source: Source) -> None:
        with self._handoff:
            self._hung.pop(id(source), None)
            closing = self._closing_sources
        if closing:
            self._close(source)
        else:
            message = "sysgauge: the slow read of source %s returned; it is read again"
            self._log.info(f"back:{source.name}", message, source.name)

    def _tick(self, reader: _Reader | None) -> None:
        values: dict[SeriesKey, float] = reader.values if reader is not None else {}
        done = reader.done if reader is not None else set()
        for source in self._sources:
            if id(source) in self._hung or id(source) in done:
                continue
            if reader is not None:
                if self._stop.is_set():
                    return  # stopping: the caller of last_tick() or shutdown() reads or closes the rest
                reader.current = (source, self._clock())
            try:
                readings = source.read()
            except Exception as exc:
                # A broken source drops only its own readings for this tick.
                self._log.warning(
                    f"read:{source.name}:{type(exc).__name__}:{exc}",
                    "sysgauge: source %s failed, its readings are skipped: %r",
                    source.name,
                    exc,
                )
                readings = []
            if reader is not None:
                with self._handoff:
                    reader.current = None
                    abandoned = reader.abandoned
                if abandoned:
                    self._hand_back(source)
                    return
                done.add(id(source))
            for reading in readings:
                values[(reading.spec.name, reading.attributes)] = reading.value
        if reader is not None:
            reader.values, reader.done = {}, set()
        sample = Sample(self._clock(), values)
        with self._lock:
            if self._closed or (reader is not None and reader.abandoned):
                return
            self._samples.append(sample)
            self._prune(sample.time)
            self._generation += 1
        for listener in self._listeners:
            try:
                listener(sample)
            except Exception as exc:
                self._log.warning(f"listener:{exc!r}", "sysgauge: tick listener failed: %r", exc)

    def _prune(self, now: float) -> None:
        horizon = now - self._window
        # Keep exactly one sample at or before the horizon as the base for rates.
        while len(self._samples) >= 2 and self._samples[1].time <= horizon:
            self._samples.popleft()

    def aggregate(self, spec: MetricSpec) -> list[tuple[float, Attributes]]:
        """The window's value of every series of `spec`, as (value, attributes) pairs."""
        now = self._clock()
        with self._lock:
            if self._forked or not self._samples:
                return []
            generation, computed_at = self._cache_stamp
            # Samples only change at ticks, so one grouping serves every callback of a collection;
            # it is rebuilt after a tick, or when time alone may have pushed samples out of the window.
            if generation != self._generation or now - computed_at > self._interval:
                self._grouped = _group(self._samples)
                self._cache.clear()
                self._cache_stamp = (self._generation, now)
            key = (spec.series, spec.aggregation)
            cached = self._cache.get(key)
            if cached is None:
                cached = _aggregate(spec.aggregation, self._grouped.get(spec.series, {}), now - self._window)
                self._cache[key] = cached
            return cached

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def _after_fork_in_child(self) -> None:
        # The threads did not survive the fork. The child stays silent rather than double-reporting
        # the parent's host metrics; call instrument_system() in the child to monitor it (docs/decisions.md).
        self._lock = threading.Lock()
        self._handoff = threading.Lock()
        self._forked = True
        self._closed = True
        self._stop.set()
        self._reader = None
        self._hung.clear()
        self._samples.clear()
        self._cache.clear()


def _group(samples: collections.deque[Sample]) -> dict[str, Series]:
    grouped: dict[str, Series] = {}
    for sample in samples:
        t = sample.time
        for (metric, attrs), value in sample.values.items():
            series = grouped.get(metric)
            if series is None:
                series = grouped[metric] = {}
            points = series.get(attrs)
            if points is None:
                series[attrs] = [(t, value)]
            else:
                points.append((t, value))
    return grouped


def _aggregate(how: Aggregation, series: Series, horizon: float) -> list[tuple[float, Attributes]]:
    out: list[tuple[float, Attributes]] = []
    for attrs, points in series.items():
        if points[-1][0] <= horizon:
            continue  # this series stopped reporting before the window began
        if how is Aggregation.RATE:
            # From the base sample (the one just before the window) to the newest.
            (t0, v0), (t1, v1) = points[0], points[-1]
            if t1 - t0 <= 0 or v1 < v0:
                continue  # one reading only, or the counter went backwards (reset): no honest rate
            out.append(((v1 - v0) / (t1 - t0), attrs))
            continue
        inside = [v for t, v in points if t > horizon]
        if how is Aggregation.LAST:
            out.append((inside[-1], attrs))
        elif how is Aggregation.MAX:
            out.append((max(inside), attrs))
        else:
            out.append((sum(inside) / len(inside), attrs))
    return out


_LIVE_SAMPLERS: weakref.WeakSet[Sampler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sampler in list(_LIVE_SAMPLERS):
        sampler._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
