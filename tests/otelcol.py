"""The real OpenTelemetry Collector for tests: built by scripts/build-otelcol, run on free loopback ports.

The fixtures here are registered in tests/conftest.py so any test can take `otelcol` (the binary) or
`collector` (collector-config/local.yaml running, its file exporter writing into the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.parts import free_port, stop
from tests.parts import missing as _missing

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "collector-config"
BUILD_SCRIPT = REPO / "scripts" / "build-otelcol"
BUILD_TIMEOUT_S = 1800  # a cold build downloads ~1000 modules and compiles for ~4 minutes on 2 cores


def missing(part: str) -> None:
    _missing(f"{part} is missing: the OpenTelemetry Collector tests need it")


@pytest.fixture(scope="session")
def otelcol() -> Path:
    """The Collector binary that scripts/build-otelcol builds (or finds in its cache)."""
    assert BUILD_SCRIPT.is_file(), f"{BUILD_SCRIPT} is missing"
    try:
        done = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/build-otelcol did not finish within {exc.timeout:.0f} s")
    if done.returncode == 127:
        missing("Go (the `go` command, which scripts/build-otelcol uses to build the Collector)")
    assert done.returncode == 0, f"scripts/build-otelcol failed ({done.returncode}):\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"scripts/build-otelcol printed no path:\n{done.stderr[-4000:]}"
    binary = Path(lines[-1])
    assert binary.is_absolute() and os.access(binary, os.X_OK), f"not an executable: {binary}"
    return binary


def otlp_receivers(grpc_port: int, http_port: int) -> dict[str, object]:
    """The `receivers` part of a config override that moves local.yaml's OTLP receiver to these ports."""
    return {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                "http": {"endpoint": f"127.0.0.1:{http_port}"},
            }
        }
    }


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Collector:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    prometheus_port: int
    output: Path
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no log)"


@pytest.fixture
def collector(otelcol: Path, tmp_path: Path) -> Iterator[Collector]:
    """collector-config/local.yaml on free loopback ports, its file exporter writing into tmp_path."""
    with run_collector(otelcol, tmp_path) as running:
        yield running


@contextmanager
def run_collector(
    otelcol: Path, tmp_path: Path, grpc_port: int = 0, http_port: int = 0, prometheus_port: int = 0
) -> Iterator[Collector]:
    """Start local.yaml on the given loopback ports (0: a free one); stop it when the block ends."""
    grpc_port, http_port = grpc_port or free_port(), http_port or free_port()
    prometheus_port = prometheus_port or free_port()
    # JSON is YAML; the Collector merges this over local.yaml (maps merge, lists are replaced).
    override = {
        "receivers": otlp_receivers(grpc_port, http_port),
        "exporters": {
            "prometheus": {"endpoint": f"127.0.0.1:{prometheus_port}"},
            "file": {"flush_interval": "100ms"},
        },
        "service": {"telemetry": {"metrics": {"level": "none"}}},  # no listener on :8888
    }
    override_path = tmp_path / "override.yaml"
    override_path.write_text(json.dumps(override))
    output = tmp_path / "metrics.jsonl"
    log = tmp_path / "otelcol.log"
    env = {**os.environ, "OTELCOL_METRICS_FILE": str(output)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(otelcol), f"--config={CONFIG_DIR / 'local.yaml'}", f"--config={override_path}"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    running = Collector(process, grpc_port, http_port, prometheus_port, output, log)
    try:
        deadline = time.monotonic() + 20
        while not (accepts(grpc_port) and accepts(http_port)):
            assert process.poll() is None, (
                f"the Collector exited ({process.returncode}):\n{running.log_tail()}"
            )
            assert time.monotonic() < deadline, f"the Collector did not listen in 20 s:\n{running.log_tail()}"
            time.sleep(0.05)
        yield running
    finally:
        stop(process)
