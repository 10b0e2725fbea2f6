"""Apple silicon GPUs from the recorded apple_gpu_stats output, through a fake executable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sysgauge.sources._tools import Tool
from sysgauge.sources.apple import AppleSource, parse_apple_gpu_stats, to_readings
from tests.vendor_tools import FIXTURES, fake_tool

SAMPLE = FIXTURES / "apple" / "apple-gpu-stats_m1max.json"


def test_m1_max_sample() -> None:
    values = {r.spec.name: r.value for r in to_readings(parse_apple_gpu_stats(SAMPLE.read_text()))}
    assert values["hw.gpu.utilization"] == 0.29
    assert values["hw.gpu.memory.usage"] == 698499072
    assert values["sysgauge.gpu.memory.allocated"] == 3188637696
    sensors = [57.583431243896484, 55.276527404785156, 58.314537048339844, 55.203269958496094]
    assert values["hw.temperature"] == pytest.approx(sum(sensors) / 4)  # the zero m2/m3 sensors left out
    assert values["hw.power"] == pytest.approx(8.4271249771118164)  # gpuPower reads 0 on this chip
    assert values["hw.host.power"] == pytest.approx(19.567802429199219)
    from sysgauge.metrics import specs_of

    assert set(values) == {s.name for s in specs_of("apple")}


def test_elsewhere_than_macos_arm64_the_reason_says_so() -> None:
    reason = AppleSource(Tool("apple_gpu_stats", None), system="linux", machine="x86_64").probe()
    assert reason == "Apple GPUs are read on macOS on Apple silicon only (this is linux x86_64)"


def test_through_a_fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "apple_gpu_stats", SAMPLE)
    source = AppleSource(tool, interval=0.1, system="darwin", machine="arm64")
    assert source.probe() is None
    try:
        deadline = time.monotonic() + 10
        while not (readings := source.read()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        source.close()
    assert {r.spec.name for r in readings} >= {"hw.gpu.utilization", "hw.power", "hw.host.power"}
    gpu = next(r for r in readings if r.spec.name == "hw.gpu.utilization")
    assert dict(gpu.attributes)["hw.model"] == "Apple M1 Max" and dict(gpu.attributes)["hw.vendor"] == "apple"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("exit", "exited with status 3"), ("garbage", "broken JSON"), ("huge", "printed more than")],
)
def test_bad_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, reason: str) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "apple_gpu_stats", SAMPLE, mode)
    assert reason in (AppleSource(tool, system="darwin", machine="arm64").probe() or "")
