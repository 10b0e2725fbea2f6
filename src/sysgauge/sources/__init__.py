"""The sources, built from Options. One tuple of names, iterated; no per-source branches elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psutil

from sysgauge.options import SOURCE_NAMES, Options
from sysgauge.sources.amd import AmdSource
from sysgauge.sources.apple import AppleSource
from sysgauge.sources.base import Reading, Source
from sysgauge.sources.cgroup import Cgroup
from sysgauge.sources.cpu import CpuSource
from sysgauge.sources.disk import DiskSource
from sysgauge.sources.ipu import IpuSource
from sysgauge.sources.memory import MemorySource
from sysgauge.sources.network import NetworkSource
from sysgauge.sources.nvidia import NvidiaSource
from sysgauge.sources.openmetrics import OpenMetricsSource
from sysgauge.sources.process import ProcessSource
from sysgauge.sources.tpu import TpuSource
from sysgauge.sources.trainium import TrainiumSource

__all__ = ["SOURCE_FACTORIES", "Reading", "Source", "build_source"]


def _cgroup(options: Options) -> Cgroup | None:
    return Cgroup() if options.cgroup else None


def _pid(options: Options) -> int:
    return options.pid if options.pid is not None else os.getpid()


SOURCE_FACTORIES: dict[str, Callable[[Options, Any], Source]] = {
    "cpu": lambda o, ps: CpuSource(ps, per_cpu=o.per_cpu),
    "memory": lambda o, ps: MemorySource(ps, cgroup=_cgroup(o), pid=_pid(o)),
    "disk": lambda o, ps: DiskSource(ps, paths=o.disk_paths, include=o.disk_include, exclude=o.disk_exclude),
    "network": lambda o, ps: NetworkSource(ps, include=o.network_include, exclude=o.network_exclude),
    "process": lambda o, ps: ProcessSource(ps, pid=_pid(o), tree=o.process_tree, cgroup=_cgroup(o)),
    "nvidia": lambda o, ps: NvidiaSource(
        pid=_pid(o), tree=o.process_tree, processes=o.nvidia_processes, xid=o.nvidia_xid
    ),
    "amd": lambda o, ps: AmdSource(interval=o.sampling_interval),
    "apple": lambda o, ps: AppleSource(interval=o.sampling_interval),
    "tpu": lambda o, ps: TpuSource(address=o.tpu_address),
    "trainium": lambda o, ps: TrainiumSource(
        tool_path=o.neuron_monitor_path,
        pid=_pid(o),
        tree=o.process_tree,
        all_runtimes=o.neuron_all_runtimes,
        period=o.sampling_interval,
        device_glob="/dev/neuron*",
    ),
    "ipu": lambda o, ps: IpuSource(pid=_pid(o), tree=o.process_tree, interval=o.sampling_interval),
    "openmetrics": lambda o, ps: OpenMetricsSource(
        o.openmetrics_endpoints,
        o.openmetrics_filters,
        o.openmetrics_headers,
        interval=o.openmetrics_interval or o.sampling_interval,
        timeout=o.openmetrics_timeout,
        max_bytes=o.openmetrics_max_bytes,
        max_series=o.openmetrics_max_series,
    ),
}
assert tuple(SOURCE_FACTORIES) == SOURCE_NAMES


def build_source(name: str, options: Options, ps: Any = psutil) -> Source:
    return SOURCE_FACTORIES[name](options, ps)
