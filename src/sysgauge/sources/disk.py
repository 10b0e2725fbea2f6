"""Block-device I/O counters and the usage of the filesystems holding the configured paths."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._filters import NameFilter
from sysgauge.sources.base import Attributes, Reading

_logger = logging.getLogger("sysgauge")
_READ, _WRITE = "read", "write"


class DiskSource:
    name = "disk"

    def __init__(
        self,
        ps: Any,
        paths: Sequence[str] = ("/",),
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> None:
        self._ps = ps
        self._paths = list(paths)
        self._keep = NameFilter(include, exclude)
        self._log = LogOnce(_logger)
        self._device_attrs: dict[str, tuple[Attributes, Attributes, Attributes]] = {}
        self._fs_attrs: dict[str, dict[str, Attributes]] = {}

    def probe(self) -> str | None:
        # Available when either half works: containers often lack /proc/diskstats but have filesystems.
        try:
            if self._ps.disk_io_counters(perdisk=True, nowrap=True):
                return None
            counters_reason = "no block devices"
        except Exception as exc:
            counters_reason = f"cannot read disk counters: {exc}"
        readable = [path for path in self._paths if os.path.exists(path)]
        if readable:
            return None
        return f"{counters_reason}, and no readable disk path"

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("disk")

    def read(self) -> list[Reading]:
        readings: list[Reading] = []
        try:
            counters = self._ps.disk_io_counters(perdisk=True, nowrap=True) or {}
        except Exception as exc:
            # Containers without /proc/diskstats: keep the filesystem part going.
            self._log.warning(f"diskstats:{exc}", "sysgauge: disk counters unreadable, skipped: %s", exc)
            counters = {}
        for device, io in counters.items():
            if not self._keep(device):
                continue
            plain, read, write = self._attributes_of(device)
            readings += (
                Reading(m.SYSTEM_DISK_IO, float(io.read_bytes), read),
                Reading(m.SYSTEM_DISK_IO, float(io.write_bytes), write),
                Reading(m.SYSTEM_DISK_OPERATIONS, float(io.read_count), read),
                Reading(m.SYSTEM_DISK_OPERATIONS, float(io.write_count), write),
                Reading(m.SYSTEM_DISK_OPERATION_TIME, io.read_time / 1000.0, read),
                Reading(m.SYSTEM_DISK_OPERATION_TIME, io.write_time / 1000.0, write),
            )
            busy = getattr(io, "busy_time", None)
            if busy is not None:
                readings.append(Reading(m.SYSTEM_DISK_IO_TIME, busy / 1000.0, plain))
        for path in self._paths:
            readings += self._filesystem(path)
        return readings

    def close(self) -> None:
        pass

    def _attributes_of(self, device: str) -> tuple[Attributes, Attributes, Attributes]:
        attrs = self._device_attrs.get(device)
        if attrs is None:
            base = ((m.SYSTEM_DEVICE, device),)
            attrs = (base, (*base, (m.DISK_IO_DIRECTION, _READ)), (*base, (m.DISK_IO_DIRECTION, _WRITE)))
            if len(self._device_attrs) < 4096:
                self._device_attrs[device] = attrs
        return attrs

    def _filesystem(self, path: str) -> list[Reading]:
        try:
            usage = self._ps.disk_usage(path)
        except OSError as exc:
            # A path that vanished (an unmounted volume) is skipped until it comes back.
            self._log.warning(
                f"path:{path}:{exc.errno}",
                "sysgauge: disk path %s unreadable, skipped: %s",
                path,
                exc.strerror or exc,
            )
            return []
        states = self._fs_attrs.get(path)
        if states is None:
            states = self._filesystem_attributes(path)
        total = float(usage.total)
        used, free = float(usage.used), float(usage.free)
        reserved = max(0.0, total - used - free)
        readings = []
        for state, value in (("used", used), ("free", free), ("reserved", reserved)):
            readings.append(Reading(m.SYSTEM_FILESYSTEM_USAGE, value, states[state]))
            if total > 0:
                readings.append(Reading(m.SYSTEM_FILESYSTEM_UTILIZATION, value / total, states[state]))
        return readings

    def _filesystem_attributes(self, path: str) -> dict[str, Attributes]:
        mountpoint, device, fstype, mode = os.path.realpath(path), "", "", "rw"
        try:
            partitions = self._ps.disk_partitions(all=True)
        except Exception:
            partitions = []
        real = os.path.realpath(path)
        best = ""
        for part in partitions:
            mp = part.mountpoint
            inside = real == mp or real.startswith(mp.rstrip("/") + "/")
            if inside and len(mp) > len(best):
                best = mp
                mountpoint, device, fstype = mp, part.device, part.fstype
                mode = "ro" if "ro" in part.opts.split(",") else "rw"
        base = (
            (m.SYSTEM_DEVICE, device),
            (m.FILESYSTEM_MOUNTPOINT, mountpoint),
            (m.FILESYSTEM_TYPE, fstype),
            (m.FILESYSTEM_MODE, mode),
        )
        states: dict[str, Attributes] = {
            state: (*base, (m.FILESYSTEM_STATE, state)) for state in ("used", "free", "reserved")
        }
        self._fs_attrs[path] = states
        return states
