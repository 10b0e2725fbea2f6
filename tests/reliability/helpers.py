"""What the reliability tests share: resource snapshots, a figures log, a loopback OTLP sink, a hanging
source, and the fake NVML driver pointed at a scenario without pytest's function-scoped fixtures."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sysgauge import metrics as m
from sysgauge.sources import _nvml
from sysgauge.sources.base import Reading
from tests.httpfake import loopback_server
from tests.nvml_fake.scenario import FakeNvml

MiB = 2**20
REPO = Path(__file__).resolve().parents[2]
OPENMETRICS_SAMPLES = REPO / "tests" / "fixtures" / "openmetrics"
L4_TEXT = (OPENMETRICS_SAMPLES / "openmetrics_dcgm-exporter_nvidia-l4_1gpu_driver580.txt").read_bytes()
# Set this variable to a file name and every test appends its measured figures there as JSON lines
# (docs/reliability.md quotes them).
REPORT_ENV = "RELIABILITY_FIGURES"


def record(case: str, **figures: object) -> None:
    """Append one line of figures for `case` to $RELIABILITY_FIGURES, when it is set."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"case": case, **figures}, default=str) + "\n")


@dataclass(frozen=True)
class Usage:
    """What this process holds: resident memory, open descriptors, OS threads, live descendants."""

    rss: int
    fds: int
    threads: int
    children: int
    python_threads: tuple[str, ...]

    def describe(self) -> dict[str, object]:
        return {
            "rss_mib": round(self.rss / MiB, 2),
            "fds": self.fds,
            "threads": self.threads,
            "children": self.children,
        }


def usage() -> Usage:
    me = psutil.Process()
    return Usage(
        rss=me.memory_info().rss,
        fds=me.num_fds(),
        threads=me.num_threads(),
        children=len(me.children(recursive=True)),
        python_threads=tuple(sorted(t.name for t in threading.enumerate())),
    )


def sysgauge_threads() -> list[str]:
    """Names of the live threads sysgauge started (all its threads are named sysgauge-*)."""
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("sysgauge-"))


def wait_until(predicate: Callable[[], bool], timeout: float, message: str) -> float:
    """Poll until `predicate()`; return how long it took; fail with `message` after `timeout` seconds."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, message
        time.sleep(0.01)
    return time.monotonic() - started


def nvml_users() -> int:
    """How many sysgauge handles hold NVML initialized (0 when every NVIDIA source was closed)."""
    return _nvml._init_users


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the fake NVIDIA driver ----------------------------------------------------------------------------


def gpu(index: int, **overrides: Any) -> dict[str, Any]:
    """One plain datacenter GPU of the fake driver's scenario format."""
    device: dict[str, Any] = {
        "uuid": f"GPU-{index:08d}-rel0-4a5b-8c9d-{index:012d}",
        "name": "NVIDIA H100 80GB HBM3",
        "pci_bus_id": f"00000000:{0x18 + index:02X}:00.0",
        "util": {"gpu": 10 + index, "memory": 5},
        "memory": {"total": 80 * 2**30, "used": 4 * 2**30, "reserved": 2**29, "free": 75 * 2**30},
        "temperature": 40,
        "power_mw": 300_000,
        "power_limit_mw": 700_000,
        "energy_mj": 10**9,
        "clocks": {"sm": 1980, "mem": 2619},
        "pcie": {"tx": 10**9, "rx": 2 * 10**9},
        "ecc": {"corrected": 0, "uncorrected": 0},
        "processes": {"compute": [{"pid": os.getpid(), "memory": 2**30}]},
        "process_samples": [{"pid": os.getpid(), "sm": 30}],
    }
    device.update(overrides)
    return device


def two_gpus() -> dict[str, Any]:
    return {"driver_version": "550.54.15", "devices": [gpu(0), gpu(1)]}


@contextmanager
def nvml_scenario(fake: FakeNvml, scenario: dict[str, Any], name: str = "reliability") -> Iterator[None]:
    """Point the fake driver at `scenario` (read at the next nvmlInit) for the duration of the block.

    Unlike the `use_scenario` fixture this works inside a hypothesis example, and it does not check that
    NVML was shut down: the tests that care assert `nvml_users()` themselves."""
    previous = os.environ.get("FAKE_NVML_SCENARIO")
    os.environ["FAKE_NVML_SCENARIO"] = str(fake.write(scenario, name))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("FAKE_NVML_SCENARIO", None)
        else:
            os.environ["FAKE_NVML_SCENARIO"] = previous


# --- a source whose read() blocks -------------------------------------------------------------------


class HangingSource:
    """A Source whose read() blocks once `hang` is set, until `release` is set (a stuck NFS stat, a driver
    call that never returns). Its reading counts its reads, under the attribute `source=<name>`."""

    def __init__(self, name: str = "hanging") -> None:
        self.name = name
        self.hang = threading.Event()
        self.release = threading.Event()
        self.inside = threading.Event()  # set while a read() is blocked
        self.reads = 0
        self.closes = 0
        self.closed_during_read = False

    def probe(self) -> str | None:
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return (m.PROCESS_THREAD_COUNT,)

    def read(self) -> list[Reading]:
        self.reads += 1
        if self.hang.is_set() and not self.release.is_set():
            self.inside.set()
            self.release.wait()
            self.inside.clear()
        return [Reading(m.PROCESS_THREAD_COUNT, float(self.reads), (("source", self.name),))]

    def close(self) -> None:
        self.closes += 1
        self.closed_during_read = self.closed_during_read or self.inside.is_set()


# --- an OTLP/HTTP endpoint that misbehaves ------------------------------------------------------------


@dataclass
class Sink:
    url: str
    status: int
    hang: float
    posts: list[float] = field(default_factory=list)  # monotonic arrival times
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def otlp_sink(status: int = 200, hang: float = 0.0) -> Iterator[Sink]:
    """A loopback OTLP/HTTP receiver answering every POST with `status`, after `hang` seconds.

    (tests/httpfake.py's server always answers POSTs at once with 200; this one can be slow or refuse.)"""
    sink = Sink(url="", status=status, hang=hang)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            sink.posts.append(time.monotonic())
            if sink.hang:
                sink.release.wait(sink.hang)
            self.send_response(sink.status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_server(Handler, sink.release) as port:
        sink.url = f"http://127.0.0.1:{port}/v1/metrics"
        yield sink
