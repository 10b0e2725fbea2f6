"""Every metric sysgauge can emit, declared once.

Registration (`_instrument.py`), the README's metric table (`python -m sysgauge.metric_table`) and the
contract tests all read these declarations; nothing else spells a metric name.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from opentelemetry.semconv._incubating.attributes import (
    cpu_attributes,
    disk_attributes,
    hw_attributes,
    network_attributes,
    process_attributes,
    system_attributes,
)
from opentelemetry.semconv._incubating.metrics import hw_metrics as hm
from opentelemetry.semconv._incubating.metrics import process_metrics as pm
from opentelemetry.semconv._incubating.metrics import system_metrics as sm
from opentelemetry.semconv.attributes import error_attributes

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

HW_ID = hw_attributes.HW_ID
HW_NAME = hw_attributes.HW_NAME
HW_VENDOR = hw_attributes.HW_VENDOR
HW_MODEL = hw_attributes.HW_MODEL
HW_TYPE = hw_attributes.HW_TYPE
HW_PARENT = hw_attributes.HW_PARENT
HW_STATE = hw_attributes.HW_STATE
HW_GPU_TASK = hw_attributes.HW_GPU_TASK
ERROR_TYPE = error_attributes.ERROR_TYPE
GPU_INDEX = "sysgauge.gpu.index"
GPU_PCI_BUS_ID = "sysgauge.gpu.pci_bus_id"
GPU_CLOCK = "sysgauge.gpu.clock"
GPU_CLOCK_EVENT_REASON = "sysgauge.gpu.clock_event.reason"
GPU_XID = "sysgauge.gpu.xid"

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

# --- NVIDIA GPUs (NVML) --------------------------------------------------------------------------
# Every GPU point carries the device's identity; MIG instances add hw.parent = their GPU's UUID.
_GPU = (HW_ID, HW_NAME, HW_VENDOR, HW_MODEL, HW_TYPE, HW_PARENT, GPU_INDEX, GPU_PCI_BUS_ID)
HW_GPU_UTILIZATION = MetricSpec(
    hm.HW_GPU_UTILIZATION,
    G,
    "1",
    "Fraction of time a kernel (general), the encoder or the decoder was busy; not reported for MIG.",
    (*_GPU, HW_GPU_TASK),
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.gpu` = 100 × value{hw.gpu.task=general}",
)
GPU_MEMORY_CONTROLLER_UTILIZATION = MetricSpec(
    "sysgauge.gpu.memory_controller.utilization",
    G,
    "1",
    "Fraction of time device memory was being read or written (NVML's memory utilization).",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.memory` = 100 × value",
)
HW_GPU_MEMORY_USAGE = MetricSpec(
    hm.HW_GPU_MEMORY_USAGE,
    U,
    "By",
    "Device memory allocated (reserved memory not counted, where the driver tells).",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.memoryAllocatedBytes` = value",
)
HW_GPU_MEMORY_LIMIT = MetricSpec(
    hm.HW_GPU_MEMORY_LIMIT,
    U,
    "By",
    "Device memory in total.",
    _GPU,
    "nvidia",
    LAST,
)
HW_GPU_MEMORY_UTILIZATION = MetricSpec(
    hm.HW_GPU_MEMORY_UTILIZATION,
    G,
    "1",
    "Device memory allocated as a fraction of the total.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.memoryAllocated` = 100 × value",
)
HW_TEMPERATURE = MetricSpec(
    hm.HW_TEMPERATURE,
    G,
    "Cel",
    "GPU die temperature.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.temp` = value",
)
HW_POWER = MetricSpec(
    hm.HW_POWER,
    G,
    "W",
    "Power drawn by the GPU board.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.powerWatts` = value",
)
HW_ENERGY = MetricSpec(
    hm.HW_ENERGY,
    C,
    "J",
    "Energy used by the GPU since monitoring began on a driver load (never goes backwards).",
    _GPU,
    "nvidia",
    LAST,
)
GPU_POWER_LIMIT = MetricSpec(
    "sysgauge.gpu.power.limit",
    U,
    "W",
    "Enforced power limit of the GPU.",
    _GPU,
    "nvidia",
    LAST,
    wandb="`gpu.{i}.enforcedPowerLimitWatts` = value",
)
GPU_POWER_UTILIZATION = MetricSpec(
    "sysgauge.gpu.power.utilization",
    G,
    "1",
    "Power drawn as a fraction of the enforced limit.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.powerPercent` = 100 × value",
)
GPU_CLOCK_FREQUENCY = MetricSpec(
    "sysgauge.gpu.clock.frequency",
    G,
    "Hz",
    "SM and memory clock frequencies.",
    (*_GPU, GPU_CLOCK),
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.smClock` / `memoryClock` (MHz) = value{sysgauge.gpu.clock=sm|memory} ÷ 10^6",
)
HW_FAN_SPEED_RATIO = MetricSpec(
    hm.HW_FAN_SPEED_RATIO,
    G,
    "1",
    "Fan speed as a fraction of its maximum (may exceed 1).",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.{i}.fanSpeed` = 100 × value",
)
HW_GPU_IO = MetricSpec(
    hm.HW_GPU_IO,
    C,
    "By",
    "Bytes the GPU sent and received over PCIe.",
    (*_GPU, NETWORK_IO_DIRECTION),
    "nvidia",
    LAST,
)
GPU_NVLINK_IO = MetricSpec(
    "sysgauge.gpu.nvlink.io",
    C,
    "By",
    "Bytes the GPU sent and received over all its NVLink links.",
    (*_GPU, NETWORK_IO_DIRECTION),
    "nvidia",
    LAST,
)
HW_ERRORS = MetricSpec(
    hm.HW_ERRORS,
    C,
    "{error}",
    "Corrected and uncorrected ECC memory errors over the GPU's life (aggregate).",
    (*_GPU, ERROR_TYPE),
    "nvidia",
    LAST,
    wandb="`gpu.{i}.correctedMemoryErrors` / `uncorrectedMemoryErrors` (wandb: since driver load)",
)
GPU_CLOCK_EVENT_ACTIVE = MetricSpec(
    "sysgauge.gpu.clock_event.active",
    G,
    "1",
    "Fraction of samples in which each clock event (throttle) reason was active.",
    (*_GPU, GPU_CLOCK_EVENT_REASON),
    "nvidia",
    MEAN,
)
HW_STATUS = MetricSpec(
    hm.HW_STATUS,
    U,
    "1",
    "1 for the GPU's current state (ok, or failed when the GPU is lost), 0 for the other.",
    (*_GPU, HW_STATE),
    "nvidia",
    LAST,
)
GPU_XID_ERRORS = MetricSpec(
    "sysgauge.gpu.xid.errors",
    C,
    "{error}",
    "XID critical errors the driver reported for the GPU since monitoring began, by XID code (opt-in: "
    "nvidia_xid).",
    (*_GPU, GPU_XID),
    "nvidia",
    LAST,
)
PROCESS_GPU_MEMORY_USAGE = MetricSpec(
    "sysgauge.process.gpu.memory.usage",
    U,
    "By",
    "Device memory used by the monitored process tree on each GPU it uses.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.process.{i}.memoryAllocatedBytes` = value",
)
PROCESS_GPU_UTILIZATION = MetricSpec(
    "sysgauge.process.gpu.utilization",
    G,
    "1",
    "SM utilization of the monitored process tree on each GPU it uses.",
    _GPU,
    "nvidia",
    MEAN,
    wandb="`gpu.process.{i}.gpu` = 100 × value",
)
PROCESS_GPU_IN_USE = MetricSpec(
    "sysgauge.process.gpu.in_use",
    G,
    "1",
    'Fraction of samples in which the monitored process tree had a process on the GPU ("GPUs my run uses").',
    _GPU,
    "nvidia",
    MEAN,
)


def also(spec: MetricSpec, source: str, wandb: str = "") -> MetricSpec:
    """The same metric reported by another source (AMD and Apple GPUs share the hw.* names)."""
    return dataclasses.replace(spec, source=source, wandb=wandb)


# --- AMD GPUs (amdsmi, else rocm-smi) ------------------------------------------------------------
AMD_GPU_UTILIZATION = also(HW_GPU_UTILIZATION, "amd", "`gpu.{i}.gpu` = 100 × value")
AMD_GPU_MEMORY_UTILIZATION = also(HW_GPU_MEMORY_UTILIZATION, "amd", "`gpu.{i}.memoryAllocated` = 100 × value")
AMD_GPU_MEMORY_USAGE = also(HW_GPU_MEMORY_USAGE, "amd", "`gpu.{i}.memoryAllocatedBytes` = value")
AMD_GPU_MEMORY_LIMIT = also(HW_GPU_MEMORY_LIMIT, "amd")
AMD_TEMPERATURE = also(HW_TEMPERATURE, "amd", "`gpu.{i}.temp` = value")
AMD_POWER = also(HW_POWER, "amd", "`gpu.{i}.powerWatts` = value")
AMD_POWER_LIMIT = also(GPU_POWER_LIMIT, "amd")
AMD_POWER_UTILIZATION = also(GPU_POWER_UTILIZATION, "amd", "`gpu.{i}.powerPercent` = 100 × value")

# --- Apple silicon (apple_gpu_stats) -------------------------------------------------------------
APPLE_GPU_UTILIZATION = also(HW_GPU_UTILIZATION, "apple", "`gpu.0.gpu` = 100 × value")
APPLE_GPU_MEMORY_USAGE = also(HW_GPU_MEMORY_USAGE, "apple", "`gpu.0.memoryUsed` = value")
APPLE_TEMPERATURE = also(HW_TEMPERATURE, "apple", "`gpu.0.temp` = value")
APPLE_POWER = also(HW_POWER, "apple", "`gpu.0.powerWatts` = value")
APPLE_GPU_MEMORY_ALLOCATED = MetricSpec(
    "sysgauge.gpu.memory.allocated",
    U,
    "By",
    "System memory allocated to the GPU (Apple's unified memory).",
    _GPU,
    "apple",
    MEAN,
    wandb="`gpu.0.memoryAllocatedBytes` = value",
)
APPLE_HOST_POWER = MetricSpec(
    hm.HW_HOST_POWER,
    G,
    "W",
    "Power drawn by the whole machine (Apple's system power).",
    (),
    "apple",
    MEAN,
    wandb="`gpu.0.systemPower` = value",
)

# --- Google TPU (libtpu runtime metrics service) -------------------------------------------------
TPU_DEVICE = "sysgauge.tpu.device_id"
TPU_ACCELERATOR = "sysgauge.tpu.accelerator_type"
_TPU = (TPU_DEVICE, TPU_ACCELERATOR)
TPU_DUTY_CYCLE = MetricSpec(
    "sysgauge.tpu.duty_cycle",
    G,
    "1",
    "Fraction of time the TPU chip was executing.",
    _TPU,
    "tpu",
    MEAN,
    wandb="`tpu.{i}.dutyCycle` = 100 × value",
)
TPU_HBM_USAGE = MetricSpec(
    "sysgauge.tpu.hbm.usage",
    U,
    "By",
    "High-bandwidth memory in use on the TPU device.",
    _TPU,
    "tpu",
    MEAN,
    wandb="`tpu.{i}.hbmUsageBytes` = value",
)
TPU_HBM_LIMIT = MetricSpec(
    "sysgauge.tpu.hbm.limit",
    U,
    "By",
    "High-bandwidth memory of the TPU device in total.",
    _TPU,
    "tpu",
    LAST,
)
TPU_HBM_UTILIZATION = MetricSpec(
    "sysgauge.tpu.hbm.utilization",
    G,
    "1",
    "HBM in use as a fraction of the total.",
    _TPU,
    "tpu",
    MEAN,
    wandb="`tpu.{i}.memoryUsage` = 100 × value",
)
TPU_TENSORCORE_UTILIZATION = MetricSpec(
    "sysgauge.tpu.tensorcore.utilization",
    G,
    "1",
    "TensorCore utilization of each TPU core.",
    _TPU,
    "tpu",
    MEAN,
    wandb="`tpu.{i}.tensorcoreUtilization` = 100 × value",
)

# --- AWS Trainium / Inferentia (neuron-monitor) --------------------------------------------------
NEURON_CORE = "sysgauge.neuron.core"
NEURON_MEMORY_CATEGORY = "sysgauge.neuron.memory.category"
NEURON_CORE_UTILIZATION = MetricSpec(
    "sysgauge.neuron.core.utilization",
    G,
    "1",
    "Utilization of each NeuronCore used by the monitored runtime.",
    (NEURON_CORE,),
    "trainium",
    MEAN,
    wandb="`trn.{core}.neuroncore_utilization` = 100 × value",
)
NEURON_HOST_MEMORY_USAGE = MetricSpec(
    "sysgauge.neuron.host_memory.usage",
    U,
    "By",
    "Host memory the Neuron runtime uses, by category.",
    (NEURON_MEMORY_CATEGORY,),
    "trainium",
    MEAN,
    wandb="`trn.host_memory_usage.{category}` = value",
)
NEURON_DEVICE_MEMORY_USAGE = MetricSpec(
    "sysgauge.neuron.device_memory.usage",
    U,
    "By",
    "Device memory each NeuronCore uses, by category.",
    (NEURON_CORE, NEURON_MEMORY_CATEGORY),
    "trainium",
    MEAN,
    wandb="`trn.{core}.neuron_device_memory_usage.{category}` = value",
)

# --- Graphcore IPU (gcipuinfo, else gc-info) -----------------------------------------------------
IPU_ID = "sysgauge.ipu.id"
IPU_SENSOR = "sysgauge.ipu.sensor"
IPU_UTILIZATION = MetricSpec(
    "sysgauge.ipu.utilization",
    G,
    "1",
    "IPU utilisation as gc-info reports it.",
    (IPU_ID,),
    "ipu",
    MEAN,
    wandb="`ipu.{id}.ipu utilisation (%)` = 100 × value",
)
IPU_TEMPERATURE = MetricSpec(
    "sysgauge.ipu.temperature",
    G,
    "Cel",
    "Average board and die temperatures.",
    (IPU_ID, IPU_SENSOR),
    "ipu",
    MEAN,
    wandb="`ipu.{id}.average board temp (C)` / `average die temp (C)` = value",
)
IPU_POWER = MetricSpec(
    "sysgauge.ipu.power",
    G,
    "W",
    "Power drawn by the IPU.",
    (IPU_ID,),
    "ipu",
    MEAN,
    wandb="`ipu.{id}.ipu power (W)` = value",
)
IPU_CLOCK = MetricSpec(
    "sysgauge.ipu.clock.frequency",
    G,
    "Hz",
    "IPU clock frequency.",
    (IPU_ID,),
    "ipu",
    MEAN,
    wandb="`ipu.{id}.clock (MHz)` = value ÷ 10^6",
)


@dataclass(frozen=True)
class SpanAttributeSpec:
    """An attribute SystemMetricsSpanProcessor sets on the spans it measures (docs/spans.md)."""

    name: str
    unit: str
    description: str


SPAN_ATTRIBUTES: tuple[SpanAttributeSpec, ...] = (
    SpanAttributeSpec(
        "sysgauge.process.cpu.time",
        "s",
        "CPU time the monitored process tree used during the span (read at start and end).",
    ),
    SpanAttributeSpec(
        "sysgauge.process.cpu.utilization",
        "1",
        "That CPU time divided by the span's duration and the CPUs available to the tree.",
    ),
    SpanAttributeSpec(
        "sysgauge.process.memory.peak",
        "By",
        "Largest sampled RSS of the tree during the span (needs a sample inside the span).",
    ),
    SpanAttributeSpec(
        "sysgauge.process.memory.end", "By", "The tree's RSS at the last sample inside the span."
    ),
    SpanAttributeSpec(
        "sysgauge.span.samples",
        "{sample}",
        "Sampler samples inside the span; 0 means only the counter deltas are given.",
    ),
    SpanAttributeSpec(
        "sysgauge.gpu.<index>.utilization",
        "1",
        "Mean sampled utilization of each GPU the tree used during the span.",
    ),
    SpanAttributeSpec(
        "sysgauge.gpu.<index>.memory.peak",
        "By",
        "Largest sampled GPU memory the tree held on that GPU during the span.",
    ),
    SpanAttributeSpec(
        "sysgauge.gpu.<index>.energy",
        "J",
        "Energy that GPU used during the span (its counter read at start and end).",
    ),
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
    HW_GPU_UTILIZATION,
    GPU_MEMORY_CONTROLLER_UTILIZATION,
    HW_GPU_MEMORY_USAGE,
    HW_GPU_MEMORY_LIMIT,
    HW_GPU_MEMORY_UTILIZATION,
    HW_TEMPERATURE,
    HW_POWER,
    HW_ENERGY,
    GPU_POWER_LIMIT,
    GPU_POWER_UTILIZATION,
    GPU_CLOCK_FREQUENCY,
    HW_FAN_SPEED_RATIO,
    HW_GPU_IO,
    GPU_NVLINK_IO,
    HW_ERRORS,
    GPU_CLOCK_EVENT_ACTIVE,
    HW_STATUS,
    PROCESS_GPU_MEMORY_USAGE,
    PROCESS_GPU_UTILIZATION,
    PROCESS_GPU_IN_USE,
    GPU_XID_ERRORS,
    AMD_GPU_UTILIZATION,
    AMD_GPU_MEMORY_UTILIZATION,
    AMD_GPU_MEMORY_USAGE,
    AMD_GPU_MEMORY_LIMIT,
    AMD_TEMPERATURE,
    AMD_POWER,
    AMD_POWER_LIMIT,
    AMD_POWER_UTILIZATION,
    APPLE_GPU_UTILIZATION,
    APPLE_GPU_MEMORY_USAGE,
    APPLE_TEMPERATURE,
    APPLE_POWER,
    APPLE_GPU_MEMORY_ALLOCATED,
    APPLE_HOST_POWER,
    TPU_DUTY_CYCLE,
    TPU_HBM_USAGE,
    TPU_HBM_LIMIT,
    TPU_HBM_UTILIZATION,
    TPU_TENSORCORE_UTILIZATION,
    NEURON_CORE_UTILIZATION,
    NEURON_HOST_MEMORY_USAGE,
    NEURON_DEVICE_MEMORY_USAGE,
    IPU_UTILIZATION,
    IPU_TEMPERATURE,
    IPU_POWER,
    IPU_CLOCK,
)

# One entry per name: the first declaration (several sources may report one semconv metric).
SPECS_BY_NAME: dict[str, MetricSpec] = {}
for _spec in ALL_SPECS:
    SPECS_BY_NAME.setdefault(_spec.name, _spec)

# Gauges whose window maximum is reported by default (what ML users ask for: peak memory).
DEFAULT_PEAKS: tuple[str, ...] = (
    PROCESS_MEMORY_USAGE.name,
    SYSTEM_MEMORY_USAGE.name,
    HW_GPU_MEMORY_USAGE.name,
    PROCESS_GPU_MEMORY_USAGE.name,
)


def specs_of(source: str) -> tuple[MetricSpec, ...]:
    return tuple(spec for spec in ALL_SPECS if spec.source == source)
