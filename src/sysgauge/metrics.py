"""Every metric sysgauge can emit, declared once.

Registration (`_instrument.py`), the README's metric table (`python -m sysgauge.metric_table`) and the
contract tests all read these declarations; nothing else spells a metric name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from opentelemetry.semconv._incubating.attributes import (
    cpu_attributes,
    disk_attributes,
    network_attributes,
    process_attributes,
    system_attributes,
)
from opentelemetry.semconv._incubating.metrics import process_metrics as pm
from opentelemetry.semconv._incubating.metrics import system_metrics as sm

CPU_MODE = cpu_attributes.CPU_MODE
CPU_LOGICAL_NUMBER = cpu_attributes.CPU_LOGICAL_NUMBER
SYSTEM_DEVICE = system_attributes.SYSTEM_DEVICE
SYSTEM_MEMORY_STATE = system_attributes.SYSTEM_MEMORY_STATE
SYSTEM_PAGING_STATE = system_attributes.SYSTEM_PAGING_STATE
FILESYSTEM_STATE = system_attributes.SYSTEM_FILESYSTEM_STATE
FILESYSTEM_MOUNTPOINT = system_attributes.SYSTEM_FILESYSTEM_MOUNTPOINT
FILESYSTEM_TYPE = system_attributes.SYSTEM_FILESYSTEM_TYPE
FILESYSTEM_MODE = system_attributes.SYSTEM_FILESYSTEM_MODE
DISK_IO_DIRECTION = disk_attributes.DISK_IO_DIRECTION
NETWORK_INTERFACE = network_attributes.NETWORK_INTERFACE_NAME
NETWORK_IO_DIRECTION = network_attributes.NETWORK_IO_DIRECTION
CONTEXT_SWITCH_TYPE = process_attributes.PROCESS_CONTEXT_SWITCH_TYPE

PEAK_PREFIX = "sysgauge.peak."


class InstrumentKind(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    UP_DOWN_COUNTER = "updowncounter"


class Aggregation(enum.Enum):
    """How the samples in the window become the one exported value."""

    MEAN = "mean of the samples in the window"
    MAX = "largest sample in the window"
    LAST = "latest sample"
    # The source reports a cumulative amount (seconds, bytes); the exported value is
    # its increase across the window divided by the window's duration: an exact
    # time-weighted mean, whatever ticks were missed.
    RATE = "increase of a cumulative reading across the window / elapsed seconds"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: InstrumentKind
    unit: str
    description: str
    attributes: tuple[str, ...]
    source: str
    aggregation: Aggregation
    # How to get wandb's number back, for the README table ("" when wandb has no such key).
    wandb: str = ""
    # The metric whose samples this one aggregates, when not its own (a peak reads its gauge's samples).
    reads: str = ""

    @property
    def series(self) -> str:
        return self.reads or self.name

    @property
    def can_peak(self) -> bool:
        return self.aggregation is Aggregation.MEAN

    def peak(self) -> MetricSpec:
        """The spec of the window-maximum companion of this gauge (see docs/decisions.md)."""
        if not self.can_peak:
            raise ValueError(f"{self.name} is not a sampled gauge; it has no peak")
        bare = self.name.removeprefix("sysgauge.")
        return MetricSpec(
            name=PEAK_PREFIX + bare,
            kind=InstrumentKind.GAUGE,
            unit=self.unit,
            description=f"Largest sample of {self.name} in the window.",
            attributes=self.attributes,
            source=self.source,
            aggregation=Aggregation.MAX,
            reads=self.name,
        )


G, C, U = InstrumentKind.GAUGE, InstrumentKind.COUNTER, InstrumentKind.UP_DOWN_COUNTER
MEAN, LAST, RATE = Aggregation.MEAN, Aggregation.LAST, Aggregation.RATE

# --- cpu -----------------------------------------------------------------------------------------
SYSTEM_CPU_TIME = MetricSpec(
    sm.SYSTEM_CPU_TIME,
    C,
    "s",
    "CPU seconds spent in each mode, per logical CPU when per_cpu is on.",
    (CPU_MODE, CPU_LOGICAL_NUMBER),
    "cpu",
    LAST,
)
SYSTEM_CPU_UTILIZATION = MetricSpec(
    sm.SYSTEM_CPU_UTILIZATION,
    G,
    "1",
    "Fraction of the window each logical CPU (or all CPUs, per_cpu off) spent in each mode.",
    (CPU_MODE, CPU_LOGICAL_NUMBER),
    "cpu",
    RATE,
    wandb="`cpu.{i}.cpu_percent` = 100 × (1 − value{idle} − value{iowait}) for cpu.logical_number i",
)
SYSTEM_CPU_LOGICAL_COUNT = MetricSpec(
    sm.SYSTEM_CPU_LOGICAL_COUNT,
    U,
    "{cpu}",
    "Logical CPUs of the host.",
    (),
    "cpu",
    LAST,
)

# --- memory --------------------------------------------------------------------------------------
SYSTEM_MEMORY_USAGE = MetricSpec(
    sm.SYSTEM_MEMORY_USAGE,
    U,
    "By",
    "Memory in each state; used = total − available (in a cgroup with a limit: memory.current).",
    (SYSTEM_MEMORY_STATE,),
    "memory",
    MEAN,
)
SYSTEM_MEMORY_UTILIZATION = MetricSpec(
    sm.SYSTEM_MEMORY_UTILIZATION,
    G,
    "1",
    "Memory in each state as a fraction of the limit (host total, or the cgroup v2 memory.max).",
    (SYSTEM_MEMORY_STATE,),
    "memory",
    MEAN,
    wandb="`memory` / `memory_percent` = 100 × value{system.memory.state=used}",
)
SYSTEM_MEMORY_LIMIT = MetricSpec(
    sm.SYSTEM_MEMORY_LIMIT,
    U,
    "By",
    "Total memory: host RAM, or the cgroup v2 memory.max when finite.",
    (),
    "memory",
    LAST,
)
SYSTEM_MEMORY_LINUX_AVAILABLE = MetricSpec(
    sm.SYSTEM_MEMORY_LINUX_AVAILABLE,
    U,
    "By",
    "Memory available for new work without swapping (in a cgroup: memory.max − memory.current).",
    (),
    "memory",
    MEAN,
    wandb="`proc.memory.availableMB` = value ÷ 2^20",
)
SYSTEM_PAGING_USAGE = MetricSpec(
    sm.SYSTEM_PAGING_USAGE,
    U,
    "By",
    "Swap space used and free.",
    (SYSTEM_PAGING_STATE,),
    "memory",
    MEAN,
)
SYSTEM_PAGING_UTILIZATION = MetricSpec(
    sm.SYSTEM_PAGING_UTILIZATION,
    G,
    "1",
    "Swap space used and free, as a fraction of the swap size.",
    (SYSTEM_PAGING_STATE,),
    "memory",
    MEAN,
)

# --- disk ----------------------------------------------------------------------------------------
_DISK = (SYSTEM_DEVICE, DISK_IO_DIRECTION)
SYSTEM_DISK_IO = MetricSpec(
    sm.SYSTEM_DISK_IO,
    C,
    "By",
    "Bytes read from and written to each block device.",
    _DISK,
    "disk",
    LAST,
    wandb="`disk.in` / `disk.out` (MiB since start) = (value − value at start) ÷ 2^20, summed over devices",
)
SYSTEM_DISK_OPERATIONS = MetricSpec(
    sm.SYSTEM_DISK_OPERATIONS,
    C,
    "{operation}",
    "Completed reads and writes of each block device.",
    _DISK,
    "disk",
    LAST,
)
SYSTEM_DISK_IO_TIME = MetricSpec(
    sm.SYSTEM_DISK_IO_TIME,
    C,
    "s",
    "Time each block device had I/O in flight.",
    (SYSTEM_DEVICE,),
    "disk",
    LAST,
)
SYSTEM_DISK_OPERATION_TIME = MetricSpec(
    sm.SYSTEM_DISK_OPERATION_TIME,
    C,
    "s",
    "Summed time of the reads and writes of each block device.",
    _DISK,
    "disk",
    LAST,
)
_FS = (SYSTEM_DEVICE, FILESYSTEM_MOUNTPOINT, FILESYSTEM_TYPE, FILESYSTEM_MODE, FILESYSTEM_STATE)
SYSTEM_FILESYSTEM_USAGE = MetricSpec(
    sm.SYSTEM_FILESYSTEM_USAGE,
    U,
    "By",
    "Space used, free (to unprivileged users) and reserved on the filesystem of each configured path.",
    _FS,
    "disk",
    MEAN,
    wandb="`disk.{path}.usageGB` = value{system.filesystem.state=used} ÷ 2^30",
)
SYSTEM_FILESYSTEM_UTILIZATION = MetricSpec(
    sm.SYSTEM_FILESYSTEM_UTILIZATION,
    G,
    "1",
    "Space in each state as a fraction of the filesystem's size, for each configured path.",
    _FS,
    "disk",
    MEAN,
    wandb="`disk.{path}.usagePercent` ≈ 100 × value{state=used} (psutil's percent excludes reserved space)",
)

# --- network -------------------------------------------------------------------------------------
_NET = (NETWORK_INTERFACE, NETWORK_IO_DIRECTION)
SYSTEM_NETWORK_IO = MetricSpec(
    sm.SYSTEM_NETWORK_IO,
    C,
    "By",
    "Bytes sent and received on each interface.",
    _NET,
    "network",
    LAST,
    wandb="`network.sent` / `network.recv` = value − value at start, summed over interfaces",
)
SYSTEM_NETWORK_PACKET_COUNT = MetricSpec(
    sm.SYSTEM_NETWORK_PACKET_COUNT,
    C,
    "{packet}",
    "Packets sent and received on each interface.",
    _NET,
    "network",
    LAST,
)
SYSTEM_NETWORK_PACKET_DROPPED = MetricSpec(
    sm.SYSTEM_NETWORK_PACKET_DROPPED,
    C,
    "{packet}",
    "Packets dropped on each interface.",
    _NET,
    "network",
    LAST,
)
SYSTEM_NETWORK_ERRORS = MetricSpec(
    sm.SYSTEM_NETWORK_ERRORS,
    C,
    "{error}",
    "Send and receive errors on each interface.",
    _NET,
    "network",
    LAST,
)

# --- the monitored process tree ------------------------------------------------------------------
PROCESS_CPU_TIME = MetricSpec(
    pm.PROCESS_CPU_TIME,
    C,
    "s",
    "CPU seconds used by the monitored process tree (exited members keep their last reading).",
    (CPU_MODE,),
    "process",
    LAST,
)
PROCESS_CPU_UTILIZATION = MetricSpec(
    pm.PROCESS_CPU_UTILIZATION,
    G,
    "1",
    "CPU used by the monitored process tree over the window, divided by the CPUs available to it "
    "(affinity, and the cgroup v2 cpu.max quota).",
    (CPU_MODE,),
    "process",
    RATE,
    wandb="`cpu` = 100 × sum over cpu.mode",
)
PROCESS_MEMORY_USAGE = MetricSpec(
    pm.PROCESS_MEMORY_USAGE,
    U,
    "By",
    "Resident memory (RSS) summed over the monitored process tree.",
    (),
    "process",
    MEAN,
    wandb="`proc.memory.rssMB` = value ÷ 2^20",
)
PROCESS_MEMORY_VIRTUAL = MetricSpec(
    pm.PROCESS_MEMORY_VIRTUAL,
    U,
    "By",
    "Virtual memory summed over the monitored process tree.",
    (),
    "process",
    MEAN,
)
PROCESS_MEMORY_UTILIZATION = MetricSpec(
    pm.PROCESS_MEMORY_UTILIZATION,
    G,
    "1",
    "RSS of the monitored process tree as a fraction of the memory limit (host RAM or cgroup memory.max).",
    (),
    "process",
    MEAN,
    wandb="`proc.memory.percent` = 100 × value",
)
PROCESS_THREAD_COUNT = MetricSpec(
    pm.PROCESS_THREAD_COUNT,
    U,
    "{thread}",
    "Threads in the monitored process tree.",
    (),
    "process",
    LAST,
    wandb="`proc.cpu.threads` = value",
)
PROCESS_UNIX_FILE_DESCRIPTOR_COUNT = MetricSpec(
    pm.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT,
    U,
    "{file_descriptor}",
    "Open file descriptors in the monitored process tree.",
    (),
    "process",
    LAST,
)
PROCESS_DISK_IO = MetricSpec(
    pm.PROCESS_DISK_IO,
    C,
    "By",
    "Bytes the monitored process tree read from and wrote to storage.",
    (DISK_IO_DIRECTION,),
    "process",
    LAST,
)
PROCESS_CONTEXT_SWITCHES = MetricSpec(
    pm.PROCESS_CONTEXT_SWITCHES,
    C,
    "{context_switch}",
    "Context switches of the monitored process tree.",
    (CONTEXT_SWITCH_TYPE,),
    "process",
    LAST,
)
SYSGAUGE_PROCESS_COUNT = MetricSpec(
    "sysgauge.process.count",
    U,
    "{process}",
    "Processes in the monitored tree (the root and its descendants).",
    (),
    "process",
    LAST,
)

ALL_SPECS: tuple[MetricSpec, ...] = (
    SYSTEM_CPU_TIME,
    SYSTEM_CPU_UTILIZATION,
    SYSTEM_CPU_LOGICAL_COUNT,
    SYSTEM_MEMORY_USAGE,
    SYSTEM_MEMORY_UTILIZATION,
    SYSTEM_MEMORY_LIMIT,
    SYSTEM_MEMORY_LINUX_AVAILABLE,
    SYSTEM_PAGING_USAGE,
    SYSTEM_PAGING_UTILIZATION,
    SYSTEM_DISK_IO,
    SYSTEM_DISK_OPERATIONS,
    SYSTEM_DISK_IO_TIME,
    SYSTEM_DISK_OPERATION_TIME,
    SYSTEM_FILESYSTEM_USAGE,
    SYSTEM_FILESYSTEM_UTILIZATION,
    SYSTEM_NETWORK_IO,
    SYSTEM_NETWORK_PACKET_COUNT,
    SYSTEM_NETWORK_PACKET_DROPPED,
    SYSTEM_NETWORK_ERRORS,
    PROCESS_CPU_TIME,
    PROCESS_CPU_UTILIZATION,
    PROCESS_MEMORY_USAGE,
    PROCESS_MEMORY_VIRTUAL,
    PROCESS_MEMORY_UTILIZATION,
    PROCESS_THREAD_COUNT,
    PROCESS_UNIX_FILE_DESCRIPTOR_COUNT,
    PROCESS_DISK_IO,
    PROCESS_CONTEXT_SWITCHES,
    SYSGAUGE_PROCESS_COUNT,
)

SPECS_BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in ALL_SPECS}

# Gauges whose window maximum is reported by default (what ML users ask for: peak memory).
DEFAULT_PEAKS: tuple[str, ...] = (PROCESS_MEMORY_USAGE.name, SYSTEM_MEMORY_USAGE.name)


def specs_of(source: str) -> tuple[MetricSpec, ...]:
    return tuple(spec for spec in ALL_SPECS if spec.source == source)
