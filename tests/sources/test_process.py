from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sysgauge import metrics as m
from sysgauge.sources.process import ProcessSource, default_children_of, procfs_children, walk_tree
from tests.fakes import FakeProcessState, FakePsutil, ProcCpu, ProcIo, fake_children
from tests.fakes import by_spec as by


def one(readings: list, spec: m.MetricSpec) -> float:  # type: ignore[type-arg]
    values = by(readings, spec)
    assert len(values) == 1, values
    return next(iter(values.values()))


def tree_source(ps: FakePsutil, tree: bool = True) -> ProcessSource:
    source = ProcessSource(ps, pid=4242, tree=tree, children_of=fake_children(ps))
    assert source.probe() is None
    return source


def test_tree_sums_the_root_and_its_descendants() -> None:
    ps = FakePsutil()
    ps.processes[4242].children = [5000]
    ps.processes[5000] = FakeProcessState(children=[5001], rss=50 * 2**20)
    ps.processes[5001] = FakeProcessState(rss=25 * 2**20, threads=1)
    readings = tree_source(ps).read()
    assert one(readings, m.PROCESS_MEMORY_USAGE) == 175 * 2**20
    assert one(readings, m.PROCESS_THREAD_COUNT) == 7
    assert one(readings, m.SYSGAUGE_PROCESS_COUNT) == 3
    assert by(readings, m.PROCESS_CPU_TIME)[((m.CPU_MODE, "user"),)] == 3.0
    # Divided by the CPUs the root may use (2 here), so its rate is a fraction of the machine.
    assert by(readings, m.PROCESS_CPU_UTILIZATION)[((m.CPU_MODE, "user"),)] == 1.5
    assert one(readings, m.PROCESS_MEMORY_UTILIZATION) == pytest.approx(175 * 2**20 / (16 * 2**30))
    only_root = tree_source(ps, tree=False).read()
    assert one(only_root, m.SYSGAUGE_PROCESS_COUNT) == 1


def test_counters_never_go_backwards_when_a_child_exits() -> None:
    ps = FakePsutil()
    ps.processes[4242].children = [5000]
    ps.processes[5000] = FakeProcessState(cpu=ProcCpu(4.0, 1.0), io=ProcIo(10, 20))
    source = tree_source(ps)
    before = by(source.read(), m.PROCESS_CPU_TIME)[((m.CPU_MODE, "user"),)]
    ps.processes[5000].alive = False
    ps.processes[4242].children = []
    readings = source.read()
    after = by(readings, m.PROCESS_CPU_TIME)[((m.CPU_MODE, "user"),)]
    assert before == after == 5.0
    assert one(readings, m.SYSGAUGE_PROCESS_COUNT) == 1
    # The root keeps running: later reads still include the departed child's last reading.
    ps.processes[4242].cpu = ProcCpu(2.0, 0.5)
    assert by(source.read(), m.PROCESS_CPU_TIME)[((m.CPU_MODE, "user"),)] == 6.0


def test_unreadable_child_is_skipped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ps = FakePsutil()
    ps.processes[4242].children = [6000]
    ps.processes[6000] = FakeProcessState(denied=True)
    source = tree_source(ps)
    with caplog.at_level(logging.WARNING, logger="sysgauge"):
        for _ in range(3):
            readings = source.read()
    assert one(readings, m.SYSGAUGE_PROCESS_COUNT) == 1
    assert len([r for r in caplog.records if "AccessDenied" in r.getMessage()]) == 1


def test_root_exit_stops_process_metrics(caplog: pytest.LogCaptureFixture) -> None:
    ps = FakePsutil()
    source = tree_source(ps)
    assert source.read()
    ps.processes[4242].alive = False
    with caplog.at_level(logging.INFO, logger="sysgauge"):
        assert source.read() == []
        assert source.read() == []
    assert source.root_exited
    assert caplog.text.count("exited") == 1


def test_probe_names_a_missing_pid() -> None:
    assert ProcessSource(FakePsutil(), pid=999999).probe() == "process 999999 does not exist"


@pytest.fixture
def real_tree() -> Iterator[subprocess.Popen[bytes]]:
    """A real process with a child and a grandchild, started from a non-main thread too."""
    script = (
        "import subprocess, sys, threading, time\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(60)']\n"
        "a = subprocess.Popen([sys.executable, '-c', "
        "'import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)'] + sleeper)\n"
        "t = threading.Thread(target=lambda: subprocess.Popen(sleeper)); t.start(); t.join()\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    yield proc
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


def test_procfs_walk_finds_the_same_tree_as_psutil(real_tree: subprocess.Popen[bytes]) -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("kernel without /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)")
    deadline = time.monotonic() + 10
    expected = set()
    while time.monotonic() < deadline:  # the grandchild may still be starting
        expected = {p.pid for p in psutil.Process(real_tree.pid).children(recursive=True)}
        if len(expected) >= 3:
            break
        time.sleep(0.05)
    assert len(expected) == 3
    source = ProcessSource(psutil, pid=real_tree.pid, tree=True, children_of=procfs_children())
    assert source.probe() is None
    readings = source.read()
    assert one(readings, m.SYSGAUGE_PROCESS_COUNT) == 4
    rss = sum(psutil.Process(pid).memory_info().rss for pid in expected | {real_tree.pid})
    assert one(readings, m.PROCESS_MEMORY_USAGE) == pytest.approx(rss, rel=0.05)


def test_without_procfs_children_files_psutil_finds_the_same_tree(
    real_tree: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Kernels built without CONFIG_PROC_CHILDREN (and non-Linux systems) fall back to psutil's children()."""
    children_of = default_children_of(psutil, proc=str(tmp_path))  # a /proc without children files
    deadline = time.monotonic() + 10
    expected: set[int] = set()
    while time.monotonic() < deadline:  # the grandchild may still be starting
        expected = {p.pid for p in psutil.Process(real_tree.pid).children(recursive=True)}
        if len(expected) >= 3:
            break
        time.sleep(0.05)
    assert set(walk_tree(real_tree.pid, children_of)) == expected | {real_tree.pid}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert children_of(gone.pid) == []  # an exited process has no children, and no error
    source = ProcessSource(psutil, pid=real_tree.pid, tree=True, children_of=children_of)
    assert one(source.read(), m.SYSGAUGE_PROCESS_COUNT) == 4
