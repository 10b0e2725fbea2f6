"""System metrics on traces: what each measured span cost the machine, as attributes on the span.

The OTel SDK (1.45) freezes a span before any processor sees its end, so this processor decorates the
processors it is given: it measures the span and hands them a copy with the attributes added. Route the
exporting processor through it:

    tracer_provider.add_span_processor(SystemMetricsSpanProcessor(monitor, BatchSpanProcessor(exporter)))

Counters (CPU time, GPU energy) are read at span start and end, cheaply; means and peaks come from the
sampler's samples inside the span. docs/spans.md says what is exact and what is not.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.monitor import SystemMonitor

_logger = logging.getLogger("sysgauge")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MAX_OPEN_SPANS = 10_000


@dataclass
class _Start:
    monotonic: float
    cpu: dict[int, float]  # pid -> CPU seconds (the own process's includes its reaped children)
    energy: dict[str, float]  # GPU UUID -> J


class SystemMetricsSpanProcessor(SpanProcessor):
    """Measures root spans (and spans chosen by name or attribute) and passes annotated copies on.

    Args:
        monitor: the handle from `instrument_system`, whose sampler and sources are used.
        *processors: where spans go next (e.g. a BatchSpanProcessor with your exporter).
        roots: measure spans without a local parent (default True).
        names: also measure spans whose name fully matches this regular expression.
        attribute: also measure spans started with this attribute set to True.
    """

    def __init__(
        self,
        monitor: SystemMonitor,
        *processors: SpanProcessor,
        roots: bool = True,
        names: str | None = None,
        attribute: str = "sysgauge.measure",
    ) -> None:
        self._monitor = monitor
        self._processors = processors
        self._roots = roots
        self._names = re.compile(names) if names else None
        self._attribute = attribute
        self._open: OrderedDict[int, _Start] = OrderedDict()
        self._lock = threading.Lock()
        self._log = LogOnce(_logger)
        sources = {source.name: source for source in monitor.sources}
        self._process: Any = sources.get("process")
        self._nvidia: Any = sources.get("nvidia")
        self._own_pid = os.getpid()

    # --- the SpanProcessor interface -----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._selected(span):
            try:
                start = _Start(time.monotonic(), self._cpu(), self._energy())
            except Exception as exc:  # measuring must never break tracing
                self._log.warning(f"start:{exc!r}", "sysgauge: span measurement skipped: %r", exc)
            else:
                with self._lock:
                    self._open[span.context.span_id] = start
                    if len(self._open) > _MAX_OPEN_SPANS:  # spans that never end must not grow memory
                        self._open.popitem(last=False)
        for processor in self._processors:
            processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        for processor in self._processors:
            processor._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        # A lock-free pop (one C call under the GIL): this runs for every span, measured or not.
        start = self._open.pop(context.span_id, None) if context is not None and self._open else None
        if start is not None:
            try:
                span = self._annotated(span, start)
            except Exception as exc:
                self._log.warning(f"end:{exc!r}", "sysgauge: span measurement skipped: %r", exc)
        for processor in self._processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._processors)

    # --- measuring -----------------------------------------------------------------------------------

    def _selected(self, span: Span) -> bool:
        # The common case (a child span, not asked for) costs two attribute reads.
        if self._roots and (span.parent is None or span.parent.is_remote):
            return True
        attributes = span.attributes
        if attributes and attributes.get(self._attribute) is True:
            return True
        return self._names is not None and self._names.fullmatch(span.name) is not None

    def _cpu(self) -> dict[int, float]:
        pids = self._process.last_pids if self._process is not None else (self._own_pid,)
        out: dict[int, float] = {}
        for pid in pids:
            if pid == self._own_pid:
                times = os.times()  # one syscall; includes the children we have reaped
                out[pid] = times.user + times.system + times.children_user + times.children_system
            else:
                seconds = _stat_cpu(pid)
                if seconds is not None:
                    out[pid] = seconds
        return out

    def _energy(self) -> dict[str, float]:
        if self._nvidia is None:
            return {}
        return dict(self._nvidia.energy_joules())

    def _annotated(self, span: ReadableSpan, start: _Start) -> ReadableSpan:
        end_monotonic = time.monotonic()
        cpu_end = self._cpu()
        # Members alive at both ends count their difference; a member gone at the end was reaped by us
        # (its whole life is now in our children's time), so its start value is taken back out.
        used = sum(value - start.cpu.get(pid, 0.0) for pid, value in cpu_end.items())
        used -= sum(value for pid, value in start.cpu.items() if pid not in cpu_end)
        used = max(0.0, used)
        duration = (span.end_time or 0) - (span.start_time or 0)
        seconds = duration / 1e9 if duration > 0 else end_monotonic - start.monotonic
        added: dict[str, Any] = {"sysgauge.process.cpu.time": used}
        cpus = getattr(self._process, "cpus", None) or float(os.cpu_count() or 1)
        if seconds > 0:
            added["sysgauge.process.cpu.utilization"] = used / seconds / cpus
        samples = [s for s in self._monitor.sampler.samples() if start.monotonic <= s.time <= end_monotonic]
        added["sysgauge.span.samples"] = len(samples)
        rss = [
            s.values[(m.PROCESS_MEMORY_USAGE.name, ())]
            for s in samples
            if (m.PROCESS_MEMORY_USAGE.name, ()) in s.values
        ]
        if rss:
            added["sysgauge.process.memory.peak"] = int(max(rss))
            added["sysgauge.process.memory.end"] = int(rss[-1])
        added.update(self._gpu_attributes(samples, start))
        merged = dict(span.attributes or {})
        merged.update(added)
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=BoundedAttributes(attributes=merged, immutable=True),
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _gpu_attributes(self, samples: list[Any], start: _Start) -> dict[str, Any]:
        if self._nvidia is None:
            return {}
        utilization: dict[str, list[float]] = {}
        tree_memory: dict[str, list[float]] = {}
        used: set[str] = set()
        per_process = False
        for sample in samples:
            for (name, attrs), value in sample.values.items():
                if name == m.PROCESS_GPU_IN_USE.name:
                    per_process = True
                    if value > 0:
                        used.add(str(dict(attrs)[m.HW_ID]))
                elif name == m.HW_GPU_UTILIZATION.name and (m.HW_GPU_TASK, "general") in attrs:
                    utilization.setdefault(str(dict(attrs)[m.HW_ID]), []).append(value)
                elif name == m.PROCESS_GPU_MEMORY_USAGE.name:
                    tree_memory.setdefault(str(dict(attrs)[m.HW_ID]), []).append(value)
        energy_end = self._energy() if start.energy else {}
        if not per_process:
            # Without per-process GPU use (turned off, or a container's PID namespace), every GPU counts.
            used |= set(start.energy) & set(energy_end)
        out: dict[str, Any] = {}
        for uuid in sorted(used):
            index = self._nvidia.index_of(uuid)
            prefix = f"sysgauge.gpu.{index if index is not None else uuid}"
            if utilization.get(uuid):
                out[f"{prefix}.utilization"] = sum(utilization[uuid]) / len(utilization[uuid])
            if tree_memory.get(uuid):
                out[f"{prefix}.memory.peak"] = int(max(tree_memory[uuid]))
            if uuid in start.energy and uuid in energy_end and energy_end[uuid] >= start.energy[uuid]:
                out[f"{prefix}.energy"] = energy_end[uuid] - start.energy[uuid]
        return out


def _stat_cpu(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat (one read), in seconds."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
