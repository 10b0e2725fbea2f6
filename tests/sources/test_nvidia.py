"""The NVIDIA source end to end: scenario -> fake libnvidia-ml.so.1 (C) -> nvidia-ml-py (ctypes) -> sysgauge
-> OTel data points. Every expected number comes from the scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from sysgauge import instrument_system
from sysgauge.sources.nvidia import NvidiaSource
from tests.conftest import points
from tests.nvml_fake.scenario import FakeNvml, build, load, to_lines

GiB = 2**30
UseScenario = Callable[[dict[str, Any]], FakeNvml]


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """A real process with one child: the monitored tree (root pid, child pid)."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    root = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert root.stdout is not None
    child = int(root.stdout.readline())
    yield root.pid, child
    subprocess.run(["kill", str(child)], check=False)
    root.kill()
    root.wait()


def collect(
    scenario_use: UseScenario, scenario: dict[str, Any], **options: Any
) -> tuple[MetricsData, FakeNvml]:
    fake = scenario_use(scenario)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    monitor = instrument_system(provider, sources=["nvidia"], sampling_interval=60, window=120, **options)
    try:
        data = reader.get_metrics_data()
    finally:
        monitor.shutdown()
        provider.shutdown()
    assert data is not None
    return data, fake


def by_gpu(data: MetricsData, name: str, **attrs: object) -> dict[str, float]:
    return {
        str(a["hw.id"]): v
        for v, a in points(data, name)
        if all(a.get(k) == want for k, want in attrs.items())
    }


def test_eight_datacenter_gpus_every_metric_from_the_scenario(
    use_scenario: UseScenario, tree: tuple[int, int]
) -> None:
    root, child = tree
    scenario = load("h100x8", root=root, child=child, other=os.getpid())
    data, fake = collect(use_scenario, scenario, pid=root)
    gpus = scenario["devices"]
    uuids = [g["uuid"] for g in gpus]
    assert sorted(by_gpu(data, "hw.gpu.utilization", **{"hw.gpu.task": "general"})) == sorted(uuids)
    for gpu in gpus:
        u = gpu["uuid"]
        mem = gpu["memory"]
        assert by_gpu(data, "hw.gpu.utilization", **{"hw.gpu.task": "general"})[u] == gpu["util"]["gpu"] / 100
        assert by_gpu(data, "hw.gpu.utilization", **{"hw.gpu.task": "decoder"})[u] == gpu["decoder"] / 100
        assert by_gpu(data, "sysgauge.gpu.memory_controller.utilization")[u] == gpu["util"]["memory"] / 100
        # memory v2: the driver's reserved memory is not "used"
        assert by_gpu(data, "hw.gpu.memory.usage")[u] == mem["used"]
        assert by_gpu(data, "hw.gpu.memory.limit")[u] == mem["total"]
        assert by_gpu(data, "hw.gpu.memory.utilization")[u] == pytest.approx(mem["used"] / mem["total"])
        assert by_gpu(data, "hw.temperature")[u] == gpu["temperature"]
        assert by_gpu(data, "hw.power")[u] == gpu["power_mw"] / 1000
        assert by_gpu(data, "sysgauge.gpu.power.limit")[u] == gpu["power_limit_mw"] / 1000
        assert by_gpu(data, "sysgauge.gpu.power.utilization")[u] == pytest.approx(
            gpu["power_mw"] / gpu["power_limit_mw"]
        )
        assert by_gpu(data, "hw.energy")[u] == gpu["energy_mj"] / 1000
        assert (
            by_gpu(data, "sysgauge.gpu.clock.frequency", **{"sysgauge.gpu.clock": "sm"})[u]
            == gpu["clocks"]["sm"] * 1e6
        )
        assert by_gpu(data, "sysgauge.gpu.clock.frequency", **{"sysgauge.gpu.clock": "memory"})[u] == 2619e6
        assert by_gpu(data, "hw.gpu.io", **{"network.io.direction": "transmit"})[u] == gpu["pcie"]["tx"]
        assert by_gpu(data, "hw.gpu.io", **{"network.io.direction": "receive"})[u] == gpu["pcie"]["rx"]
        nvlink = gpu["nvlink"]
        assert by_gpu(data, "sysgauge.gpu.nvlink.io", **{"network.io.direction": "transmit"})[u] == (
            nvlink["links"] * nvlink["tx_kib"] * 1024
        )
        assert by_gpu(data, "hw.errors", **{"error.type": "corrected"})[u] == gpu["ecc"]["corrected"]
        assert by_gpu(data, "hw.status", **{"hw.state": "ok"})[u] == 1.0
        assert by_gpu(data, "hw.status", **{"hw.state": "failed"})[u] == 0.0
        throttled = by_gpu(
            data, "sysgauge.gpu.clock_event.active", **{"sysgauge.gpu.clock_event.reason": "sw_power_cap"}
        )
        assert throttled[u] == (1.0 if gpu["clock_events"] & 0x4 else 0.0)
    assert not points(data, "hw.fan.speed_ratio")  # passively cooled: NotSupported
    (_, attrs), *_ = [(v, a) for v, a in points(data, "hw.temperature") if a["hw.id"] == uuids[2]]
    assert attrs == {
        "hw.id": uuids[2],
        "hw.name": "gpu2",
        "hw.vendor": "nvidia",
        "hw.model": "NVIDIA H100 80GB HBM3",
        "hw.type": "gpu",
        "sysgauge.gpu.index": 2,
        "sysgauge.gpu.pci_bus_id": gpus[2]["pci_bus_id"],
    }
    # The process tree: root + child on GPU 0 (the stranger's memory and SM are not ours), nothing on GPU 1.
    assert by_gpu(data, "sysgauge.process.gpu.memory.usage") == {uuids[0]: 4 * GiB}
    assert by_gpu(data, "sysgauge.process.gpu.utilization") == {uuids[0]: 0.5}
    in_use = by_gpu(data, "sysgauge.process.gpu.in_use")
    assert in_use[uuids[0]] == 1.0 and in_use[uuids[1]] == 0.0
    assert by_gpu(data, "sysgauge.peak.process.gpu.memory.usage") == {uuids[0]: 4 * GiB}
    # Never the blocking PCIe call; init once.
    assert fake.calls("nvmlDeviceGetPcieThroughput") == 0
    assert fake.calls("nvmlInitWithFlags") == 1


def test_init_once_for_several_providers_and_unsupported_calls_are_not_repeated(
    use_scenario: UseScenario,
) -> None:
    fake = use_scenario(load("h100x8", root=1, child=1, other=1))
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r], shutdown_on_exit=False) for r in readers]
    monitors = [instrument_system(p, sources=["nvidia"], sampling_interval=60, window=120) for p in providers]
    try:
        for _ in range(5):
            for monitor in monitors:
                monitor.sampler.tick()
        assert all(points(r.get_metrics_data(), "hw.power") for r in readers)
        assert fake.calls("nvmlInitWithFlags") == 1
        # Each of 8 GPUs said NotSupported once per source; no source asked again in 6 ticks.
        assert fake.calls("nvmlDeviceGetFanSpeed") == 8 * len(monitors)
    finally:
        for monitor in monitors:
            monitor.shutdown()
        for p in providers:
            p.shutdown()
    assert fake.calls("nvmlShutdown") == 1


def test_laptop_gpu_without_power_energy_fan_and_ecc(use_scenario: UseScenario) -> None:
    scenario = load("geforce-laptop")
    data, _ = collect(use_scenario, scenario)
    gpu = scenario["devices"][0]
    for name in (
        "hw.power",
        "hw.energy",
        "sysgauge.gpu.power.limit",
        "sysgauge.gpu.power.utilization",
        "hw.fan.speed_ratio",
        "hw.errors",
    ):
        assert not points(data, name), name
    assert by_gpu(data, "hw.gpu.utilization", **{"hw.gpu.task": "encoder"}) == {gpu["uuid"]: 0.07}
    assert by_gpu(data, "hw.temperature") == {gpu["uuid"]: 61}
    assert by_gpu(data, "hw.gpu.io", **{"network.io.direction": "receive"}) == {gpu["uuid"]: 654321}
    assert not points(data, "sysgauge.gpu.nvlink.io")


def test_mig_instances_report_memory_with_their_parent(use_scenario: UseScenario) -> None:
    scenario = load("a100-mig")
    data, _ = collect(use_scenario, scenario)
    gpu = scenario["devices"][0]
    instances = [i for i in gpu["mig"]["instances"] if i is not None]
    usage = {str(a["hw.id"]): (v, a) for v, a in points(data, "hw.gpu.memory.usage")}
    assert set(usage) == {gpu["uuid"], *(i["uuid"] for i in instances)}
    for instance in instances:
        value, attrs = usage[instance["uuid"]]
        assert value == instance["memory"]["used"]
        assert attrs["hw.parent"] == gpu["uuid"]
    # NVML gives no (kernel) utilization under MIG, for the GPU or its instances.
    assert not by_gpu(data, "hw.gpu.utilization", **{"hw.gpu.task": "general"})
    assert not by_gpu(data, "sysgauge.gpu.memory_controller.utilization")
    assert by_gpu(data, "hw.power") == {gpu["uuid"]: 250.0}


def test_mig_note_in_describe(use_scenario: UseScenario) -> None:
    use_scenario(load("a100-mig"))
    source = NvidiaSource()
    try:
        assert source.probe() is None
        text = source.describe()
    finally:
        source.close()
    assert "MIG, 2 instances" in text and "no utilization" in text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def statuses(readings: list[Any]) -> dict[str, str]:
    return {
        str(dict(r.attributes)["hw.id"]): str(dict(r.attributes)["hw.state"])
        for r in readings
        if r.spec.name == "hw.status" and r.value == 1.0
    }


def test_a_lost_gpu_fails_alone_and_recovers_with_backoff(use_scenario: UseScenario) -> None:
    scenario = load("gpu-lost")
    fake = use_scenario(scenario)
    uuids = [g["uuid"] for g in scenario["devices"]]
    clock = Clock()
    source = NvidiaSource(processes=False, clock=clock)
    try:
        assert source.probe() is None
        states = [statuses(source.read()) for _ in range(3)]
        assert states[0] == dict.fromkeys(uuids, "ok")
        # GPU 1 answered 40 calls, then fell off the bus; the others never stop.
        assert states[-1] == {uuids[0]: "ok", uuids[1]: "failed", uuids[2]: "ok"}
        readings = source.read()
        assert {str(dict(r.attributes)["hw.id"]) for r in readings if r.spec.name == "hw.power"} == {
            uuids[0],
            uuids[2],
        }
        calls = fake.calls("nvmlDeviceGetPowerUsage")
        source.read()
        assert fake.calls("nvmlDeviceGetPowerUsage") == calls + 2  # the lost GPU waits for its retry time
        fake.set("dev.1.lost_after -1")  # the driver recovers
        clock.now += 1.5
        assert statuses(source.read()) == dict.fromkeys(uuids, "ok")
    finally:
        source.close()


def test_process_lists_without_permission(
    use_scenario: UseScenario, caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = collect(use_scenario, load("no-permission-processes", root=os.getpid()))
    assert not points(data, "sysgauge.process.gpu.memory.usage")
    assert points(data, "hw.gpu.memory.usage")
    assert "no permission" in caplog.text


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("rm-mismatch", "driver/library version mismatch"),
        ("driver-not-loaded", "NVIDIA driver not loaded"),
        ("zero-gpus", "no NVIDIA GPU found"),
    ],
)
def test_unavailable_says_why(use_scenario: UseScenario, scenario: str, reason: str) -> None:
    use_scenario(load(scenario))
    source = NvidiaSource()
    assert reason in (source.probe() or "")
    source.close()


def test_energy_counter_survives_a_driver_reload(use_scenario: UseScenario) -> None:
    scenario = load("geforce-laptop")
    scenario["devices"][0]["returns"].pop("nvmlDeviceGetTotalEnergyConsumption")
    scenario["devices"][0]["energy_mj"] = 9_000_000
    fake = use_scenario(scenario)
    source = NvidiaSource(processes=False)
    try:
        assert source.probe() is None
        energy = []
        for mj in (9_000_000, 9_500_000, 1_000, 2_000):  # the driver reloaded between the 2nd and 3rd
            fake.set(f"dev.0.energy_mj {mj}")
            energy += [r.value for r in source.read() if r.spec.name == "hw.energy"]
    finally:
        source.close()
    assert energy == [9000.0, 9500.0, 9501.0, 9502.0]


def test_in_a_container_pid_namespace_per_process_use_is_off(
    use_scenario: UseScenario, tmp_path: Path
) -> None:
    use_scenario(load("h100x8", root=os.getpid(), child=1, other=1))
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "status").write_text("Name:\tpython\nNSpid:\t4242\t17\n")
    source = NvidiaSource(proc=str(tmp_path))
    try:
        assert source.probe() is None
        names = {r.spec.name for r in source.read()}
        assert "sysgauge.process.gpu.memory.usage" not in names
        assert "hw.gpu.memory.usage" in names
        assert "PID namespace" in source.describe()
    finally:
        source.close()


_SUBPROCESS = """
import json, sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sysgauge import instrument_system
reader = InMemoryMetricReader()
provider = MeterProvider(metric_readers=[reader])
monitor = instrument_system(provider, sources=["nvidia"], sampling_interval=60, window=120)
out = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for metric in sm.metrics:
            out[metric.name] = [[p.value, dict(p.attributes)] for p in metric.data.data_points]
monitor.shutdown()
print(json.dumps(out, default=str))
"""


def test_an_old_driver_without_v2_v3_symbols_uses_the_older_calls(
    fake_nvml_library: FakeNvml, tmp_path: Path
) -> None:
    old = build("old")
    scenario = load("old-driver-470")
    (tmp_path / "s.txt").write_text(to_lines(scenario).replace("{root}", "0"))
    env = {**os.environ, "LD_LIBRARY_PATH": str(old.parent), "FAKE_NVML_SCENARIO": str(tmp_path / "s.txt")}
    run = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    gpu = scenario["devices"][0]

    def one(name: str) -> float:
        ((value, _),) = data[name]
        return float(value)

    # v1 memory counts the driver's reserved memory as used: that is what an R470 driver can tell.
    assert one("hw.gpu.memory.usage") == gpu["memory"]["used"] + gpu["memory"]["reserved"]
    assert one("hw.temperature") == gpu["temperature"]
    active = {
        a["sysgauge.gpu.clock_event.reason"] for v, a in data["sysgauge.gpu.clock_event.active"] if v == 1.0
    }
    assert active == {"sw_thermal_slowdown"}
    assert one("hw.power") == 200.0


def test_no_library_at_all_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has a real NVIDIA driver library")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    run = subprocess.run(
        [sys.executable, "-m", "sysgauge", "detect"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "nvidia       unavailable: NVML library libnvidia-ml.so.1 not found" in run.stdout


def test_a_gpu_tick_reads_every_value_once(use_scenario: UseScenario) -> None:
    fake = use_scenario(load("h100x8", root=os.getpid(), child=1, other=1))
    source = NvidiaSource()
    try:
        assert source.probe() is None
        source.read()
        fake.reset_counts()
        source.read()
    finally:
        source.close()
    for function in (
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetTemperatureV",
    ):
        assert fake.calls(function) == 8, function
    # The two-call protocol: a size probe on each GPU, a second call where there are processes (GPUs 0, 1).
    assert fake.calls("nvmlDeviceGetComputeRunningProcesses_v3") == 8 + 2
    assert fake.calls("nvmlDeviceGetCount_v2") == 0  # enumeration happened once, at probe


def test_every_declared_nvidia_metric_is_emitted(use_scenario: UseScenario, tree: tuple[int, int]) -> None:
    from sysgauge.metrics import specs_of

    root, child = tree
    scenario = load("h100x8", root=root, child=child, other=os.getpid())
    scenario["devices"][7]["returns"] = {}
    scenario["devices"][7]["fan"] = 40  # one board with a fan
    source = NvidiaSource(pid=root, xid=True)
    fake = use_scenario(scenario)
    try:
        assert source.probe() is None
        fake.set("dev.3.xid 79")
        emitted = wait_for_xid(source)
    finally:
        source.close()
    assert emitted == {spec.name for spec in specs_of("nvidia")}


def wait_for_xid(source: NvidiaSource, count: int = 1) -> set[str]:
    deadline = time.monotonic() + 10
    while True:
        readings = source.read()
        if sum(r.value for r in readings if r.spec.name == "sysgauge.gpu.xid.errors") >= count:
            return {r.spec.name for r in readings}
        assert time.monotonic() < deadline, "no XID event arrived"
        time.sleep(0.05)


def test_xid_events_are_counted_per_gpu_and_code_when_asked(use_scenario: UseScenario) -> None:
    scenario = load("h100x8", root=1, child=1, other=1)
    fake = use_scenario(scenario)
    off = NvidiaSource(processes=False)
    assert off.probe() is None
    off.close()
    assert fake.calls("nvmlEventSetCreate") == 0  # off by default: no event thread
    source = NvidiaSource(processes=False, xid=True)
    try:
        assert source.probe() is None
        assert "XID events: counted on 8 of 8 GPUs" in source.describe()
        for line in ("dev.1.xid 79", "dev.1.xid 79", "dev.0.xid 48"):
            fake.set(line)
        wait_for_xid(source, count=3)
        counts = {
            (dict(r.attributes)["hw.id"], dict(r.attributes)["sysgauge.gpu.xid"]): r.value
            for r in source.read()
            if r.spec.name == "sysgauge.gpu.xid.errors"
        }
    finally:
        source.close()
    uuids = [g["uuid"] for g in scenario["devices"]]
    assert counts == {(uuids[1], 79): 2.0, (uuids[0], 48): 1.0}
    assert fake.calls("nvmlEventSetFree") == 1
