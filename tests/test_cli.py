"""The real `sysgauge` command in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.httpfake import Reply, serve

pytestmark = pytest.mark.cli

SYSGAUGE = [sys.executable, "-m", "sysgauge"]


def sysgauge(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYSGAUGE_"))}
    full_env.update(env or {})
    return subprocess.run([*SYSGAUGE, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def test_version_and_help() -> None:
    from sysgauge import __version__

    assert sysgauge("--version").stdout.strip() == f"sysgauge {__version__}"
    help_text = sysgauge("--help").stdout
    for word in ("monitor", "run", "detect", "examples:", "SYSGAUGE_"):
        assert word in help_text
    assert "--jsonl" in sysgauge("monitor", "--help").stdout
    assert "CMD" in sysgauge("run", "--help").stdout


def test_bare_sysgauge_prints_a_table_on_the_console() -> None:
    result = sysgauge("--interval", "0.2", "--window", "1", "--duration", "1.5")
    assert result.returncode == 0, result.stderr
    assert "sysgauge" in result.stdout and "last 1 s" in result.stdout
    assert "system.memory.utilization" in result.stdout and "used" in result.stdout
    assert "process.memory.usage" in result.stdout and "MiB" in result.stdout


def test_jsonl_writes_otlp_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = sysgauge(
        "monitor", "--interval", "0.2", "--window", "1", "--duration", "1.2", "--jsonl", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # an exporter was chosen: no console table
    lines = out.read_text().splitlines()
    assert len(lines) >= 2
    names: set[str] = set()
    for line in lines:
        document = json.loads(line)
        for rm in document["resourceMetrics"]:
            attrs = {a["key"]: a["value"] for a in rm["resource"]["attributes"]}
            assert attrs["service.name"] == {"stringValue": "sysgauge"}
            for sm in rm["scopeMetrics"]:
                assert sm["scope"]["name"] == "sysgauge"
                names.update(m["name"] for m in sm["metrics"])
    assert {"system.cpu.utilization", "process.cpu.time", "system.memory.usage"} <= names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "-1"], "--interval='-1' is not valid: expected a number of seconds > 0"),
        (["--interval", "2", "--window", "1"], "window (1 s) must be >= sampling_interval (2 s)"),
        (["--sources", "cpu", "gpu"], "unknown: gpu"),
        (["--pid", "abc"], "--pid='abc' is not valid: expected a process id"),
        (["--pid", "4194300"], "pid=4194300: no such process"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--duration", "0"], "--duration 0 is not valid"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = sysgauge("monitor", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_bad_variable_gives_one_line_and_exit_2() -> None:
    result = sysgauge("monitor", "--duration", "1", env={"SYSGAUGE_WINDOW": "soon"})
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "sysgauge: error: SYSGAUGE_WINDOW='soon' is not valid: expected a number of seconds"
    )


def test_detect_lists_every_source() -> None:
    result = sysgauge("detect")
    assert result.returncode == 0
    for name in ("cpu", "memory", "disk", "network", "process"):
        assert any(line.startswith(name) and "available" in line for line in result.stdout.splitlines())


def test_run_exits_with_the_commands_code_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    script = (
        "import time\nx = bytearray(50 * 2**20)\nend = time.time() + 1.5\n"
        "while time.time() < end: pass\nraise SystemExit(3)"
    )
    result = sysgauge(
        "run", "--interval", "0.2", "--window", "1", "--jsonl", str(out), "--", sys.executable, "-c", script
    )
    assert result.returncode == 3, result.stderr
    assert "mean" in result.stderr and "peak" in result.stderr
    assert "process tree CPU" in result.stderr and "process tree memory (RSS)" in result.stderr
    assert f"recorded to {out}" in result.stderr
    assert out.exists()


def test_run_of_a_missing_command_exits_127() -> None:
    result = sysgauge("run", "--", "/nonexistent/command")
    assert result.returncode == 127
    assert "cannot run" in result.stderr


def test_run_without_command_is_a_usage_error() -> None:
    assert sysgauge("run").returncode == 2


def test_run_forwards_sigterm_and_leaves_no_orphan(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    script = (
        "import os, signal, sys, time\n"
        f"open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [
            *SYSGAUGE,
            "run",
            "--interval",
            "0.2",
            "--window",
            "1",
            "--no-summary",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 42
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_monitor_stops_cleanly_on_sigint_and_flushes(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    proc = subprocess.Popen(
        [*SYSGAUGE, "monitor", "--interval", "0.2", "--window", "30", "--jsonl", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    # The 30 s export never came; the final flush on Ctrl-C wrote what the window held.
    assert "process.memory.usage" in out.read_text()


def test_openmetrics_flags_scrape_into_the_recording(tmp_path: Path) -> None:
    fixture = (
        Path(__file__).parent
        / "fixtures"
        / "openmetrics"
        / "openmetrics_dcgm-exporter_nvidia-l4_1gpu_driver580.txt"
    )
    out = tmp_path / "om.jsonl"
    with serve(Reply(body=fixture.read_bytes())) as server:
        result = sysgauge(
            "monitor",
            "--interval",
            "0.2",
            "--window",
            "1",
            "--duration",
            "1.5",
            "--sources",
            "openmetrics",
            "--openmetrics",
            f"dcgm={server.url}",
            "--openmetrics-filter",
            "dcgm\\.DCGM_FI_DEV_GPU_TEMP",
            "--openmetrics-header",
            "dcgm=Authorization:Bearer hunter2",
            "--jsonl",
            str(out),
        )
        detect = sysgauge("detect", env={"SYSGAUGE_OPENMETRICS_ENDPOINTS": json.dumps({"dcgm": server.url})})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stderr
    assert server.requests[0]["authorization"] == "Bearer hunter2"
    names = {
        m["name"]
        for line in out.read_text().splitlines()
        for rm in json.loads(line)["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    }
    assert names == {"dcgm_fi_dev_gpu_temp"}
    assert "openmetrics  available" in detect.stdout and "dcgm: answers" in detect.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--openmetrics", "dcgm"], "--openmetrics 'dcgm' is not valid: expected NAME=URL"),
        (["--openmetrics", "x=ftp://host/m"], "only http and https URLs"),
        (["--openmetrics-header", "x=Bearer"], "expected NAME=HEADER:VALUE"),
        (["--openmetrics-filters", "{oops"], "--openmetrics-filters='{oops' is not valid"),
    ],
)
def test_bad_openmetrics_flags_exit_2(args: list[str], message: str) -> None:
    result = sysgauge("monitor", "--duration", "1", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_otlp_http_flag_posts_protobuf_metrics() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    with serve() as server:
        base = server.url.rsplit("/", 1)[0]
        result = sysgauge(
            "monitor",
            "--interval",
            "0.2",
            "--window",
            "1",
            "--duration",
            "1.5",
            "--sources",
            "memory",
            "--otlp",
            base,
            env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "otlp-test"},
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert server.posts, "nothing was exported"
    path, headers, body = server.posts[-1]
    assert path == "/v1/metrics" and headers["content-type"] == "application/x-protobuf"
    request = ExportMetricsServiceRequest.FromString(body)
    resource = request.resource_metrics[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "otlp-test"
    names = {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"system.memory.usage", "system.memory.utilization"} <= names


def test_bad_otlp_protocol_is_a_usage_error() -> None:
    result = sysgauge(
        "monitor", "--otlp", "--duration", "1", env={"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
    )
    assert result.returncode == 2
    assert (
        "OTEL_EXPORTER_OTLP_PROTOCOL='carrier-pigeon' is not valid: expected grpc or http/protobuf"
        in result.stderr
    )


def test_monitor_redraws_in_place_on_a_terminal_and_scrolls_in_a_pipe() -> None:
    import pty

    def run(tty: bool) -> str:
        args = [
            *SYSGAUGE,
            "monitor",
            "--sources",
            "memory",
            "--interval",
            "0.2",
            "--window",
            "0.5",
            "--duration",
            "1.3",
        ]
        if not tty:
            return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
        leader, follower = pty.openpty()
        proc = subprocess.Popen(args, stdout=follower, stderr=subprocess.DEVNULL)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower side closed: the program ended
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    on_terminal, in_pipe = run(True), run(False)
    assert on_terminal.count("\x1b[H\x1b[2J") >= 2 and "system.memory.usage" in on_terminal
    assert "\x1b[" not in in_pipe and in_pipe.count("── sysgauge") >= 2
