"""sysgauge: the vital signs of the machine and of your process tree, as OpenTelemetry metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sysgauge._version import __version__
from sysgauge.monitor import SystemMonitor, instrument_system

if TYPE_CHECKING:
    from sysgauge.instrumentor import SystemMetricsInstrumentor
    from sysgauge.spans import SystemMetricsSpanProcessor

__all__ = [
    "SystemMetricsInstrumentor",
    "SystemMetricsSpanProcessor",
    "SystemMonitor",
    "__version__",
    "instrument_system",
]


def __getattr__(name: str) -> Any:
    # opentelemetry-instrumentation is only needed by auto-instrumentation; import it on first use.
    if name == "SystemMetricsInstrumentor":
        from sysgauge.instrumentor import SystemMetricsInstrumentor

        return SystemMetricsInstrumentor
    if name == "SystemMetricsSpanProcessor":
        from sysgauge.spans import SystemMetricsSpanProcessor

        return SystemMetricsSpanProcessor
    raise AttributeError(f"module 'sysgauge' has no attribute {name!r}")
