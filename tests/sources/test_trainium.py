"""TrainiumSource against a fake neuron-monitor run as a real child process (tests/fake_tools/neuron-monitor),
replaying a real trn1.2xlarge stream (tests/fixtures/trainium)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import SystemMonitor
from sysgauge import metrics as m
from sysgauge.options import resolve_options
from sysgauge.sources.base import Reading
from sysgauge.sources.trainium import LineSplitter, TrainiumSource, monitor_config, to_readings
from tests.conftest import points, value

FAKE_TOOLS = Path(__file__).resolve().parent.parent / "fake_tools"
FAKE = FAKE_TOOLS / "neuron-monitor"
FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "trainium"
    / "neuron-monitor_trn1-2xlarge_3samples.jsonl"
)
REPORTS: list[dict[str, Any]] = [
    json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()
]
CATEGORIES = {"application_memory", "constants", "dma_buffers", "tensors"}


def _runtime(report: dict[str, Any]) -> dict[str, Any]:
    runtime: dict[str, Any] = report["neuron_runtime_data"][0]["report"]
    return runtime


CORE0_UTILIZATION = {
    _runtime(r)["neuroncore_counters"]["neuroncores_in_use"]["0"]["neuroncore_utilization"] / 100
    for r in REPORTS
}
APPLICATION_MEMORY = {
    _runtime(r)["memory_used"]["neuron_runtime_used_bytes"]["usage_breakdown"]["host"]["application_memory"]
    for r in REPORTS
}


def by_key(readings: list[Reading]) -> dict[tuple[str, tuple[tuple[str, object], ...]], float]:
    return {(r.spec.name, r.attributes): r.value for r in readings}


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout} s: {predicate}")


def read_until_data(source: TrainiumSource, timeout: float = 10.0) -> list[Reading]:
    got: list[Reading] = []

    def has_data() -> bool:
        nonlocal got
        got = source.read()
        return bool(got)

    wait_for(has_data, timeout)
    return got


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fake's knobs reset for each test; returns the file where it logs its pid and arguments."""
    for name in (
        "FAKE_NEURON_EXIT_AFTER",
        "FAKE_NEURON_PREFIX",
        "FAKE_NEURON_IGNORE_TERM",
        "FAKE_NEURON_REPORTS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAKE_NEURON_PID", str(os.getpid()))
    monkeypatch.setenv("FAKE_NEURON_INTERVAL", "0.1")
    args_log = tmp_path / "args.log"
    monkeypatch.setenv("FAKE_NEURON_ARGS_LOG", str(args_log))
    return args_log


@pytest.fixture
def make_source(fake_env: Path) -> Iterator[Callable[..., TrainiumSource]]:
    made: list[TrainiumSource] = []

    def make(**kwargs: Any) -> TrainiumSource:
        kwargs.setdefault("tool_path", str(FAKE))
        kwargs.setdefault("restart_backoff", (0.1, 0.4))
        source = TrainiumSource(**kwargs)
        made.append(source)
        assert source.probe() is None
        return source

    yield make
    for source in made:
        source.close()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# --- pure parts ----------------------------------------------------------------------------------


def test_to_readings_shapes_the_real_report() -> None:
    got = by_key(to_readings(REPORTS[0], {1337}))
    util, host, device = (
        m.NEURON_CORE_UTILIZATION.name,
        m.NEURON_HOST_MEMORY_USAGE.name,
        m.NEURON_DEVICE_MEMORY_USAGE.name,
    )
    assert got[(util, ((m.NEURON_CORE, 0),))] == pytest.approx(0.013631567613356375)
    assert got[(util, ((m.NEURON_CORE, 1),))] == 0.0
    assert {dict(a)[m.NEURON_MEMORY_CATEGORY] for n, a in got if n == host} == CATEGORIES
    assert got[(host, ((m.NEURON_MEMORY_CATEGORY, "application_memory"),))] == 609656832
    assert got[(host, ((m.NEURON_MEMORY_CATEGORY, "dma_buffers"),))] == 1048576
    assert got[(device, ((m.NEURON_CORE, 0), (m.NEURON_MEMORY_CATEGORY, "model_code")))] == 101125344
    assert got[(device, ((m.NEURON_CORE, 0), (m.NEURON_MEMORY_CATEGORY, "tensors")))] == 943608
    assert got[(device, ((m.NEURON_CORE, 1), (m.NEURON_MEMORY_CATEGORY, "model_code")))] == 32768
    assert len(got) == 2 + 4 + 2 * 5
    assert to_readings(REPORTS[0], None) == to_readings(REPORTS[0], {1337})
    assert to_readings(REPORTS[0], {1, 16851}) == []


def test_to_readings_sums_memory_of_several_runtimes_and_survives_malformed_parts() -> None:
    first, second = (json.loads(json.dumps(REPORTS[1]["neuron_runtime_data"][0])) for _ in range(2))
    second["pid"] = 7
    report = {"neuron_runtime_data": [first, second, "junk", {"pid": 8, "report": None}, {"pid": 9}]}
    got = by_key(to_readings(report, {16851, 7, 8, 9}))
    assert got[(m.NEURON_HOST_MEMORY_USAGE.name, ((m.NEURON_MEMORY_CATEGORY, "dma_buffers"),))] == 2 * 1048576
    assert got[(m.NEURON_CORE_UTILIZATION.name, ((m.NEURON_CORE, 0),))] == pytest.approx(0.013560819560861623)
    broken = {
        "neuron_runtime_data": [
            {
                "pid": 1,
                "report": {
                    "neuroncore_counters": {"neuroncores_in_use": {"0": {"neuroncore_utilization": "high"}}},
                    "memory_used": {"neuron_runtime_used_bytes": {"usage_breakdown": {"host": [1, 2]}}},
                },
            }
        ]
    }
    assert to_readings(broken, None) == []
    assert to_readings({"neuron_runtime_data": "nope"}, None) == []
    assert to_readings({}, None) == []


def test_line_splitter_caps_lines_across_chunks() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"abc") == []
    assert splitter.feed(b"def\nghi\n0123") == [b"abcdef", b"ghi"]
    assert splitter.feed(b"456789xyz") == []  # past 10 bytes without a newline: dropped as it streams
    assert splitter.feed(b"more\nok\n") == [b"ok"]
    assert splitter.feed(b"0123456789A\n") == []  # too long within one chunk
    assert splitter.overlong == 2


def test_config_asks_for_the_documented_groups() -> None:
    config = monitor_config(2.4)
    assert config["period"] == "2s"
    assert monitor_config(0.1)["period"] == "1s"
    groups = [g["type"] for g in config["neuron_runtimes"][0]["metrics"]]
    assert groups == ["neuroncore_counters", "memory_used"]
    assert [g["type"] for g in config["system_metrics"]] == ["neuron_hw_counters"]


# --- availability --------------------------------------------------------------------------------


def test_missing_tool_is_a_probe_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    source = TrainiumSource()
    assert source.probe() == "neuron-monitor not found on PATH"
    assert source.read() == []  # never starts anything
    source.close()
    configured = TrainiumSource(tool_path=str(tmp_path / "nope"))
    assert configured.probe() == f"{tmp_path / 'nope'} is not an executable file"


def test_found_on_path_resolves_to_an_absolute_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{FAKE_TOOLS}")
    source = TrainiumSource()
    assert source.probe() is None
    assert source.describe().startswith(f"{FAKE} -c")
    no_device = TrainiumSource(device_glob=str(tmp_path / "neuron*"))
    assert no_device.probe() == f"no Neuron device found ({tmp_path / 'neuron*'})"


# --- the child, end to end -----------------------------------------------------------------------


def test_streams_real_values_with_a_private_config(
    make_source: Callable[..., TrainiumSource], fake_env: Path
) -> None:
    source = make_source(pid=os.getpid(), tree=False)
    got = by_key(read_until_data(source))
    assert got[(m.NEURON_CORE_UTILIZATION.name, ((m.NEURON_CORE, 0),))] in CORE0_UTILIZATION
    host = {
        dict(a)[m.NEURON_MEMORY_CATEGORY]: v
        for (n, a), v in got.items()
        if n == m.NEURON_HOST_MEMORY_USAGE.name
    }
    assert set(host) == CATEGORIES
    assert host["application_memory"] in APPLICATION_MEMORY
    assert host["dma_buffers"] == 1048576
    key = (m.NEURON_DEVICE_MEMORY_USAGE.name, ((m.NEURON_CORE, 0), (m.NEURON_MEMORY_CATEGORY, "model_code")))
    assert got[key] == 101125344
    # Started as `neuron-monitor -c <config>`, the config private (the fake refuses anything but 0600).
    config = source.config_path
    assert config is not None
    pid, *argv = fake_env.read_text().split()
    assert argv == ["-c", config]
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(config)).st_mode) == 0o700
    assert json.loads(Path(config).read_text())["period"] == "1s"
    assert source.starts == 1
    source.close()
    assert not os.path.exists(os.path.dirname(config))
    assert not psutil.pid_exists(int(pid))
    assert source.read() == []


def test_only_runtimes_of_the_monitored_tree(
    make_source: Callable[..., TrainiumSource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "self": the runtime pid becomes the fake's own, a child of this process, so in this process's tree.
    monkeypatch.setenv("FAKE_NEURON_PID", "self")
    in_tree = make_source(pid=os.getpid(), tree=True)
    assert read_until_data(in_tree)
    caplog.set_level(logging.INFO, logger="sysgauge")
    root_only = make_source(pid=os.getpid(), tree=False)
    wait_for(
        lambda: root_only.read() == [] and messages(caplog, "none of them in the monitored process tree")
    )
    everything = make_source(pid=os.getpid(), tree=False, all_runtimes=True)
    assert read_until_data(everything)
    assert root_only.read() == []


def test_another_pid_is_filtered_out_unless_all_runtimes(
    make_source: Callable[..., TrainiumSource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_NEURON_PID", "1337")
    caplog.set_level(logging.INFO, logger="sysgauge")
    mine = make_source(pid=os.getpid())
    wait_for(lambda: mine.read() == [] and messages(caplog, "none of them in the monitored process tree"))
    assert mine.read() == []
    anyone = make_source(pid=os.getpid(), all_runtimes=True)
    assert read_until_data(anyone)


def test_a_dying_child_is_restarted_with_backoff_and_said_once(
    make_source: Callable[..., TrainiumSource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_NEURON_EXIT_AFTER", "2")
    source = make_source(restart_backoff=(0.1, 0.3))
    assert read_until_data(source)
    wait_for(lambda: source.starts >= 4)
    first_pid = source.child_pid
    wait_for(lambda: source.child_pid != first_pid)
    assert read_until_data(source)  # readings resume from the new child
    said = messages(caplog, "exited with status 3")
    assert len(said) == 1
    assert "fake exiting after 2 reports" in said[0]
    assert "restarting it" in said[0]


def test_backoff_grows_between_restarts(
    make_source: Callable[..., TrainiumSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NEURON_EXIT_AFTER", "1")
    monkeypatch.setenv("FAKE_NEURON_INTERVAL", "0")
    source = make_source(restart_backoff=(0.2, 0.8))
    source.read()
    time.sleep(2.0)
    # delays 0.2, 0.4, 0.8, 0.8...: about 4 starts in 2 s (plus start-up time), never a tight loop
    assert 2 <= source.starts <= 5


def test_garbage_and_truncated_lines_are_skipped_and_said_once(
    make_source: Callable[..., TrainiumSource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_NEURON_PREFIX", "garbage")
    source = make_source()
    assert read_until_data(source)
    assert len(messages(caplog, "is not a report, skipped")) == 1


def test_a_50_mb_line_is_skipped_without_holding_it(
    make_source: Callable[..., TrainiumSource],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_NEURON_PREFIX", "huge")
    tracemalloc.start()
    try:
        source = make_source()
        assert read_until_data(source, timeout=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB while skipping a 50 MB line"
    assert len(messages(caplog, "longer than 4194304 bytes was skipped")) == 1


def test_close_kills_a_child_that_ignores_sigterm_and_leaves_nothing(
    make_source: Callable[..., TrainiumSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NEURON_IGNORE_TERM", "1")
    source = make_source(grace=0.3)
    assert read_until_data(source)
    pid, config = source.child_pid, source.config_path
    assert pid is not None and config is not None
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 2.0
    assert not psutil.pid_exists(pid)
    assert not any(c.status() == psutil.STATUS_ZOMBIE for c in psutil.Process().children())
    assert not os.path.exists(config)
    assert not any(t.name == "sysgauge-neuron-monitor" for t in threading.enumerate())
    source.close()  # idempotent


def test_close_before_any_read_starts_nothing(make_source: Callable[..., TrainiumSource]) -> None:
    source = make_source()
    source.close()
    assert source.read() == []
    assert source.starts == 0 and source.config_path is None


def test_read_never_waits_on_the_tool(
    make_source: Callable[..., TrainiumSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NEURON_INTERVAL", "5")  # one report, then silence
    source = make_source()
    assert read_until_data(source)
    started = time.monotonic()
    for _ in range(100):
        source.read()
    assert time.monotonic() - started < 0.5


# --- through the SDK -----------------------------------------------------------------------------


def test_end_to_end_through_the_sdk(
    make_source: Callable[..., TrainiumSource], provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    source = make_source(pid=os.getpid())
    monitor = SystemMonitor(
        provider, [source], resolve_options({"sampling_interval": 0.1, "window": 1}, environ={})
    )
    try:
        wait_for(lambda: points(reader.get_metrics_data(), m.NEURON_DEVICE_MEMORY_USAGE.name))
        data = reader.get_metrics_data()
        core0 = value(data, m.NEURON_CORE_UTILIZATION.name, **{m.NEURON_CORE: 0})
        assert min(CORE0_UTILIZATION) - 1e-9 <= core0 <= max(CORE0_UTILIZATION) + 1e-9
        assert value(data, m.NEURON_CORE_UTILIZATION.name, **{m.NEURON_CORE: 1}) == 0.0
        dma = value(data, m.NEURON_HOST_MEMORY_USAGE.name, **{m.NEURON_MEMORY_CATEGORY: "dma_buffers"})
        assert dma == 1048576
        app = value(data, m.NEURON_HOST_MEMORY_USAGE.name, **{m.NEURON_MEMORY_CATEGORY: "application_memory"})
        assert min(APPLICATION_MEMORY) <= app <= max(APPLICATION_MEMORY)
        model_code = value(
            data,
            m.NEURON_DEVICE_MEMORY_USAGE.name,
            **{m.NEURON_CORE: 0, m.NEURON_MEMORY_CATEGORY: "model_code"},
        )
        assert model_code == 101125344
        assert len(points(data, m.NEURON_DEVICE_MEMORY_USAGE.name)) == 10
        pid = source.child_pid
    finally:
        monitor.shutdown()
    assert pid is not None and not psutil.pid_exists(pid)
