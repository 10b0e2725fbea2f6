from __future__ import annotations

import logging

import pytest

from sysgauge import metrics as m
from sysgauge.options import Options
from sysgauge.sources.disk import DiskSource
from tests.fakes import DiskIo, FakePsutil
from tests.fakes import by_spec as by


def test_default_exclusions_leave_out_loop_devices_and_times_are_seconds() -> None:
    ps = FakePsutil()
    source = DiskSource(ps, paths=["/"], exclude=Options().disk_exclude)
    readings = source.read()
    io = by(readings, m.SYSTEM_DISK_IO)
    assert io == {
        (("system.device", "sda"), ("disk.io.direction", "read")): 409600.0,
        (("system.device", "sda"), ("disk.io.direction", "write")): 819200.0,
    }
    assert by(readings, m.SYSTEM_DISK_IO_TIME) == {(("system.device", "sda"),): 0.09}
    assert (
        by(readings, m.SYSTEM_DISK_OPERATION_TIME)[(("system.device", "sda"), ("disk.io.direction", "read"))]
        == 0.05
    )


def test_filesystem_usage_states_and_attributes() -> None:
    ps = FakePsutil()
    readings = DiskSource(ps, paths=["/"]).read()
    usage = by(readings, m.SYSTEM_FILESYSTEM_USAGE)
    states = {dict(a)["system.filesystem.state"]: v for a, v in usage.items()}
    assert states == {"used": 40 * 2**30, "free": 50 * 2**30, "reserved": 10 * 2**30}
    attrs = dict(next(iter(usage)))
    assert attrs["system.filesystem.mountpoint"] == "/"
    assert attrs["system.device"] == "/dev/sda1"
    assert attrs["system.filesystem.type"] == "ext4" and attrs["system.filesystem.mode"] == "rw"
    util = by(readings, m.SYSTEM_FILESYSTEM_UTILIZATION)
    assert sum(util.values()) == pytest.approx(1.0)


def test_include_patterns_are_full_matches() -> None:
    ps = FakePsutil()
    ps.disks["sdb"] = ps.disks["sda"]
    ps.disks["nvme0n1"] = ps.disks["sda"]
    readings = DiskSource(ps, paths=[], include=["sd[a-z]"]).read()
    assert {dict(a)["system.device"] for a in by(readings, m.SYSTEM_DISK_IO)} == {"sda", "sdb"}


def test_a_vanished_path_is_skipped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ps = FakePsutil()
    source = DiskSource(ps, paths=["/", "/mnt/gone"])
    with caplog.at_level(logging.WARNING, logger="sysgauge"):
        for _ in range(3):
            readings = source.read()
    mounts = {dict(a)["system.filesystem.mountpoint"] for a in by(readings, m.SYSTEM_FILESYSTEM_USAGE)}
    assert mounts == {"/"}
    assert len([r for r in caplog.records if "/mnt/gone" in r.getMessage()]) == 1
    assert by(readings, m.SYSTEM_DISK_IO)  # the counters go on


def test_unreadable_diskstats_keeps_filesystems(caplog: pytest.LogCaptureFixture) -> None:
    ps = FakePsutil()

    def broken(perdisk: bool = False, nowrap: bool = True) -> dict[str, DiskIo]:
        raise FileNotFoundError(2, "No such file or directory", "/proc/diskstats")

    ps.disk_io_counters = broken  # type: ignore[method-assign]
    source = DiskSource(ps, paths=["/"])
    assert source.probe() is None
    readings = source.read()
    assert by(readings, m.SYSTEM_FILESYSTEM_USAGE) and not by(readings, m.SYSTEM_DISK_IO)
