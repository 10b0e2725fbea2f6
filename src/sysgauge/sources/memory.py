"""Host memory and swap; relative to the cgroup v2 memory.max when the process runs under one."""

from __future__ import annotations

from typing import Any

from sysgauge import metrics as m
from sysgauge.sources.base import Reading
from sysgauge.sources.cgroup import Cgroup, CgroupLimits

_USED, _FREE = ((m.SYSTEM_MEMORY_STATE, "used"),), ((m.SYSTEM_MEMORY_STATE, "free"),)
_BUFFERS, _CACHED = ((m.SYSTEM_MEMORY_STATE, "buffers"),), ((m.SYSTEM_MEMORY_STATE, "cached"),)
_SWAP_USED, _SWAP_FREE = ((m.SYSTEM_PAGING_STATE, "used"),), ((m.SYSTEM_PAGING_STATE, "free"),)


class MemorySource:
    name = "memory"

    def __init__(self, ps: Any, cgroup: Cgroup | None = None, pid: int | None = None) -> None:
        self._ps = ps
        self._cgroup = cgroup
        self._pid = pid
        self._limits: CgroupLimits | None = None

    def probe(self) -> str | None:
        try:
            self._ps.virtual_memory()
        except Exception as exc:
            return f"cannot read memory: {exc}"
        if self._cgroup is not None and self._pid is not None:
            self._limits = self._cgroup.limits(self._pid)
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("memory")

    def read(self) -> list[Reading]:
        readings = self._cgroup_readings()
        if readings is None:
            vm = self._ps.virtual_memory()
            total = float(vm.total)
            # semconv: used = total - available (psutil's `used` leaves out reclaimable memory differently).
            used = total - float(vm.available)
            states = [(_USED, used), (_FREE, float(vm.free))]
            for attrs, field in ((_BUFFERS, "buffers"), (_CACHED, "cached")):
                value = getattr(vm, field, None)
                if value is not None:
                    states.append((attrs, float(value)))
            readings = [
                Reading(m.SYSTEM_MEMORY_LIMIT, total),
                Reading(m.SYSTEM_MEMORY_LINUX_AVAILABLE, float(vm.available)),
            ]
            for attrs, value in states:
                readings.append(Reading(m.SYSTEM_MEMORY_USAGE, value, attrs))
                if total > 0:
                    readings.append(Reading(m.SYSTEM_MEMORY_UTILIZATION, value / total, attrs))
        swap = self._ps.swap_memory()
        if swap.total > 0:
            for attrs, value in ((_SWAP_USED, float(swap.used)), (_SWAP_FREE, float(swap.free))):
                readings.append(Reading(m.SYSTEM_PAGING_USAGE, value, attrs))
                readings.append(Reading(m.SYSTEM_PAGING_UTILIZATION, value / swap.total, attrs))
        return readings

    def _cgroup_readings(self) -> list[Reading] | None:
        limits = self._limits
        if self._cgroup is None or limits is None or limits.memory_max is None or limits.directory is None:
            return None
        current = self._cgroup.memory_current(limits.directory)
        if current is None:
            return None
        limit = float(limits.memory_max)
        used = float(current)
        free = max(0.0, limit - used)
        return [
            Reading(m.SYSTEM_MEMORY_LIMIT, limit),
            Reading(m.SYSTEM_MEMORY_LINUX_AVAILABLE, free),
            Reading(m.SYSTEM_MEMORY_USAGE, used, _USED),
            Reading(m.SYSTEM_MEMORY_USAGE, free, _FREE),
            Reading(m.SYSTEM_MEMORY_UTILIZATION, used / limit, _USED),
            Reading(m.SYSTEM_MEMORY_UTILIZATION, free / limit, _FREE),
        ]

    def close(self) -> None:
        pass
