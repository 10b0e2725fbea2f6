"""NVIDIA GPUs through NVML: device metrics, MIG instances, and the GPU use of the monitored process tree.

All NVML calls go through `_nvml.Nvml.call` (the choke point); this module turns their answers into
readings. Capabilities are learned on the first read of each device: a function a device does not support
is never called again for it, and a function an older driver lacks falls back to the older call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._nvml import DeviceLost, Nvml, NvmlUnavailable
from sysgauge.sources.base import Attributes, Reading
from sysgauge.sources.process import ChildrenOf, walk_tree

_logger = logging.getLogger("sysgauge")

_FIELD_PCIE_TX, _FIELD_PCIE_RX = 197, 198
_FIELD_NVLINK_COUNT = 91
_FIELD_NVLINK_TX_KIB, _FIELD_NVLINK_RX_KIB = 138, 139
_CLOCK_SM, _CLOCK_MEM = 1, 2
_ECC_CORRECTED, _ECC_UNCORRECTED, _ECC_AGGREGATE = 0, 1, 1
_TEMPERATURE_GPU = 0
_MEMORY_V2 = 0x02000028
_UNAVAILABLE_MEMORY = 2**64 - 1
_MAX_BACKOFF_S = 60.0
_XID_CRITICAL = 0x8  # nvmlEventTypeXidCriticalError
_XID_WAIT_MS = 500

_TRAFFIC = (
    (_FIELD_PCIE_TX, m.HW_GPU_IO, "transmit", 1.0),
    (_FIELD_PCIE_RX, m.HW_GPU_IO, "receive", 1.0),
    (_FIELD_NVLINK_TX_KIB, m.GPU_NVLINK_IO, "transmit", 1024.0),
    (_FIELD_NVLINK_RX_KIB, m.GPU_NVLINK_IO, "receive", 1024.0),
)

# Clock event (throttle) reason bits, nvml.h's nvmlClocksEventReason*.
CLOCK_EVENT_REASONS: tuple[tuple[str, int], ...] = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)


def in_nested_pid_namespace(proc: str = "/proc") -> bool:
    """True inside a container with its own PID namespace: NVML's host PIDs then match none of ours."""
    try:
        with open(os.path.join(proc, "self", "status")) as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return len(line.split()) > 2
    except OSError:
        pass
    return False


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    identity: Attributes
    key: str  # for the "not supported" memory: the UUID
    parent: _Device | None = None
    mig_enabled: bool = False
    instances: list[_Device] = field(default_factory=list)
    failed: bool = False
    retry_at: float = 0.0
    backoff: float = 1.0
    energy_offset: float = 0.0
    energy_last: float | None = None
    samples_seen_us: int = 0
    fields: list[Any] | None = None  # field ids this device answers, learned on the first read
    attrs: dict[tuple[str, str], Attributes] = field(default_factory=dict)

    def with_(self, key: str, value: str) -> Attributes:
        attrs = self.attrs.get((key, value))
        if attrs is None:
            attrs = self.attrs[(key, value)] = (*self.identity, (key, value))
        return attrs


class NvidiaSource:
    name = "nvidia"

    def __init__(
        self,
        nvml: Nvml | None = None,
        pid: int | None = None,
        tree: bool = True,
        processes: bool = True,
        children_of: ChildrenOf | None = None,
        proc: str = "/proc",
        clock: Callable[[], float] = time.monotonic,
        xid: bool = False,
    ) -> None:
        self._nvml = nvml or Nvml()
        self._pid = pid if pid is not None else os.getpid()
        self._tree = tree
        self._children_of = children_of
        self._proc = proc
        self._clock = clock
        self._devices: list[_Device] = []
        self._log = LogOnce(_logger)
        self.notes: list[str] = []
        self._xid = xid
        self._xid_counts: dict[tuple[str, int], int] = {}
        self._xid_lock = threading.Lock()
        self._xid_stop = threading.Event()
        self._xid_thread: threading.Thread | None = None
        self._event_set: Any = None
        self._processes = processes
        if processes and in_nested_pid_namespace(proc):
            self._processes = False
            self.notes.append(
                "per-process GPU use is off: this process runs in its own PID namespace (a container "
                "without --pid=host), where NVML's host PIDs match none of ours"
            )

    # --- probing -------------------------------------------------------------------------------------

    def probe(self) -> str | None:
        try:
            self._nvml.init()
        except NvmlUnavailable as exc:
            return str(exc)
        try:
            count = self._nvml.call("nvmlDeviceGetCount")
            devices = [d for d in (self._open(i) for i in range(count or 0)) if d is not None]
        except DeviceLost as exc:
            devices = []
            self._log.warning("probe-lost", "sysgauge: a GPU failed while enumerating: %s", exc)
        if not devices:
            self._nvml.shutdown()
            return "no NVIDIA GPU found" if not count else "no NVIDIA GPU could be opened"
        self._devices = devices
        if self._xid:
            self._start_xid_events()
        if any(d.mig_enabled for d in devices):
            self.notes.append(
                "MIG is on: NVML reports memory for MIG instances but no utilization (for them or their GPU)"
            )
        return None

    def _open(self, index: int) -> _Device | None:
        nvml = self._nvml
        try:
            handle = nvml.call("nvmlDeviceGetHandleByIndex", index)
        except DeviceLost as exc:
            self._log.warning(f"open:{index}", "sysgauge: GPU %d cannot be opened: %s", index, exc)
            return None
        if handle is None:
            return None
        uuid = nvml.call("nvmlDeviceGetUUID", handle) or f"GPU-index-{index}"
        device = _Device(index, handle, uuid, self._identity(handle, uuid, index, None), uuid)
        mode = nvml.call("nvmlDeviceGetMigMode", handle, device=uuid)
        if mode is not None and mode[0] == 1:
            device.mig_enabled = True
            for slot in range(nvml.call("nvmlDeviceGetMaxMigDeviceCount", handle, device=uuid) or 0):
                child = nvml.call(
                    "nvmlDeviceGetMigDeviceHandleByIndex", handle, slot, device=f"{uuid}/{slot}"
                )
                if child is None:
                    continue  # an empty slot
                child_uuid = nvml.call("nvmlDeviceGetUUID", child) or f"{uuid}/mig{slot}"
                device.instances.append(
                    _Device(
                        index,
                        child,
                        child_uuid,
                        self._identity(child, child_uuid, index, uuid),
                        child_uuid,
                        parent=device,
                    )
                )
        return device

    def _identity(self, handle: Any, uuid: str, index: int, parent: str | None) -> Attributes:
        nvml = self._nvml
        model = nvml.call("nvmlDeviceGetName", handle, device=uuid) or "NVIDIA GPU"
        pci = nvml.call("nvmlDeviceGetPciInfo", handle, device=uuid, symbol="nvmlDeviceGetPciInfo_v3")
        try:
            bus_id = _text(pci.busId) if pci is not None else ""
        except UnicodeDecodeError:  # nvidia-ml-py decodes on access; a bus id cut mid-character
            bus_id = ""
        attrs: list[tuple[str, str | int]] = [
            (m.HW_ID, uuid),
            (m.HW_NAME, f"gpu{index}" if parent is None else f"gpu{index}/{uuid}"),
            (m.HW_VENDOR, "nvidia"),
            (m.HW_MODEL, model),
            (m.HW_TYPE, "gpu"),
        ]
        if parent is not None:
            attrs.append((m.HW_PARENT, parent))
        attrs.append((m.GPU_INDEX, index))
        if bus_id:
            attrs.append((m.GPU_PCI_BUS_ID, bus_id))
        return tuple(attrs)

    def specs(self) -> tuple[m.MetricSpec, ...]:
        specs = m.specs_of("nvidia")
        if not self._xid:
            specs = tuple(s for s in specs if s is not m.GPU_XID_ERRORS)
        if not self._processes:
            per_process = {m.PROCESS_GPU_MEMORY_USAGE, m.PROCESS_GPU_UTILIZATION, m.PROCESS_GPU_IN_USE}
            specs = tuple(s for s in specs if s not in per_process)
        return specs

    def describe(self) -> str:
        """What detect prints under the source: the GPUs, and what is not possible here."""
        lines = [
            f"{dict(d.identity)[m.HW_NAME]}: {dict(d.identity)[m.HW_MODEL]} {d.uuid}"
            + (f" (MIG, {len(d.instances)} instances)" if d.mig_enabled else "")
            for d in self._devices
        ]
        return "\n".join(lines + self.notes)

    # --- reading -------------------------------------------------------------------------------------

    def read(self) -> list[Reading]:
        tree = self._tree_pids() if self._processes else None
        readings: list[Reading] = []
        now = self._clock()
        for device in self._devices:
            if device.failed and now < device.retry_at:
                readings += self._status(device, ok=False)
                continue
            try:
                got = self._read_device(device, tree)
            except DeviceLost as exc:
                if not device.failed:
                    device.backoff = 1.0
                device.failed = True
                device.retry_at = now + device.backoff
                device.backoff = min(device.backoff * 2, _MAX_BACKOFF_S)
                self._log.warning(
                    f"lost:{device.uuid}",
                    "sysgauge: GPU %d (%s) failed, retrying with backoff: %s",
                    device.index,
                    device.uuid,
                    exc,
                )
                readings += self._status(device, ok=False)
                continue
            if device.failed:
                _logger.warning("sysgauge: GPU %d (%s) answers again", device.index, device.uuid)
                self._log = LogOnce(_logger)  # a later failure is news again
            device.failed = False
            readings += got
            readings += self._status(device, ok=True)
        if self._xid:
            readings += self._xid_readings()
        return readings

    def close(self) -> None:
        self._xid_stop.set()
        if self._xid_thread is not None:
            self._xid_thread.join(1.0)
        if self._event_set is not None:
            try:
                self._nvml.call("nvmlEventSetFree", self._event_set)
            except DeviceLost:
                pass
            self._event_set = None
        self._devices = []
        self._nvml.shutdown()

    def energy_joules(self) -> dict[str, float]:
        """Each healthy GPU's energy counter now (J since driver load): one cheap NVML call per GPU, for
        span deltas. GPUs that cannot say are left out."""
        out = {}
        for device in self._devices:
            if device.failed:
                continue
            try:
                mj = self._nvml.call("nvmlDeviceGetTotalEnergyConsumption", device.handle, device=device.key)
            except DeviceLost:
                continue
            if mj is not None:
                out[device.uuid] = mj / 1000.0
        return out

    def index_of(self, uuid: str) -> int | None:
        for device in self._devices:
            if device.uuid == uuid:
                return device.index
        return None

    # --- XID events (opt-in) -------------------------------------------------------------------------

    def _start_xid_events(self) -> None:
        nvml = self._nvml
        try:
            event_set = nvml.call("nvmlEventSetCreate")
            if event_set is None:
                self.notes.append("XID events: this driver cannot create an event set")
                return
            registered = 0
            for device in self._devices:
                nvml.call(
                    "nvmlDeviceRegisterEvents", device.handle, _XID_CRITICAL, event_set, device=device.key
                )
                registered += nvml.supported("nvmlDeviceRegisterEvents", device.key)
        except DeviceLost as exc:
            self.notes.append(f"XID events: registration failed: {exc}")
            return
        self._event_set = event_set
        self.notes.append(f"XID events: counted on {registered} of {len(self._devices)} GPUs")
        self._xid_thread = threading.Thread(target=self._wait_for_xid, name="sysgauge-nvml-xid", daemon=True)
        self._xid_thread.start()

    def _wait_for_xid(self) -> None:
        # NVML only offers a blocking wait: this thread waits so the sampler never does.
        nvml = self._nvml
        while not self._xid_stop.is_set():
            try:
                event = nvml.call("nvmlEventSetWait_v2", self._event_set, _XID_WAIT_MS)
                if event is None:
                    continue
                uuid = nvml.call("nvmlDeviceGetUUID", event.device) or "unknown"
                code = int(event.eventData)
            except DeviceLost:
                self._xid_stop.wait(1.0)
                continue
            with self._xid_lock:
                self._xid_counts[(uuid, code)] = self._xid_counts.get((uuid, code), 0) + 1
            self._log.warning(f"xid:{uuid}:{code}", "sysgauge: GPU %s reported XID %d", uuid, code)

    def _xid_readings(self) -> list[Reading]:
        with self._xid_lock:
            counts = dict(self._xid_counts)
        by_uuid = {d.uuid: d for d in self._devices}
        out = []
        for (uuid, code), count in counts.items():
            device = by_uuid.get(uuid)
            if device is not None:
                out.append(Reading(m.GPU_XID_ERRORS, float(count), (*device.identity, (m.GPU_XID, code))))
        return out

    def _status(self, device: _Device, ok: bool) -> list[Reading]:
        return [
            Reading(m.HW_STATUS, 1.0 if ok else 0.0, device.with_(m.HW_STATE, "ok")),
            Reading(m.HW_STATUS, 0.0 if ok else 1.0, device.with_(m.HW_STATE, "failed")),
        ]

    def _tree_pids(self) -> set[int]:
        if not self._tree:
            return {self._pid}
        if self._children_of is None:
            import psutil

            from sysgauge.sources.process import default_children_of

            self._children_of = default_children_of(psutil)
        return set(walk_tree(self._pid, self._children_of))

    def _read_device(self, device: _Device, tree: set[int] | None) -> list[Reading]:
        nvml, h, key, ident = self._nvml, device.handle, device.key, device.identity
        out: list[Reading] = []
        if device.failed:
            # Recovering: ask the driver for the handle afresh, as after a reset.
            handle = nvml.call("nvmlDeviceGetHandleByIndex", device.index)
            if handle is not None:
                device.handle = h = handle

        util = nvml.call("nvmlDeviceGetUtilizationRates", h, device=key)
        if util is not None:
            out.append(
                Reading(m.HW_GPU_UTILIZATION, util.gpu / 100.0, device.with_(m.HW_GPU_TASK, "general"))
            )
            out.append(Reading(m.GPU_MEMORY_CONTROLLER_UTILIZATION, util.memory / 100.0, ident))
        for function, task in (
            ("nvmlDeviceGetEncoderUtilization", "encoder"),
            ("nvmlDeviceGetDecoderUtilization", "decoder"),
        ):
            codec = nvml.call(function, h, device=key)
            if codec is not None:
                out.append(Reading(m.HW_GPU_UTILIZATION, codec[0] / 100.0, device.with_(m.HW_GPU_TASK, task)))

        out += self._memory(device)

        temperature = None
        if not nvml.missing("nvmlDeviceGetTemperatureV"):
            result = nvml.call("nvmlDeviceGetTemperatureV", h, _TEMPERATURE_GPU, device=key)
            temperature = None if result is None else float(result)
        if temperature is None and nvml.missing("nvmlDeviceGetTemperatureV"):
            result = nvml.call("nvmlDeviceGetTemperature", h, _TEMPERATURE_GPU, device=key)
            temperature = None if result is None else float(result)
        if temperature is not None:
            out.append(Reading(m.HW_TEMPERATURE, temperature, ident))

        power_mw = nvml.call("nvmlDeviceGetPowerUsage", h, device=key)
        limit_mw = nvml.call("nvmlDeviceGetEnforcedPowerLimit", h, device=key)
        if power_mw is not None:
            out.append(Reading(m.HW_POWER, power_mw / 1000.0, ident))
        if limit_mw:
            out.append(Reading(m.GPU_POWER_LIMIT, limit_mw / 1000.0, ident))
            if power_mw is not None:
                out.append(Reading(m.GPU_POWER_UTILIZATION, power_mw / limit_mw, ident))
        energy_mj = nvml.call("nvmlDeviceGetTotalEnergyConsumption", h, device=key)
        if energy_mj is not None:
            out.append(Reading(m.HW_ENERGY, self._energy(device, energy_mj / 1000.0), ident))

        for clock_type, clock_name in ((_CLOCK_SM, "sm"), (_CLOCK_MEM, "memory")):
            mhz = nvml.call("nvmlDeviceGetClockInfo", h, clock_type, device=f"{key}/clock{clock_type}")
            if mhz is not None:
                out.append(Reading(m.GPU_CLOCK_FREQUENCY, mhz * 1e6, device.with_(m.GPU_CLOCK, clock_name)))
        fan = nvml.call("nvmlDeviceGetFanSpeed", h, device=key)
        if fan is not None:
            out.append(Reading(m.HW_FAN_SPEED_RATIO, fan / 100.0, ident))

        for error_type, name in ((_ECC_CORRECTED, "corrected"), (_ECC_UNCORRECTED, "uncorrected")):
            errors = nvml.call("nvmlDeviceGetTotalEccErrors", h, error_type, _ECC_AGGREGATE, device=key)
            if errors is not None:
                out.append(Reading(m.HW_ERRORS, float(errors), device.with_(m.ERROR_TYPE, name)))

        reasons = None
        if not nvml.missing("nvmlDeviceGetCurrentClocksEventReasons"):
            reasons = nvml.call("nvmlDeviceGetCurrentClocksEventReasons", h, device=key)
        if reasons is None and nvml.missing("nvmlDeviceGetCurrentClocksEventReasons"):
            reasons = nvml.call("nvmlDeviceGetCurrentClocksThrottleReasons", h, device=key)
        if reasons is not None:
            for reason, bit in CLOCK_EVENT_REASONS:
                active = 1.0 if reasons & bit else 0.0
                out.append(
                    Reading(m.GPU_CLOCK_EVENT_ACTIVE, active, device.with_(m.GPU_CLOCK_EVENT_REASON, reason))
                )

        out += self._traffic(device)
        if tree is not None:
            out += self._process_use(device, tree)
        for instance in device.instances:
            out += self._memory(instance)
        return out

    def _memory(self, device: _Device) -> list[Reading]:
        nvml, h, key = self._nvml, device.handle, device.key
        memory = None
        if not nvml.missing("nvmlDeviceGetMemoryInfo_v2"):
            # v2 leaves the driver's reserved memory out of `used` (v1 counts it, since R510).
            memory = nvml.call(
                "nvmlDeviceGetMemoryInfo",
                h,
                device=key,
                symbol="nvmlDeviceGetMemoryInfo_v2",
                version=_MEMORY_V2,
            )
        if memory is None and nvml.missing("nvmlDeviceGetMemoryInfo_v2"):
            memory = nvml.call("nvmlDeviceGetMemoryInfo", h, device=key)
        if memory is None or not memory.total:
            return []
        ident = device.identity
        return [
            Reading(m.HW_GPU_MEMORY_USAGE, float(memory.used), ident),
            Reading(m.HW_GPU_MEMORY_LIMIT, float(memory.total), ident),
            Reading(m.HW_GPU_MEMORY_UTILIZATION, memory.used / memory.total, ident),
        ]

    def _energy(self, device: _Device, joules: float) -> float:
        # The driver's counter restarts at each driver load; the reported counter never goes back.
        if device.energy_last is not None and joules < device.energy_last:
            device.energy_offset += device.energy_last
        device.energy_last = joules
        return device.energy_offset + joules

    def _traffic(self, device: _Device) -> list[Reading]:
        # Cumulative byte counters in one non-blocking call (never nvmlDeviceGetPcieThroughput: ~20 ms).
        nvml, h, key = self._nvml, device.handle, device.key
        if device.fields is None:
            device.fields = [_FIELD_PCIE_TX, _FIELD_PCIE_RX]
            links = nvml.call("nvmlDeviceGetFieldValues", h, [_FIELD_NVLINK_COUNT], device=key)
            if links is not None and links[0].nvmlReturn == 0:
                for link in range(int(links[0].value.uiVal)):
                    device.fields += [(_FIELD_NVLINK_TX_KIB, link), (_FIELD_NVLINK_RX_KIB, link)]
        if not device.fields:
            return []
        values = nvml.call("nvmlDeviceGetFieldValues", h, device.fields, device=key)
        if values is None:
            return []
        # Field id -> running total; NVLink counts KiB per link.
        totals: dict[int, float] = {}
        answered = []
        for requested, value in zip(device.fields, values, strict=True):
            if value.nvmlReturn != 0:
                continue  # this field is not there on this board: ask for it no more
            answered.append(requested)
            field_id = requested if isinstance(requested, int) else requested[0]
            totals[field_id] = totals.get(field_id, 0.0) + value.value.ullVal
        device.fields = answered
        out = []
        for field_id, spec, direction, scale in _TRAFFIC:
            if field_id in totals:
                out.append(
                    Reading(spec, totals[field_id] * scale, device.with_(m.NETWORK_IO_DIRECTION, direction))
                )
        return out

    def _process_use(self, device: _Device, tree: set[int]) -> list[Reading]:
        nvml, h, key = self._nvml, device.handle, device.key
        memory_by_pid: dict[int, float] = {}
        for kind in ("Compute", "Graphics"):
            v3 = f"nvmlDeviceGet{kind}RunningProcesses_v3"
            processes = None
            if not nvml.missing(v3):
                processes = nvml.call(f"nvmlDeviceGet{kind}RunningProcesses", h, device=key, symbol=v3)
            if processes is None and nvml.missing(v3):
                processes = nvml.call(f"nvmlDeviceGet{kind}RunningProcesses_v2", h, device=key)
            for process in processes or ():
                used = process.usedGpuMemory
                if used is None or used == _UNAVAILABLE_MEMORY:
                    used = 0
                # A process can be listed as compute and graphics: count its memory once.
                memory_by_pid[process.pid] = max(memory_by_pid.get(process.pid, 0.0), float(used))
        ours = [pid for pid in memory_by_pid if pid in tree]
        ident = device.identity
        out = [Reading(m.PROCESS_GPU_IN_USE, 1.0 if ours else 0.0, ident)]
        if not ours:
            return out
        out.append(Reading(m.PROCESS_GPU_MEMORY_USAGE, sum(memory_by_pid[pid] for pid in ours), ident))
        samples = nvml.call("nvmlDeviceGetProcessUtilization", h, device.samples_seen_us, device=key)
        sm_by_pid: dict[int, list[int]] = {}
        for sample in samples or ():
            device.samples_seen_us = max(device.samples_seen_us, int(sample.timeStamp))
            if sample.pid in tree:
                sm_by_pid.setdefault(sample.pid, []).append(int(sample.smUtil))
        if samples is not None or nvml.supported("nvmlDeviceGetProcessUtilization", key):
            # No new samples since the last call (NOT_FOUND) means our processes were idle meanwhile.
            utilization = sum(sum(v) / len(v) for v in sm_by_pid.values()) / 100.0
            out.append(Reading(m.PROCESS_GPU_UTILIZATION, min(utilization, 1.0), ident))
        return out


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
