"""The embedded default exporter: a compact table on the console, one block per export."""

from __future__ import annotations

import datetime
import sys
from typing import Any, TextIO

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from sysgauge import metrics as m
from sysgauge._format import human, short_attributes


class ConsoleTableExporter(MetricExporter):
    def __init__(self, stream: TextIO | None = None, window: float = 30.0) -> None:
        super().__init__()
        self._stream = stream
        self._window = window

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        stream = self._stream or sys.stdout
        try:
            table = render(metrics_data, self._window)
            if table and _is_terminal(stream):
                # On a terminal the table is redrawn in place (cursor home, clear) instead of scrolling.
                table = _CLEAR + table
            stream.write(table)
            stream.flush()
        except (OSError, ValueError):  # a closed pipe must not crash the exporter thread
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


# Attributes that enumerate the parts of one whole (modes, states, directions) become the cells of a row.
_PART_KEYS = frozenset(
    {
        m.CPU_MODE,
        m.SYSTEM_MEMORY_STATE,
        m.SYSTEM_PAGING_STATE,
        m.FILESYSTEM_STATE,
        m.DISK_IO_DIRECTION,
        m.NETWORK_IO_DIRECTION,
        m.CONTEXT_SWITCH_TYPE,
        m.HW_GPU_TASK,
        m.GPU_CLOCK,
        m.GPU_CLOCK_EVENT_REASON,
        m.ERROR_TYPE,
        m.HW_STATE,
    }
)
# Shown in the OTLP data, left out of the console for width: the mountpoint names the filesystem, hw.name
# ("gpu0") the GPU.
_CONSOLE_HIDDEN = frozenset(
    {
        m.FILESYSTEM_TYPE,
        m.FILESYSTEM_MODE,
        m.HW_ID,
        m.HW_VENDOR,
        m.HW_MODEL,
        m.HW_TYPE,
        m.HW_PARENT,
        m.GPU_INDEX,
        m.GPU_PCI_BUS_ID,
    }
)


_CLEAR = "\x1b[H\x1b[2J"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def render(metrics_data: MetricsData, window: float) -> str:
    rows: dict[tuple[str, str], list[str]] = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in getattr(metric.data, "data_points", ()):
                    value = getattr(point, "value", None)
                    if value is None:
                        continue
                    attributes = dict(point.attributes or {})
                    if m.FILESYSTEM_MOUNTPOINT in attributes:
                        attributes.pop(m.SYSTEM_DEVICE, None)
                    part = [str(v) for k, v in attributes.items() if k in _PART_KEYS]
                    key_attrs = {k: v for k, v in attributes.items() if k not in _PART_KEYS | _CONSOLE_HIDDEN}
                    cell = human(float(value), metric.unit or "")
                    cells = rows.setdefault((metric.name, short_attributes(key_attrs)), [])
                    cells.append(f"{' '.join(part)} {cell}" if part else cell)
    if not rows:
        return ""
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    name_width = max(len(name) for name, _ in rows)
    attr_width = max(len(attrs) for _, attrs in rows)
    lines = [f"── sysgauge {stamp} · last {window:g} s " + "─" * 30]
    for (name, attrs), cells in rows.items():
        lines.append(f"{name:<{name_width}}  {attrs:<{attr_width}}  {'   '.join(cells)}".rstrip())
    return "\n".join(lines) + "\n"
