"""`opentelemetry-instrument` support: the `sysgauge` entry point in group opentelemetry_instrumentor."""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from sysgauge.monitor import SystemMonitor, instrument_system

# Merely installing sysgauge turns this on in every auto-instrumented process, and every process on a
# host would then report the same system.* series. So by default only the process's own tree is
# reported; SYSGAUGE_SOURCES (or sources=) opts into host sources (docs/decisions.md).
AUTO_DEFAULT_SOURCES = ("process",)


class SystemMetricsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """`SystemMetricsInstrumentor().instrument(meter_provider=..., **options)`; `uninstrument()` stops it."""

    _monitor: SystemMonitor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        meter_provider = kwargs.pop("meter_provider", None)
        if "sources" not in kwargs and "SYSGAUGE_SOURCES" not in os.environ:
            kwargs["sources"] = AUTO_DEFAULT_SOURCES
        self._monitor = instrument_system(meter_provider, **kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        if self._monitor is not None:
            self._monitor.shutdown()
            self._monitor = None
