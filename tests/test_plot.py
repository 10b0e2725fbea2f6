"""`sysgauge plot` on real recordings: the figure's panels and series, not only that a file appears."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sysgauge.plot import build_panels, draw
from sysgauge.recording import RecordingError, read_recording
from tests.nvml_fake.scenario import FakeNvml, load, to_lines
from tests.otelcol import Collector

SYSGAUGE = [sys.executable, "-m", "sysgauge"]
WORKLOAD = (
    "import os, time\n"
    "block = bytearray(60 * 10**6)\n"
    "for i in range(0, len(block), 4096): block[i] = 1\n"
    "end = time.time() + 2.5\n"
    "while time.time() < end: pass\n"
)


def sysgauge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SYSGAUGE_"))}
    return subprocess.run(
        [*SYSGAUGE, *args], capture_output=True, text=True, timeout=120, env={**clean, **(env or {})}
    )


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run.jsonl"
    result = sysgauge(
        "run",
        "--interval",
        "0.2",
        "--window",
        "0.6",
        "--jsonl",
        str(out),
        "--",
        sys.executable,
        "-c",
        WORKLOAD,
    )
    assert result.returncode == 0, result.stderr
    assert f"sysgauge plot {out}" in result.stderr
    return out


def test_plot_of_a_real_run_has_the_expected_panels_and_series(recorded_run: Path, tmp_path: Path) -> None:
    recording = read_recording([recorded_run])
    panels = {panel.title: panel for panel in build_panels(recording)}
    assert list(panels) == ["CPU", "Memory", "Disk I/O", "Network"]
    cpu = {s.label: s for s in panels["CPU"].series}
    assert "process tree" in cpu and f"cpu{(os.cpu_count() or 1) - 1}" in cpu
    # One core was burned for 2.5 s by the workload, on a machine of N cores.
    assert max(cpu["process tree"].values) > 100 / (os.cpu_count() or 1) * 0.6
    memory = {s.label: s for s in panels["Memory"].series}
    assert panels["Memory"].unit == "GiB"
    assert max(memory["process tree RSS"].values) > 0.055  # 60 MB allocated, in GiB
    assert {s.label for s in panels["Disk I/O"].series} == {"read", "write"}
    assert panels["Network"].unit == "MB/s"
    figure = draw(list(panels.values()), "test")
    axes = figure.get_axes()
    assert [a.get_title() for a in axes] == list(panels)
    assert [len(a.get_lines()) for a in axes] == [len(p.series) for p in panels.values()]
    assert [line.get_label() for line in axes[1].get_lines()] == [s.label for s in panels["Memory"].series]

    png = tmp_path / "charts.png"
    result = sysgauge("plot", str(recorded_run), "-o", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = tmp_path / "charts.html"
    assert sysgauge("plot", str(recorded_run), "-o", str(html), "--metrics", "cpu", "memory").returncode == 0
    assert "<svg" in html.read_text() and "<?xml" not in html.read_text()


def test_rotated_files_are_joined(recorded_run: Path, tmp_path: Path) -> None:
    lines = recorded_run.read_text().splitlines()
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    second.write_text("\n".join(lines[len(lines) // 2 :]) + "\n\n")
    joined = read_recording([first, second])
    assert len(joined.points) == len(read_recording([recorded_run]).points)


def test_gpu_panels_from_a_run_under_the_fake_driver(fake_nvml_library: FakeNvml, tmp_path: Path) -> None:
    scenario = load("h100x8", root=1, child=1, other=1)
    scenario["devices"] = scenario["devices"][:2]
    (tmp_path / "s.txt").write_text(to_lines(scenario))
    out = tmp_path / "gpu.jsonl"
    env = {
        "LD_LIBRARY_PATH": str(fake_nvml_library.path.parent),
        "FAKE_NVML_SCENARIO": str(tmp_path / "s.txt"),
    }
    result = sysgauge(
        "monitor",
        "--sources",
        "nvidia",
        "--interval",
        "0.2",
        "--window",
        "0.5",
        "--duration",
        "1.6",
        "--jsonl",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    panels = {p.title: p for p in build_panels(read_recording([out]))}
    assert list(panels) == ["GPU utilization", "GPU memory", "GPU power", "GPU temperature"]
    # Window means of constant samples: equal up to float rounding.
    utilization = {s.label: {round(v, 9) for v in s.values} for s in panels["GPU utilization"].series}
    assert utilization == {"gpu0": {10.0}, "gpu1": {20.0}}
    power = {s.label: {round(v, 9) for v in s.values} for s in panels["GPU power"].series}
    assert power == {"gpu0": {300.0}, "gpu1": {310.0}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no metric data points"),
        ("this is not json\n", "not a JSON line"),
        (
            '{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": 5, "gauge": 3}]}]}]}\n',
            "not OTLP-JSON metrics",
        ),
        ('{"something": "else"}\n', "not OTLP-JSON metrics"),
    ],
    ids=["empty", "garbage", "malformed", "not-otlp"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RecordingError, match=message):
        read_recording([path])
    result = sysgauge("plot", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_missing_file_and_bad_output_name(recorded_run: Path, tmp_path: Path) -> None:
    result = sysgauge("plot", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = sysgauge("plot", str(recorded_run), "-o", str(tmp_path / "x.bmp"))
    assert result.returncode == 2 and "expected a .png, .svg, .pdf or .html" in result.stderr
    result = sysgauge("plot", str(recorded_run), "--metrics", "gpus")
    assert result.returncode == 2 and "--metrics gpus is not valid" in result.stderr


def test_without_matplotlib_the_message_says_how_to_get_it(recorded_run: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "matplotlib.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = sysgauge(
        "plot", str(recorded_run), "-o", str(tmp_path / "x.png"), env={"PYTHONPATH": str(shadow)}
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "sysgauge: error: sysgauge plot needs matplotlib: pip install 'sysgauge[plot]'"
    )


def test_delta_temporality_counters_become_rates(tmp_path: Path) -> None:
    def document(t: int, value: int) -> str:
        point = {
            "attributes": [{"key": "disk.io.direction", "value": {"stringValue": "write"}}],
            "startTimeUnixNano": str((t - 2) * 10**9),
            "timeUnixNano": str(t * 10**9),
            "asInt": str(value),
        }
        metric = {
            "name": "system.disk.io",
            "unit": "By",
            "sum": {"dataPoints": [point], "aggregationTemporality": 1, "isMonotonic": True},
        }
        return json.dumps(
            {"resourceMetrics": [{"resource": {"attributes": []}, "scopeMetrics": [{"metrics": [metric]}]}]}
        )

    path = tmp_path / "delta.jsonl"
    path.write_text("\n".join([document(100, 4_000_000), document(102, 8_000_000)]) + "\n")
    (panel,) = build_panels(read_recording([path]), ["disk"])
    assert panel.series[0].values == [2.0, 4.0]  # MB/s over each 2 s period


def test_the_collectors_file_exporter_output_plots_the_same(collector: Collector, tmp_path: Path) -> None:
    ours = tmp_path / "ours.jsonl"
    result = sysgauge(
        "run",
        "--interval",
        "0.2",
        "--window",
        "0.6",
        "--jsonl",
        str(ours),
        "--otlp",
        f"http://127.0.0.1:{collector.http_port}",
        "--",
        sys.executable,
        "-c",
        WORKLOAD,
        env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "plot-test"},
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 15
    while "plot-test" not in (collector.output.read_text() if collector.output.exists() else ""):
        assert time.monotonic() < deadline, collector.log_tail()
        time.sleep(0.1)
    time.sleep(0.5)  # the last export's flush
    direct = {p.title: p for p in build_panels(read_recording([ours]))}
    via_collector = {p.title: p for p in build_panels(read_recording([collector.output]))}
    assert list(via_collector) == list(direct) == ["CPU", "Memory", "Disk I/O", "Network"]
    for title, panel in direct.items():
        assert [s.label for s in via_collector[title].series] == [s.label for s in panel.series], title
    rss_direct = max(next(s for s in direct["Memory"].series if s.label == "process tree RSS").values)
    rss_collector = max(
        next(s for s in via_collector["Memory"].series if s.label == "process tree RSS").values
    )
    assert rss_collector == pytest.approx(rss_direct, rel=0.1)
    assert sysgauge("plot", str(collector.output), "-o", str(tmp_path / "c.png")).returncode == 0
