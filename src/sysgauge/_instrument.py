"""The only module that touches an OTel Meter: one observable instrument per declared metric name.

The SDK returns the existing instrument when a name is registered twice on one meter and keeps only the
first callback, so a second handle on the same provider (instrument_system after a shutdown, say) would
report nothing. Each instrument's callback therefore dispatches to every live handle registered for it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sysgauge._logonce import LogOnce
from sysgauge.metrics import InstrumentKind, MetricSpec
from sysgauge.sampler import Sampler
from sysgauge.sources.base import Attributes

_logger = logging.getLogger("sysgauge")
_log = LogOnce(_logger)

Callback = Callable[[CallbackOptions], Iterable[Observation]]


class _Dispatch:
    """The callback of one instrument: the observations of every live sampler registered for its name."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._entries: list[tuple[MetricSpec, weakref.ref[Sampler]]] = []
        self._dicts: dict[Attributes, dict[str, str | int]] = {}
        self._lock = threading.Lock()

    def add(self, spec: MetricSpec, sampler: Sampler) -> None:
        with self._lock:
            self._entries = [(s, ref) for s, ref in self._entries if _alive(ref)]
            self._entries.append((spec, weakref.ref(sampler)))

    def __call__(self, _options: CallbackOptions) -> Iterable[Observation]:
        # No I/O here: the SDK runs every callback serially under one lock.
        observations = []
        try:
            for spec, ref in self._entries:
                sampler = ref()
                if sampler is None or not sampler.running:
                    continue
                for value, attrs in sampler.aggregate(spec):
                    attributes = self._dicts.get(attrs)
                    if attributes is None:
                        attributes = dict(attrs)
                        if len(self._dicts) < 4096:
                            self._dicts[attrs] = attributes
                    observations.append(Observation(value, attributes))
        except Exception as exc:  # nothing may escape into the SDK's collection
            _log.warning(f"callback:{self._name}:{exc!r}", "sysgauge: %s skipped: %r", self._name, exc)
            return []
        return observations


def _alive(ref: weakref.ref[Sampler]) -> bool:
    sampler = ref()
    return sampler is not None and sampler.running


_DISPATCH: weakref.WeakKeyDictionary[Meter, dict[str, _Dispatch]] = weakref.WeakKeyDictionary()
_DISPATCH_LOCK = threading.Lock()


def register(meter: Meter, specs: Sequence[MetricSpec], sampler: Sampler) -> None:
    with _DISPATCH_LOCK:
        table = _DISPATCH.setdefault(meter, {})
    for spec in specs:
        with _DISPATCH_LOCK:
            dispatch = table.get(spec.name)
            created = dispatch is None
            if dispatch is None:
                dispatch = table[spec.name] = _Dispatch(spec.name)
        dispatch.add(spec, sampler)
        if not created:
            continue
        if spec.kind is InstrumentKind.GAUGE:
            meter.create_observable_gauge(spec.name, [dispatch], spec.unit, spec.description)
        elif spec.kind is InstrumentKind.COUNTER:
            meter.create_observable_counter(spec.name, [dispatch], spec.unit, spec.description)
        else:
            meter.create_observable_up_down_counter(spec.name, [dispatch], spec.unit, spec.description)
