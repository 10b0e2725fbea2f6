"""Small typed doubles handed to sources through their constructors (no string patching)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psutil


class CpuTimes(NamedTuple):
    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float


class VirtualMemory(NamedTuple):
    total: int
    available: int
    free: int
    buffers: int
    cached: int


class Swap(NamedTuple):
    total: int
    used: int
    free: int


class DiskIo(NamedTuple):
    read_count: int
    write_count: int
    read_bytes: int
    write_bytes: int
    read_time: int
    write_time: int
    busy_time: int


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


class Partition(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    opts: str


class NetIo(NamedTuple):
    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


class ProcCpu(NamedTuple):
    user: float
    system: float


class ProcMem(NamedTuple):
    rss: int
    vms: int


class ProcIo(NamedTuple):
    read_bytes: int
    write_bytes: int


class CtxSwitches(NamedTuple):
    voluntary: int
    involuntary: int


@dataclass
class FakeProcessState:
    cpu: ProcCpu = field(default_factory=lambda: ProcCpu(1.0, 0.5))
    rss: int = 100 * 2**20
    vms: int = 400 * 2**20
    threads: int = 3
    fds: int = 7
    io: ProcIo = field(default_factory=lambda: ProcIo(1000, 2000))
    switches: CtxSwitches = field(default_factory=lambda: CtxSwitches(10, 2))
    children: list[int] = field(default_factory=list)
    denied: bool = False
    alive: bool = True
    create_time: float = 1000.0


class FakeProcess:
    def __init__(self, ps: FakePsutil, pid: int) -> None:
        self._ps = ps
        self.pid = pid

    @property
    def _state(self) -> FakeProcessState:
        state = self._ps.processes.get(self.pid)
        if state is None or not state.alive:
            raise psutil.NoSuchProcess(self.pid)
        if state.denied:
            raise psutil.AccessDenied(self.pid)
        return state

    @contextlib.contextmanager
    def oneshot(self) -> Iterator[None]:
        yield

    def is_running(self) -> bool:
        state = self._ps.processes.get(self.pid)
        return state is not None and state.alive

    def create_time(self) -> float:
        return self._state.create_time

    def cpu_times(self) -> ProcCpu:
        return self._state.cpu

    def memory_info(self) -> ProcMem:
        return ProcMem(self._state.rss, self._state.vms)

    def num_threads(self) -> int:
        return self._state.threads

    def num_fds(self) -> int:
        return self._state.fds

    def io_counters(self) -> ProcIo:
        return self._state.io

    def num_ctx_switches(self) -> CtxSwitches:
        return self._state.switches

    def cpu_affinity(self) -> list[int]:
        return list(range(self._ps.cpus))

    def children(self) -> list[FakeProcess]:
        return [FakeProcess(self._ps, pid) for pid in self._state.children]


class FakePsutil:
    """The subset of the psutil module the sources call, with values a test sets."""

    NoSuchProcess = psutil.NoSuchProcess
    AccessDenied = psutil.AccessDenied
    Error = psutil.Error

    def __init__(self) -> None:
        self.cpus = 2
        self.per_cpu = [CpuTimes(10, 0, 5, 100, 1, 0.5, 0.5, 0) for _ in range(self.cpus)]
        self.memory = VirtualMemory(
            total=16 * 2**30, available=12 * 2**30, free=8 * 2**30, buffers=2**28, cached=2**30
        )
        self.swap = Swap(total=2**30, used=2**28, free=3 * 2**28)
        self.disks: dict[str, DiskIo] = {
            "sda": DiskIo(100, 200, 4096 * 100, 4096 * 200, 50, 70, 90),
            "loop0": DiskIo(1, 1, 1, 1, 1, 1, 1),
        }
        self.usage: dict[str, DiskUsage] = {"/": DiskUsage(100 * 2**30, 40 * 2**30, 50 * 2**30)}
        self.partitions = [Partition("/dev/sda1", "/", "ext4", "rw,relatime")]
        self.nics: dict[str, NetIo] = {
            "eth0": NetIo(1000, 2000, 10, 20, 0, 1, 2, 3),
            "lo": NetIo(5, 5, 1, 1, 0, 0, 0, 0),
        }
        self.processes: dict[int, FakeProcessState] = {4242: FakeProcessState()}
        self.calls = 0

    def cpu_times(self, percpu: bool = False) -> list[CpuTimes]:
        self.calls += 1
        return list(self.per_cpu)

    def cpu_count(self) -> int:
        return self.cpus

    def virtual_memory(self) -> VirtualMemory:
        self.calls += 1
        return self.memory

    def swap_memory(self) -> Swap:
        return self.swap

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> dict[str, DiskIo]:
        self.calls += 1
        return dict(self.disks)

    def disk_usage(self, path: str) -> DiskUsage:
        if path not in self.usage:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.usage[path]

    def disk_partitions(self, all: bool = False) -> list[Partition]:
        return list(self.partitions)

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> dict[str, NetIo]:
        self.calls += 1
        return dict(self.nics)

    def pid_exists(self, pid: int) -> bool:
        return pid in self.processes and self.processes[pid].alive

    def Process(self, pid: int) -> FakeProcess:
        state = self.processes.get(pid)
        if state is None or not state.alive:
            raise psutil.NoSuchProcess(pid)
        return FakeProcess(self, pid)


def fake_children(ps: FakePsutil) -> Any:
    """A children_of() over the fake process table, like procfs_children() over /proc."""

    def children_of(pid: int) -> list[int]:
        state = ps.processes.get(pid)
        return list(state.children) if state is not None and state.alive else []

    return children_of


def by_spec(readings: list[Any], spec: Any) -> dict[tuple[tuple[str, object], ...], float]:
    """{attributes: value} of the readings of one metric."""
    return {r.attributes: r.value for r in readings if r.spec is spec}
