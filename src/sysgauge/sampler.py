"""One background thread per handle: read every source once per tick into a bounded, time-stamped window.

Callbacks never do I/O: they ask `Sampler.aggregate()` for numbers computed from the window.
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

SeriesKey = tuple[str, Attributes]
# Per attribute set, the (time, value) points of one metric, oldest first.
Series = dict[Attributes, list[tuple[float, float]]]


class Sample(NamedTuple):
    time: float  # monotonic seconds
    values: dict[SeriesKey, float]


TickListener = Callable[[Sample], None]


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
        # Samples newer than `window`, plus the one just before it (the base of RATE metrics).
        # maxlen is a safety net; pruning by age keeps it far smaller.
        self._samples: collections.deque[Sample] = collections.deque(maxlen=int(window / interval) + 3)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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

    def start(self) -> None:
        """Take the first sample now, so the first export has data, then sample in the background."""
        self.tick()
        self._thread = threading.Thread(target=self._run, name="sysgauge-sampler", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 1.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._samples.clear()
            self._cache.clear()
        for source in self._sources:
            try:
                source.close()
            except Exception as exc:  # a source's cleanup must not stop the others'
                self._log.warning(
                    f"close:{source.name}:{exc!r}", "sysgauge: closing source %s failed: %r", source.name, exc
                )

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    def _run(self) -> None:
        next_deadline = self._clock() + self._interval
        while not self._stop.wait(max(0.0, next_deadline - self._clock())):
            self.tick()
            now = self._clock()
            next_deadline += self._interval
            if next_deadline <= now:
                # A tick overran (a slow source, a suspended VM): skip the missed slots, keep the phase.
                missed = int((now - next_deadline) // self._interval) + 1
                next_deadline += missed * self._interval

    def tick(self) -> None:
        """Read every source once and append one sample."""
        values: dict[SeriesKey, float] = {}
        for source in self._sources:
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
                continue
            for reading in readings:
                values[(reading.spec.name, reading.attributes)] = reading.value
        sample = Sample(self._clock(), values)
        with self._lock:
            if self._stop.is_set() and self._thread is not None:
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
        # The thread did not survive the fork. The child stays silent rather than double-reporting
        # the parent's host metrics; call instrument_system() in the child to monitor it (docs/decisions.md).
        self._lock = threading.Lock()
        self._forked = True
        self._stop.set()
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
