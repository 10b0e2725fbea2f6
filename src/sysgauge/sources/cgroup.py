"""cgroup v2 limits of the monitored process, so container users see values relative to their limits.

Reads `/proc/<pid>/cgroup` for the unified hierarchy's path and the `cpu.max` / `memory.max` /
`memory.current` files there (and in ancestors: a limit set on a parent cgroup applies too).
Only cgroup v2 is supported; on v1 or outside a cgroup with finite limits the host's totals apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CgroupLimits:
    directory: str | None  # the process's cgroup directory, when its limits are readable
    cpu_limit: float | None  # CPUs (quota / period), None when unlimited
    memory_max: int | None  # bytes, None when unlimited


class Cgroup:
    """Reads the v2 hierarchy mounted at `root` (tests pass a directory they built)."""

    def __init__(self, root: str = "/sys/fs/cgroup", proc: str = "/proc") -> None:
        self._root = root
        self._proc = proc

    def limits(self, pid: int) -> CgroupLimits:
        directory = self._directory(pid)
        if directory is None:
            return CgroupLimits(None, None, None)
        cpu: float | None = None
        memory: float | None = None
        # Walk up to the mount root: the tightest limit on the path is the one that binds.
        current = directory
        while True:
            cpu = _min(cpu, _read_cpu_max(os.path.join(current, "cpu.max")))
            memory = _min(memory, _read_int(os.path.join(current, "memory.max")))
            if os.path.normpath(current) == os.path.normpath(self._root):
                break
            current = os.path.dirname(current)
        return CgroupLimits(directory, cpu, None if memory is None else int(memory))

    def memory_current(self, directory: str) -> int | None:
        return _read_int(os.path.join(directory, "memory.current"))

    def _directory(self, pid: int) -> str | None:
        try:
            with open(os.path.join(self._proc, str(pid), "cgroup")) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return None
        for line in lines:
            # The unified (v2) hierarchy is the line with hierarchy id 0 and no controllers.
            if line.startswith("0::"):
                relative = line[3:].strip().lstrip("/")
                directory = os.path.join(self._root, relative) if relative else self._root
                if os.path.exists(os.path.join(directory, "cgroup.controllers")):
                    return directory
        return None


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    if text == "max" or not text.isdigit():
        return None
    return int(text)


def _read_cpu_max(path: str) -> float | None:
    try:
        with open(path) as handle:
            quota, _, period = handle.read().strip().partition(" ")
    except OSError:
        return None
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)
