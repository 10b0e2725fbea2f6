"""sysgauge side by side with the Collector's own hostmetrics receiver, on this machine, for 60 s under a
controlled load (one core burning, 300 MB held, 20 MB sent over loopback). The agreement expected of each
metric, and why, is written next to its assertion; docs/hostmetrics.md maps the names and attributes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import mean
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from sysgauge import instrument_system
from tests.otelcol import accepts
from tests.parts import free_port

DURATION_S = 60.0
INTERVAL_S = 5.0
WARMUP_S = 10.0
LOAD = (
    "import time\n"
    "held = bytearray(300 * 10**6)\n"
    "for i in range(0, len(held), 4096): held[i] = 1\n"
    f"end = time.time() + {DURATION_S + 5}\n"
    "while time.time() < end: pass\n"
)


def config(http_port: int, output: Path) -> dict[str, Any]:
    return {
        "receivers": {
            "otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"}}},
            "host_metrics": {
                "collection_interval": f"{INTERVAL_S:g}s",
                "scrapers": {
                    "cpu": {"metrics": {"system.cpu.utilization": {"enabled": True}}},
                    "memory": {},
                    "filesystem": {"include_mount_points": {"mount_points": ["/"], "match_type": "strict"}},
                    "network": {"include": {"interfaces": ["lo"], "match_type": "strict"}},
                },
            },
        },
        "exporters": {"file": {"path": str(output), "flush_interval": "100ms"}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {"metrics": {"receivers": ["otlp", "host_metrics"], "exporters": ["file"]}},
        },
    }


def points(path: Path) -> list[tuple[str, str, dict[str, str], float, float]]:
    """(origin, metric, attributes, time, value) with origin "sysgauge" or "hostmetrics"."""
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        for rm in json.loads(line)["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                origin = "sysgauge" if sm["scope"]["name"] == "sysgauge" else "hostmetrics"
                for metric in sm["metrics"]:
                    data = metric.get("gauge") or metric.get("sum") or {}
                    for p in data.get("dataPoints", []):
                        attrs = {
                            a["key"]: str(next(iter(a["value"].values()))) for a in p.get("attributes", [])
                        }
                        value = float(p["asDouble"] if "asDouble" in p else p.get("asInt", 0))
                        out.append((origin, metric["name"], attrs, int(p["timeUnixNano"]) / 1e9, value))
    return out


def test_sysgauge_agrees_with_hostmetrics(otelcol: Path, tmp_path: Path) -> None:
    http_port = free_port()
    output = tmp_path / "side-by-side.jsonl"
    (tmp_path / "config.yaml").write_text(json.dumps(config(http_port, output)))
    collector = subprocess.Popen(
        [str(otelcol), f"--config={tmp_path / 'config.yaml'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    load = subprocess.Popen([sys.executable, "-c", LOAD])
    server = socket.create_server(("127.0.0.1", 0))
    try:
        deadline = time.monotonic() + 20
        while not accepts(http_port):
            assert collector.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/metrics"),
            export_interval_millis=INTERVAL_S * 1000,
        )
        provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        monitor = instrument_system(
            provider,
            sources=["cpu", "memory", "disk", "network"],
            window=INTERVAL_S,
            network_include=["lo"],
            network_exclude=[],
        )
        started = time.time()
        time.sleep(DURATION_S / 2)
        threading.Thread(target=_drain, args=(server,), daemon=True).start()
        with socket.create_connection(server.getsockname()) as client:
            for _ in range(20):
                client.sendall(b"x" * 10**6)
        time.sleep(DURATION_S / 2)
        provider.shutdown()
        monitor.shutdown()
        time.sleep(1.0)
    finally:
        load.kill()
        collector.terminate()
        collector.wait(10)
        server.close()

    data = [p for p in points(output) if p[3] >= started + WARMUP_S]

    def values(origin: str, name: str, **match: str) -> list[tuple[float, float]]:
        return [
            (t, v)
            for o, n, a, t, v in data
            if o == origin and n == name and all(a.get(k) == want for k, want in match.items())
        ]

    def busy(origin: str, mode_key: str) -> float:
        # Busy = 1 - idle - iowait, averaged over all points (ours per CPU, theirs machine-wide).
        idle = [v for _, v in values(origin, "system.cpu.utilization", **{mode_key: "idle"})]
        wait = [
            v
            for _, v in values(
                origin,
                "system.cpu.utilization",
                **{mode_key: "wait" if origin == "hostmetrics" else "iowait"},
            )
        ]
        return 1 - mean(idle) - (mean(wait) if wait else 0.0)

    # CPU: both read /proc/stat; the windows are offset by up to one interval, and the load is steady.
    ours_busy, their_busy = busy("sysgauge", "cpu.mode"), busy("hostmetrics", "state")
    print(f"\nCPU busy: sysgauge {ours_busy:.4f}, hostmetrics {their_busy:.4f}")
    assert abs(ours_busy - their_busy) < 0.05, (ours_busy, their_busy)
    assert ours_busy > 1 / (os.cpu_count() or 1) - 0.05  # the burning core is seen

    # Memory: both read MemFree and Buffers from /proc/meminfo; "used" differs by definition (ours: total -
    # MemAvailable, as semconv says; hostmetrics: total - free - buffers - cached), so it is not compared.
    for ours_state, their_state in (("free", "free"), ("buffers", "buffered")):
        ours = mean(
            v for _, v in values("sysgauge", "system.memory.usage", **{"system.memory.state": ours_state})
        )
        theirs = mean(v for _, v in values("hostmetrics", "system.memory.usage", state=their_state))
        print(
            f"memory {ours_state}: sysgauge {ours:.0f}, hostmetrics {theirs:.0f} ({ours / theirs - 1:+.3%})"
        )
        assert abs(ours - theirs) <= 0.02 * theirs + 16 * 2**20, (ours_state, ours, theirs)

    # Filesystem: the same statvfs() of "/"; only writes between the two samples can differ.
    for state in ("used", "free", "reserved"):
        ours = mean(
            v
            for _, v in values(
                "sysgauge",
                "system.filesystem.usage",
                **{"system.filesystem.mountpoint": "/", "system.filesystem.state": state},
            )
        )
        theirs = mean(
            v for _, v in values("hostmetrics", "system.filesystem.usage", mountpoint="/", state=state)
        )
        print(f"filesystem {state}: sysgauge {ours:.0f}, hostmetrics {theirs:.0f}")
        assert abs(ours - theirs) <= 0.005 * theirs + 64 * 2**20, (state, ours, theirs)

    # Network: the same /proc/net/dev counter; after the 20 MB both end on nearly the same total.
    ours_lo = max(
        v
        for _, v in values(
            "sysgauge",
            "system.network.io",
            **{"network.interface.name": "lo", "network.io.direction": "transmit"},
        )
    )
    theirs_lo = max(
        v for _, v in values("hostmetrics", "system.network.io", device="lo", direction="transmit")
    )
    print(f"lo transmit: sysgauge {ours_lo:.0f}, hostmetrics {theirs_lo:.0f}")
    assert abs(ours_lo - theirs_lo) <= 0.01 * theirs_lo, (ours_lo, theirs_lo)
    assert theirs_lo > 20 * 10**6


def _drain(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        while connection.recv(1 << 20):
            pass
