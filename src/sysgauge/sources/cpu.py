"""Host CPU: time per mode (counter) and utilization per mode (Δtime/Δt over the window)."""

from __future__ import annotations

from typing import Any

from sysgauge import metrics as m
from sysgauge.sources.base import Reading

# psutil's Linux field -> semconv cpu.mode. irq and softirq are both "interrupt"; guest time is
# already inside user/nice on Linux, so it is not added again.
_MODES: tuple[tuple[str, str], ...] = (
    ("user", "user"),
    ("nice", "nice"),
    ("system", "system"),
    ("idle", "idle"),
    ("iowait", "iowait"),
    ("irq", "interrupt"),
    ("softirq", "interrupt"),
    ("steal", "steal"),
)


class CpuSource:
    name = "cpu"

    def __init__(self, ps: Any, per_cpu: bool = True) -> None:
        self._ps = ps
        self._per_cpu = per_cpu
        self._attrs: dict[tuple[str, int | None], tuple[tuple[str, str | int], ...]] = {}

    def probe(self) -> str | None:
        try:
            self._ps.cpu_times(percpu=True)
        except Exception as exc:
            return f"cannot read CPU times: {exc}"
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return (m.SYSTEM_CPU_TIME, m.SYSTEM_CPU_UTILIZATION, m.SYSTEM_CPU_LOGICAL_COUNT)

    def read(self) -> list[Reading]:
        per_cpu_times = self._ps.cpu_times(percpu=True)
        readings = [Reading(m.SYSTEM_CPU_LOGICAL_COUNT, float(len(per_cpu_times)))]
        if self._per_cpu:
            for number, times in enumerate(per_cpu_times):
                for mode, seconds in _by_mode(times).items():
                    attrs = self._attributes(mode, number)
                    readings.append(Reading(m.SYSTEM_CPU_TIME, seconds, attrs))
                    readings.append(Reading(m.SYSTEM_CPU_UTILIZATION, seconds, attrs))
            return readings
        totals: dict[str, float] = {}
        for times in per_cpu_times:
            for mode, seconds in _by_mode(times).items():
                totals[mode] = totals.get(mode, 0.0) + seconds
        count = max(1, len(per_cpu_times))
        for mode, seconds in totals.items():
            attrs = self._attributes(mode, None)
            readings.append(Reading(m.SYSTEM_CPU_TIME, seconds, attrs))
            # Averaged over CPUs so the rate is a 0..1 fraction of the whole machine.
            readings.append(Reading(m.SYSTEM_CPU_UTILIZATION, seconds / count, attrs))
        return readings

    def close(self) -> None:
        pass

    def _attributes(self, mode: str, number: int | None) -> tuple[tuple[str, str | int], ...]:
        key = (mode, number)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = (
                ((m.CPU_MODE, mode),)
                if number is None
                else ((m.CPU_MODE, mode), (m.CPU_LOGICAL_NUMBER, number))
            )
            self._attrs[key] = attrs
        return attrs


def _by_mode(times: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for field, mode in _MODES:
        seconds = getattr(times, field, None)
        if seconds is not None:
            out[mode] = out.get(mode, 0.0) + float(seconds)
    return out
