"""The monitored process tree: the root (`pid`) and, by default, every descendant.

DataLoader workers and subprocesses are children of the training script, so the tree is what a user
means by "my program". Counters of members that exit keep their last reading, so the tree's totals
never go backwards when a worker ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources.base import Reading
from sysgauge.sources.cgroup import Cgroup

_logger = logging.getLogger("sysgauge")

_USER, _SYSTEM = ((m.CPU_MODE, "user"),), ((m.CPU_MODE, "system"),)
_READ, _WRITE = ((m.DISK_IO_DIRECTION, "read"),), ((m.DISK_IO_DIRECTION, "write"),)
_VOLUNTARY = ((m.CONTEXT_SWITCH_TYPE, "voluntary"),)
_INVOLUNTARY = ((m.CONTEXT_SWITCH_TYPE, "involuntary"),)


class _Counters(NamedTuple):
    user: float = 0.0
    system: float = 0.0
    read_bytes: float = 0.0
    write_bytes: float = 0.0
    voluntary: float = 0.0
    involuntary: float = 0.0

    def plus(self, other: _Counters) -> _Counters:
        return _Counters(*(a + b for a, b in zip(self, other, strict=True)))


ChildrenOf = Callable[[int], list[int]]


def procfs_children(proc: str = "/proc") -> ChildrenOf:
    """Children of a pid from /proc/<pid>/task/<tid>/children: visits only the tree, unlike a scan
    of all of /proc (psutil's children() reads every process's stat file)."""

    def children_of(pid: int) -> list[int]:
        task_dir = f"{proc}/{pid}/task"
        children: list[int] = []
        for tid in os.listdir(task_dir):
            try:
                fd = os.open(f"{task_dir}/{tid}/children", os.O_RDONLY)
            except FileNotFoundError:
                continue  # the thread ended between listdir and open
            try:
                data = os.read(fd, 65536)
            finally:
                os.close(fd)
            children.extend(int(token) for token in data.split())
        return children

    return children_of


def walk_tree(root: int, children_of: ChildrenOf) -> list[int]:
    """The root and every descendant, breadth first; members that exit mid-walk are passed over."""
    pids = [root]
    seen = {root}
    index = 0
    while index < len(pids):
        try:
            children = children_of(pids[index])
        except OSError:
            children = []
        for child in children:
            if child not in seen:
                seen.add(child)
                pids.append(child)
        index += 1
    return pids


def default_children_of(ps: Any, proc: str = "/proc") -> ChildrenOf:
    """procfs where the kernel offers children files (CONFIG_PROC_CHILDREN), else psutil's children()."""
    if _procfs_has_children_files(proc):
        return procfs_children(proc)

    def children_of(pid: int) -> list[int]:
        try:
            return [child.pid for child in ps.Process(pid).children()]
        except (ps.NoSuchProcess, ps.AccessDenied):
            return []

    return children_of


def _procfs_has_children_files(proc: str = "/proc") -> bool:
    pid = os.getpid()
    return os.path.exists(f"{proc}/{pid}/task/{pid}/children")


class ProcessSource:
    name = "process"

    def __init__(
        self,
        ps: Any,
        pid: int,
        tree: bool = True,
        cgroup: Cgroup | None = None,
        children_of: ChildrenOf | None = None,
    ) -> None:
        self._ps = ps
        self._pid = pid
        self._tree = tree
        self._cgroup = cgroup
        self._children_of = children_of or default_children_of(ps)
        self._processes: dict[int, Any] = {}
        self._last: dict[tuple[int, float], _Counters] = {}
        self._departed = _Counters()
        self._cpus = 1.0
        self._memory_limit = 0.0
        self._root_gone = False
        self._log = LogOnce(_logger)
        # The tree as of the last read, for readers that need it between ticks (the span processor).
        self.last_pids: tuple[int, ...] = (pid,)

    @property
    def cpus(self) -> float:
        """CPUs available to the root (affinity, cgroup quota), as found at the probe."""
        return self._cpus

    @property
    def root_exited(self) -> bool:
        return self._root_gone

    def probe(self) -> str | None:
        if not self._ps.pid_exists(self._pid):
            return f"process {self._pid} does not exist"
        try:
            self._ps.Process(self._pid).cpu_times()
        except Exception as exc:
            return f"cannot read process {self._pid}: {exc}"
        self._cpus, self._memory_limit = self._capacity()
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("process")

    def read(self) -> list[Reading]:
        if self._root_gone:
            return []
        pids = self._tree_pids()
        if pids is None:
            return []
        self.last_pids = tuple(pids)
        live: dict[tuple[int, float], _Counters] = {}
        rss = vms = threads = fds = 0.0
        count = 0
        for pid in pids:
            process = self._process(pid)
            if process is None:
                continue
            try:
                with process.oneshot():
                    cpu = process.cpu_times()
                    memory = process.memory_info()
                    n_threads = process.num_threads()
                    n_fds = process.num_fds() if hasattr(process, "num_fds") else 0
                    switches = process.num_ctx_switches()
                    io = self._io(process)
            except self._ps.NoSuchProcess:
                self._processes.pop(pid, None)
                continue
            except self._ps.AccessDenied:
                self._denied(pid)
                continue
            live[(pid, process.create_time())] = _Counters(
                float(cpu.user),
                float(cpu.system),
                float(io[0]),
                float(io[1]),
                float(switches.voluntary),
                float(switches.involuntary),
            )
            rss += memory.rss
            vms += memory.vms
            threads += n_threads
            fds += n_fds
            count += 1
        if not live:
            return []
        for key, counters in self._last.items():
            if key not in live:
                self._departed = self._departed.plus(counters)
        self._last = live
        total = self._departed
        for counters in live.values():
            total = total.plus(counters)
        readings = [
            Reading(m.PROCESS_CPU_TIME, total.user, _USER),
            Reading(m.PROCESS_CPU_TIME, total.system, _SYSTEM),
            Reading(m.PROCESS_CPU_UTILIZATION, total.user / self._cpus, _USER),
            Reading(m.PROCESS_CPU_UTILIZATION, total.system / self._cpus, _SYSTEM),
            Reading(m.PROCESS_MEMORY_USAGE, rss),
            Reading(m.PROCESS_MEMORY_VIRTUAL, vms),
            Reading(m.PROCESS_THREAD_COUNT, threads),
            Reading(m.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT, fds),
            Reading(m.PROCESS_DISK_IO, total.read_bytes, _READ),
            Reading(m.PROCESS_DISK_IO, total.write_bytes, _WRITE),
            Reading(m.PROCESS_CONTEXT_SWITCHES, total.voluntary, _VOLUNTARY),
            Reading(m.PROCESS_CONTEXT_SWITCHES, total.involuntary, _INVOLUNTARY),
            Reading(m.SYSGAUGE_PROCESS_COUNT, float(count)),
        ]
        if self._memory_limit > 0:
            readings.append(Reading(m.PROCESS_MEMORY_UTILIZATION, rss / self._memory_limit))
        return readings

    def close(self) -> None:
        self._processes.clear()

    def _tree_pids(self) -> list[int] | None:
        root = self._process(self._pid)
        if root is None:
            self._root_gone = True
            # Expected at the end of `sysgauge run`; a library user sees it at INFO.
            self._log.info(
                "root-exited", "sysgauge: monitored process %d exited; process metrics stop", self._pid
            )
            return None
        if not self._tree:
            return [self._pid]
        pids = walk_tree(self._pid, self._children_of)
        for gone in set(self._processes) - set(pids):
            del self._processes[gone]
        return pids

    def _process(self, pid: int) -> Any:
        process = self._processes.get(pid)
        if process is not None:
            # psutil compares the creation time, so a recycled pid is not mistaken for the old process.
            if process.is_running():
                return process
            del self._processes[pid]
        try:
            process = self._ps.Process(pid)
        except self._ps.NoSuchProcess:
            return None
        except self._ps.AccessDenied:
            self._denied(pid)
            return None
        self._processes[pid] = process
        return process

    def _io(self, process: Any) -> tuple[float, float]:
        try:
            io = process.io_counters()
        except (AttributeError, NotImplementedError):
            return (0.0, 0.0)  # macOS has no per-process I/O counters
        return (float(io.read_bytes), float(io.write_bytes))

    def _denied(self, pid: int) -> None:
        self._log.warning(
            "access-denied",
            "sysgauge: process %d in the monitored tree is not readable (AccessDenied, another user?); "
            "such processes are skipped",
            pid,
        )

    def _capacity(self) -> tuple[float, float]:
        """CPUs and memory available to the root: affinity and the cgroup v2 limits where finite."""
        cpus = float(self._ps.cpu_count() or 1)
        try:
            cpus = float(len(self._ps.Process(self._pid).cpu_affinity()) or cpus)
        except (AttributeError, NotImplementedError, OSError, self._ps.Error):
            pass
        memory = float(self._ps.virtual_memory().total)
        if self._cgroup is not None:
            limits = self._cgroup.limits(self._pid)
            if limits.cpu_limit is not None:
                cpus = min(cpus, limits.cpu_limit)
            if limits.memory_max is not None:
                memory = min(memory, float(limits.memory_max))
        return max(cpus, 0.01), memory
