"""Controlled load in, sysgauge's numbers out: the values must match what was done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from tests.conftest import points, value

pytestmark = pytest.mark.accuracy

REPO = Path(__file__).resolve().parent.parent
MB = 10**6


@pytest.fixture
def collect() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


def child(script: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_burning_one_core_shows_in_process_and_system_cpu(
    collect: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = collect
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # The machine's own background load first, so the burner's share can be told apart from it.
    idle_monitor = instrument_system(provider, sources=["cpu"], sampling_interval=0.25, window=2.0)
    time.sleep(2.2)
    baseline = points(reader.get_metrics_data(), "system.cpu.utilization")
    idle_monitor.shutdown()
    baseline_busy = sum(v for v, a in baseline if a["cpu.mode"] not in ("idle", "iowait"))
    burner = child(
        "import time\nprint('ready', flush=True)\nend = time.time() + 30\nwhile time.time() < end: pass\n"
    )
    try:
        monitor = instrument_system(provider, pid=burner.pid, sampling_interval=0.25, window=2.5)
        time.sleep(2.8)
        data = reader.get_metrics_data()
        monitor.shutdown()
    finally:
        burner.kill()
        burner.wait()
    process_cpu = sum(v for v, _ in points(data, "process.cpu.utilization"))
    assert process_cpu == pytest.approx(1 / cpus, abs=0.08)
    per_cpu = points(data, "system.cpu.utilization")
    busy = sum(v for v, a in per_cpu if a["cpu.mode"] not in ("idle", "iowait"))
    n = len({a["cpu.logical_number"] for _, a in per_cpu})
    assert n == (os.cpu_count() or 1)
    # The burner adds one core's worth to what the machine was already doing (capped at all cores busy);
    # other work that starts meanwhile may add more, never less.
    expected = min(1.0, baseline_busy / n + 1 / n)
    assert expected - 0.1 <= busy / n <= min(1.0, expected + 0.35), (busy / n, baseline_busy / n)


def test_allocating_200_mb_raises_process_memory_by_that(
    collect: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = collect
    script = (
        "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
        "block = bytearray(200 * 10**6)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"
        "print('ready', flush=True)\nsys.stdin.readline()\n"
    )
    proc = child(script)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        monitor = instrument_system(provider, pid=proc.pid, sampling_interval=0.1, window=0.5)
        time.sleep(0.6)
        before = value(reader.get_metrics_data(), "process.memory.usage")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.7)  # the whole window now holds samples taken after the allocation
        data = reader.get_metrics_data()
        monitor.shutdown()
    finally:
        proc.kill()
        proc.wait()
    assert value(data, "process.memory.usage") - before == pytest.approx(200 * MB, rel=0.05)
    assert value(data, "sysgauge.peak.process.memory.usage") >= value(data, "process.memory.usage")


def disk_written(reader: InMemoryMetricReader) -> float:
    return sum(
        v for v, a in points(reader.get_metrics_data(), "system.disk.io") if a["disk.io.direction"] == "write"
    )


def test_writing_and_fsyncing_100_mb_grows_disk_writes(
    collect: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = collect
    # Under the repository rather than /tmp, which may be a tmpfs with no block device behind it.
    directory = REPO / ".cache"
    directory.mkdir(exist_ok=True)
    target = directory / f"accuracy-{os.getpid()}.bin"
    # Flush what earlier work left dirty (a pip install, other tests), so the kernel's writeback of it does
    # not land inside the measurement.
    os.sync()
    monitor = instrument_system(provider, sources=["disk"], sampling_interval=0.1, window=0.3)
    try:
        before = disk_written(reader)
        chunk = os.urandom(MB)
        with open(target, "wb") as handle:
            for _ in range(100):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(0.5)
        monitor.sampler.tick()
        grown = disk_written(reader) - before
    finally:
        monitor.shutdown()
        target.unlink(missing_ok=True)
    if grown == 0 and os.environ.get("CI", "").lower() != "true":
        pytest.skip("the repository's filesystem is not backed by a block device sysgauge can see")
    # Partitions and their whole disk may both be listed; filesystem journaling adds a little.
    assert grown >= 100 * MB * 0.98
    assert grown <= 100 * MB * 2.2


def test_sending_50_mb_over_loopback_grows_network_io_on_lo(
    collect: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    provider, reader = collect
    monitor = instrument_system(
        provider,
        sources=["network"],
        network_include=["lo"],
        network_exclude=[],
        sampling_interval=0.1,
        window=0.3,
    )

    def sent() -> float:
        return value(
            reader.get_metrics_data(),
            "system.network.io",
            **{"network.interface.name": "lo", "network.io.direction": "transmit"},
        )

    try:
        before = sent()
        server = socket.create_server(("127.0.0.1", 0))
        received = 0

        def drain() -> None:
            nonlocal received
            connection, _ = server.accept()
            with connection:
                while data := connection.recv(1 << 20):
                    received += len(data)

        thread = threading.Thread(target=drain)
        thread.start()
        with socket.create_connection(server.getsockname()) as client:
            payload = b"x" * MB
            for _ in range(50):
                client.sendall(payload)
        thread.join(10)
        server.close()
        assert received == 50 * MB
        time.sleep(0.3)
        monitor.sampler.tick()
        grown = sent() - before
    finally:
        monitor.shutdown()
    # Payload plus TCP/IP headers (~3 % at a 64 KiB loopback MTU), plus whatever else used lo meanwhile.
    assert 50 * MB <= grown <= 50 * MB * 1.15
