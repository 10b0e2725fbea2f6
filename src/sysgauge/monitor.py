"""The handle `instrument_system` returns: owns one sampler and the instruments fed from it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import psutil
from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.semconv.schemas import Schemas

from sysgauge._instrument import register
from sysgauge._version import __version__
from sysgauge.metrics import SPECS_BY_NAME, MetricSpec
from sysgauge.options import SOURCE_NAMES, Options, resolve_options
from sysgauge.sampler import Sampler
from sysgauge.sources import build_source
from sysgauge.sources.base import Source

_logger = logging.getLogger("sysgauge")

METER_NAME = "sysgauge"
SCHEMA_URL = Schemas.V1_44_0.value


class SystemMonitor:
    """Samples its sources in the background and feeds the observable instruments it registered.

    Build one with `instrument_system()`; tests and embedders may pass their own `Source` objects.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        sources: Sequence[Source],
        options: Options,
    ) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, __version__, schema_url=SCHEMA_URL)
        self.options = options
        self.sources = list(sources)
        self.sampler = Sampler(self.sources, options.sampling_interval, options.window)
        self.specs = _specs_for(self.sources, options.peaks)
        self._lock = threading.Lock()
        self._closed = False
        # OTEL_SDK_DISABLED=true, or a provider already shut down: nothing would ever be collected.
        self.enabled = not isinstance(meter, NoOpMeter)
        self._meter = meter
        self._registered = {spec.name for spec in self.specs}
        if self.enabled:
            register(meter, self.specs, self.sampler)
            if any(getattr(source, "dynamic", False) for source in self.sources):
                self.sampler.add_listener(self._register_new_specs)
            self.sampler.start()
        else:
            self.sampler.shutdown()

    def _register_new_specs(self, _sample: object) -> None:
        # Scraped endpoints reveal their metric names only when they answer: instruments come as they do.
        new = [
            spec
            for source in self.sources
            if getattr(source, "dynamic", False)
            for spec in source.specs()
            if spec.name not in self._registered
        ]
        if new:
            self._registered.update(spec.name for spec in new)
            self.specs.extend(new)
            register(self._meter, new, self.sampler)

    def shutdown(self) -> None:
        """Stop sampling; the instruments report nothing from now on. Idempotent; joins within 1 s."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.sampler.shutdown(timeout=1.0)

    def __enter__(self) -> SystemMonitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()


def _specs_for(sources: Sequence[Source], peaks: Sequence[str]) -> list[MetricSpec]:
    # One instrument per name: an NVIDIA and an AMD GPU both report hw.gpu.utilization, through one callback
    # (the window groups samples by metric name, whichever source read them).
    specs: list[MetricSpec] = []
    seen: set[str] = set()
    for source in sources:
        for spec in source.specs():
            if spec.name not in seen:
                seen.add(spec.name)
                specs.append(spec)
    present = {spec.name for spec in specs}
    specs.extend(SPECS_BY_NAME[name].peak() for name in peaks if name in present)
    return specs


def instrument_system(meter_provider: MeterProvider | None = None, **options: Any) -> SystemMonitor:
    """Report this machine's and this process tree's vital signs as OTel metrics on `meter_provider`.

    Samples every `sampling_interval` seconds (2) in the background; each export reports the
    last `window` seconds (30): gauges as the mean, counters as the latest cumulative value. Options
    and their SYSGAUGE_* variables are listed in the README. Raises ValueError for a bad option.
    """
    resolved = resolve_options(options)
    if resolved.pid is not None and not psutil.pid_exists(resolved.pid):
        raise ValueError(f"pid={resolved.pid}: no such process")
    sources = []
    for name in resolved.sources or SOURCE_NAMES:
        source = build_source(name, resolved)
        reason = source.probe()
        if reason is None:
            sources.append(source)
        elif resolved.sources is not None:
            _logger.warning("sysgauge: source %s is not available: %s", name, reason)
    try:
        return SystemMonitor(meter_provider, sources, resolved)
    except BaseException:
        # Probes opened things (NVML, event threads, tool pollers): a failed start must not leak them.
        for source in sources:
            try:
                source.close()
            except Exception:
                pass
        raise
