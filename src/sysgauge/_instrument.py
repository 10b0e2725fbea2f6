"""The only module that touches an OTel Meter: one observable instrument per declared metric."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sysgauge._logonce import LogOnce
from sysgauge.metrics import InstrumentKind, MetricSpec
from sysgauge.sampler import Sampler
from sysgauge.sources.base import Attributes

_logger = logging.getLogger("sysgauge")
_log = LogOnce(_logger)

Callback = Callable[[CallbackOptions], Iterable[Observation]]


def register(meter: Meter, specs: Sequence[MetricSpec], sampler: Sampler) -> None:
    for spec in specs:
        callback = _callback(spec, sampler)
        if spec.kind is InstrumentKind.GAUGE:
            meter.create_observable_gauge(spec.name, [callback], spec.unit, spec.description)
        elif spec.kind is InstrumentKind.COUNTER:
            meter.create_observable_counter(spec.name, [callback], spec.unit, spec.description)
        else:
            meter.create_observable_up_down_counter(spec.name, [callback], spec.unit, spec.description)


def _callback(spec: MetricSpec, sampler: Sampler) -> Callback:
    dicts: dict[Attributes, dict[str, str | int]] = {}

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        # No I/O here: the SDK runs every callback serially under one lock.
        try:
            if not sampler.running:
                return []
            observations = []
            for value, attrs in sampler.aggregate(spec):
                attributes = dicts.get(attrs)
                if attributes is None:
                    attributes = dict(attrs)
                    if len(dicts) < 4096:
                        dicts[attrs] = attributes
                observations.append(Observation(value, attributes))
            return observations
        except Exception as exc:  # nothing may escape into the SDK's collection
            _log.warning(f"callback:{spec.name}:{exc!r}", "sysgauge: %s skipped: %r", spec.name, exc)
            return []

    return observe
