from __future__ import annotations

import os
from pathlib import Path

from sysgauge import metrics as m
from sysgauge.sources.cgroup import Cgroup
from sysgauge.sources.memory import MemorySource
from tests.fakes import FakePsutil
from tests.fakes import by_spec as by


def test_host_memory_used_is_total_minus_available() -> None:
    ps = FakePsutil()
    source = MemorySource(ps)
    assert source.probe() is None
    readings = source.read()
    usage = by(readings, m.SYSTEM_MEMORY_USAGE)
    assert usage[(("system.memory.state", "used"),)] == 4 * 2**30
    assert by(readings, m.SYSTEM_MEMORY_UTILIZATION)[(("system.memory.state", "used"),)] == 0.25
    assert by(readings, m.SYSTEM_MEMORY_LIMIT) == {(): 16 * 2**30}
    assert by(readings, m.SYSTEM_MEMORY_LINUX_AVAILABLE) == {(): 12 * 2**30}
    assert by(readings, m.SYSTEM_PAGING_UTILIZATION)[(("system.paging.state", "used"),)] == 0.25


def test_no_swap_means_no_paging_points() -> None:
    ps = FakePsutil()
    ps.swap = type(ps.swap)(0, 0, 0)
    assert not by(MemorySource(ps).read(), m.SYSTEM_PAGING_USAGE)


def make_cgroup(tmp_path: Path, memory_max: str, current: str, cpu_max: str = "max 100000") -> Cgroup:
    proc = tmp_path / "proc" / "77"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text("0::/kubepods/pod1/ctr\n")
    leaf = tmp_path / "cg" / "kubepods" / "pod1" / "ctr"
    leaf.mkdir(parents=True)
    for directory in (tmp_path / "cg", leaf.parent.parent, leaf.parent, leaf):
        (directory / "cgroup.controllers").write_text("cpu memory\n")
    (leaf / "memory.max").write_text(memory_max + "\n")
    (leaf / "memory.current").write_text(current + "\n")
    (leaf / "cpu.max").write_text(cpu_max + "\n")
    # A tighter CPU limit higher up binds too.
    (leaf.parent / "cpu.max").write_text("150000 100000\n")
    return Cgroup(root=str(tmp_path / "cg"), proc=str(tmp_path / "proc"))


def test_cgroup_limit_makes_memory_relative_to_memory_max(tmp_path: Path) -> None:
    cgroup = make_cgroup(tmp_path, memory_max=str(2 * 2**30), current=str(2**29))
    limits = cgroup.limits(77)
    assert limits.memory_max == 2 * 2**30
    assert limits.cpu_limit == 1.5
    source = MemorySource(FakePsutil(), cgroup=cgroup, pid=77)
    assert source.probe() is None
    readings = source.read()
    assert by(readings, m.SYSTEM_MEMORY_UTILIZATION)[(("system.memory.state", "used"),)] == 0.25
    assert by(readings, m.SYSTEM_MEMORY_LIMIT) == {(): 2 * 2**30}
    assert by(readings, m.SYSTEM_MEMORY_LINUX_AVAILABLE) == {(): 2 * 2**30 - 2**29}


def test_unlimited_cgroup_falls_back_to_host_totals(tmp_path: Path) -> None:
    cgroup = make_cgroup(tmp_path, memory_max="max", current="123")
    source = MemorySource(FakePsutil(), cgroup=cgroup, pid=77)
    source.probe()
    assert by(source.read(), m.SYSTEM_MEMORY_LIMIT) == {(): 16 * 2**30}


def test_cgroup_v1_or_missing_proc_entry_means_no_limits(tmp_path: Path) -> None:
    (tmp_path / "proc" / "5").mkdir(parents=True)
    (tmp_path / "proc" / "5" / "cgroup").write_text("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    cgroup = Cgroup(root=str(tmp_path), proc=str(tmp_path / "proc"))
    assert cgroup.limits(5).directory is None
    assert cgroup.limits(6).memory_max is None


def test_real_machine_cgroup_reading_does_not_fail() -> None:
    limits = Cgroup().limits(os.getpid())
    assert limits.memory_max is None or limits.memory_max > 0
