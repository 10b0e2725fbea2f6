"""scripts/gpu-check, run against the fake driver and a stand-in nvidia-smi: its comparison, timings and the
scenario it records (which must reproduce the scenario the fake was playing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.nvml_fake.scenario import HERE, FakeNvml, load, to_lines

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_compares_times_and_records_a_faithful_scenario(
    fake_nvml_library: FakeNvml, tmp_path: Path
) -> None:
    scenario = load("h100x8", root=1, child=1, other=1)
    (tmp_path / "scenario.json").write_text(json.dumps(scenario))
    (tmp_path / "scenario.txt").write_text(to_lines(scenario))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(HERE / "fake-nvidia-smi")
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": str(fake_nvml_library.path.parent),
        "FAKE_NVML_SCENARIO": str(tmp_path / "scenario.txt"),
        "FAKE_NVIDIA_SMI_JSON": str(tmp_path / "scenario.json"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu-check"), "--seconds", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads((out / "comparison.json").read_text())
    compared = [r for r in rows if "sysgauge" in r]
    assert len(compared) == 8 * 9  # every metric but the fan (NotSupported on both sides) on 8 GPUs
    assert all(r["verdict"] == "ok" for r in compared)
    timings = json.loads((out / "timings.json").read_text())
    assert timings["nvmlDeviceGetUtilizationRates"]["calls"] >= 8 * 2
    assert "nvmlDeviceGetPcieThroughput" not in timings
    recorded = json.loads((out / "scenario-recorded.json").read_text())
    assert recorded["driver_version"] == scenario["driver_version"]
    keys = (
        "uuid",
        "name",
        "pci_bus_id",
        "util",
        "memory",
        "temperature",
        "power_mw",
        "power_limit_mw",
        "energy_mj",
        "clocks",
        "encoder",
        "decoder",
        "ecc",
        "clock_events",
        "pcie",
        "nvlink",
    )
    for played, got in zip(scenario["devices"], recorded["devices"], strict=True):
        assert {k: got.get(k) for k in keys} == {k: played.get(k) for k in keys}
        assert got["returns"] == {"nvmlDeviceGetFanSpeed": 3}
