"""AMD GPUs from recorded real rocm-smi outputs, through a fake rocm-smi executable (the real subprocess
path), and the amdsmi mapping with a small stand-in module."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import SystemMonitor
from sysgauge.options import resolve_options
from sysgauge.sources._tools import Tool, ToolError
from sysgauge.sources.amd import AmdSource, card_readings, identities, number, parse_rocm_smi
from tests.conftest import points
from tests.vendor_tools import FIXTURES, fake_tool

AMD = FIXTURES / "amd"


def readings_of(name: str) -> dict[tuple[str, str], float]:
    """{(metric, hw.id): value} for a recorded output."""
    cards = parse_rocm_smi((AMD / name).read_text())
    ident = identities(cards)
    return {
        (r.spec.name, str(dict(r.attributes)["hw.id"])): r.value
        for card, fields in cards.items()
        for r in card_readings(fields, ident[card])
    }


def test_numbers_with_units_and_absent_values() -> None:
    assert [number(v) for v in ("20C", "1300MHz", "17.8 C", "89.0", "0.00%")] == [
        20.0,
        1300.0,
        17.8,
        89.0,
        0.0,
    ]
    assert [number(v) for v in ("N/A", "N/A (Secondary die)", "", "unknown")] == [None, None, None, None]


def test_rocm5_mi210() -> None:
    values = readings_of("rocm-smi_rocm5_mi210_1gpu.json")
    gpu = "0x43cc8cc8af246708"
    assert values[("hw.gpu.utilization", gpu)] == 0.0
    assert values[("hw.gpu.memory.utilization", gpu)] == 0.0
    assert values[("hw.temperature", gpu)] == 33.0  # the edge sensor
    assert values[("hw.power", gpu)] == 41.0
    assert values[("sysgauge.gpu.power.limit", gpu)] == 300.0
    assert values[("sysgauge.gpu.power.utilization", gpu)] == pytest.approx(41 / 300)


def test_rocm6_keys_and_mi300x_power_key() -> None:
    rocm6 = readings_of("rocm-smi_rocm6_mi250_1gpu.json")
    assert rocm6[("hw.power", "0x1f9de0957d137942")] == 91.0
    assert ("hw.gpu.memory.utilization", "0x1f9de0957d137942") in rocm6  # "GPU Memory Allocated (VRAM%)"
    mi300 = readings_of("rocm-smi_rocm6_mi300x_subset_wandb.json")
    assert mi300[("hw.power", "card0")] == 89.0  # "Current Socket Graphics Package Power (W)"
    assert mi300[("hw.temperature", "card0")] == 43.0  # only the memory sensor is there
    assert mi300[("hw.gpu.memory.utilization", "card0")] == 0.20


def test_vram_totals_give_bytes_and_secondary_die_gives_no_power() -> None:
    values = readings_of("rocm-smi_telegraf_rx6700xt_rocm602.json")
    bus = "0000:07:00.0"  # no unique id: the PCI bus identifies the card
    assert values[("hw.gpu.memory.usage", bus)] == 1572757504
    assert values[("hw.gpu.memory.limit", bus)] == 12868124672
    assert ("hw.power", bus) not in values  # "N/A (Secondary die)" is absent, not 0
    assert values[("sysgauge.gpu.power.limit", bus)] == 211.0
    vega = readings_of("rocm-smi_telegraf_vega-10-XT.json")
    assert vega[("hw.gpu.memory.utilization", "0x2150e7d042a1124")] == pytest.approx(17776640 / 17163091968)


def test_six_mi100_and_copied_ids_stay_distinct() -> None:
    mi100 = readings_of("rocm-smi_telegraf_mi100_rocm571.json")
    assert len({gpu for name, gpu in mi100 if name == "hw.temperature"}) == 6
    # The MI250 fixture's card1 is a copy of card0 with the same unique id: the card name disambiguates.
    mi250 = readings_of("rocm-smi_rocm5_mi250_2gpu.json")
    assert {gpu for name, gpu in mi250 if name == "hw.gpu.utilization"} == {
        "card0/0x719d230578348e8c",
        "card1/0x719d230578348e8c",
    }


def test_partial_card_and_warning_prefix() -> None:
    partial = readings_of("rocm-smi_rocm5_mi250_2gpu_partial.json")
    card1 = {name: value for (name, gpu), value in partial.items() if gpu.startswith("card1")}
    # card1 lacks the edge/junction sensors, the PCI bus and VRAM totals: it gives what it has.
    assert card1 == {
        "hw.gpu.utilization": 0.20,
        "hw.gpu.memory.utilization": 0.0,
        "hw.temperature": 43.0,
        "hw.power": 89.0,
        "sysgauge.gpu.power.limit": 560.0,
        "sysgauge.gpu.power.utilization": 89.0 / 560.0,
    }
    assert parse_rocm_smi((AMD / "rocm-smi_no-amd-gpus_warning-prefix.txt").read_text()) == {}


def test_cards_ordered_numerically() -> None:
    text = json.dumps({f"card{i}": {"GPU use (%)": str(i)} for i in (1, 10, 9, 2)} | {"system": {}})
    assert list(parse_rocm_smi(text)) == ["card1", "card2", "card9", "card10"]


@pytest.fixture
def live_driver(tmp_path: Path) -> str:
    state = tmp_path / "initstate"
    state.write_text("live\n")
    return str(state)


def amd_source(tool: Tool, live_driver: str, interval: float = 0.1) -> AmdSource:
    return AmdSource(
        tool=tool, interval=interval, timeout=1.0, driver_state=live_driver, try_import_amdsmi=False
    )


def test_end_to_end_through_a_fake_rocm_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_driver: str
) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "rocm-smi", AMD / "rocm-smi_rocm5_mi250_2gpu.json")
    source = amd_source(tool, live_driver)
    assert source.probe() is None and source.mode == "rocm-smi"
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    monitor = SystemMonitor(
        provider, [source], resolve_options({"sampling_interval": 0.1, "window": 1}, environ={})
    )
    try:
        deadline = time.monotonic() + 10
        while not points(data := reader.get_metrics_data(), "hw.gpu.utilization"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        utilization = {str(a["hw.name"]): v for v, a in points(data, "hw.gpu.utilization")}
        assert utilization == {"card0": pytest.approx(0.10), "card1": pytest.approx(0.20)}
        (_, attrs), *_ = points(data, "hw.power")
        assert attrs["hw.vendor"] == "amd" and attrs["hw.model"] == "AMD INSTINCT MI250 (MCM) OAM AC MBA"
    finally:
        monitor.shutdown()
        provider.shutdown()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("exit", "exited with status 3: rocm-smi: something went wrong"),
        ("garbage", "rocm-smi printed broken JSON"),
        ("truncated", "rocm-smi printed broken JSON"),
        ("empty-object", "rocm-smi reports no AMD GPU"),
        ("huge", "printed more than"),
    ],
)
def test_bad_tool_output_makes_the_source_unavailable_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_driver: str, mode: str, reason: str
) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "rocm-smi", AMD / "rocm-smi_rocm5_mi210_1gpu.json", mode)
    assert reason in (amd_source(tool, live_driver).probe() or "")


def test_no_gpu_warning_is_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_driver: str, capfd: pytest.CaptureFixture[str]
) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "rocm-smi", AMD / "rocm-smi_no-amd-gpus_warning-prefix.txt")
    assert amd_source(tool, live_driver).probe() == "rocm-smi reports no AMD GPU"
    captured = capfd.readouterr()
    assert "No AMD GPUs" not in captured.out + captured.err


def test_missing_tool_or_driver(tmp_path: Path, live_driver: str) -> None:
    assert "rocm-smi not found on PATH" in (amd_source(Tool("rocm-smi", None), live_driver).probe() or "")
    dead = tmp_path / "dead"
    dead.write_text("unloading\n")
    assert amd_source(Tool("rocm-smi", "/bin/true"), str(dead)).probe() == "the amdgpu driver is not loaded"


def test_a_hung_tool_is_killed_with_its_children_and_never_delays_the_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_driver: str
) -> None:
    tool = fake_tool(tmp_path, monkeypatch, "rocm-smi", AMD / "rocm-smi_rocm5_mi210_1gpu.json", "hang")
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not finish within 1 s"):
        tool.run(["-a", "--json"], timeout=1.0)
    assert time.monotonic() - started < 3

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # SIGKILL is delivered asynchronously: give a loaded machine a moment.
    deadline = time.monotonic() + 5
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"left running: {[p for p in pids if not gone(p)]}"
        time.sleep(0.05)
    # After a good probe the tool starts hanging: reads return at once, from the poller's last result.
    good = fake_tool(tmp_path, monkeypatch, "rocm-smi", AMD / "rocm-smi_rocm5_mi210_1gpu.json")
    source = amd_source(good, live_driver)
    assert source.probe() is None
    monkeypatch.setenv("FAKE_TOOL_MODE", "hang")
    try:
        for _ in range(5):
            began = time.monotonic()
            source.read()
            assert time.monotonic() - began < 0.05
            time.sleep(0.1)
    finally:
        source.close()
    os.environ.pop("FAKE_TOOL_MODE", None)


class FakeAmdSmi:
    """The few amdsmi functions sysgauge calls, answering like amdsmi 7.0 (values in %, MB, °C, W)."""

    class AmdSmiTemperatureType:
        EDGE = 0

    class AmdSmiTemperatureMetric:
        CURRENT = 0

    def __init__(self) -> None:
        self.shut = False

    def amdsmi_init(self) -> None:
        pass

    def amdsmi_shut_down(self) -> None:
        self.shut = True

    def amdsmi_get_processor_handles(self) -> list[str]:
        return ["h0", "h1"]

    def amdsmi_get_gpu_device_uuid(self, handle: str) -> str:
        return f"uuid-{handle}"

    def amdsmi_get_gpu_asic_info(self, handle: str) -> dict[str, Any]:
        return {"market_name": "AMD Instinct MI300X"}

    def amdsmi_get_gpu_activity(self, handle: str) -> dict[str, Any]:
        return {"gfx_activity": 57 if handle == "h0" else "N/A", "umc_activity": 12, "mm_activity": "N/A"}

    def amdsmi_get_gpu_vram_usage(self, handle: str) -> dict[str, Any]:
        return {"vram_total": 196592, "vram_used": 1024}

    def amdsmi_get_temp_metric(self, handle: str, kind: int, metric: int) -> int:
        return 41

    def amdsmi_get_power_info(self, handle: str) -> dict[str, Any]:
        raise RuntimeError("AmdSmiLibraryException: NOT_SUPPORTED")


def test_amdsmi_api_is_preferred_and_mapped(live_driver: str) -> None:
    api = FakeAmdSmi()
    source = AmdSource(amdsmi=api, tool=Tool("rocm-smi", None), driver_state=live_driver)
    assert source.probe() is None and source.mode == "amdsmi"
    got = {(r.spec.name, str(dict(r.attributes)["hw.id"])): r.value for r in source._read_now()}
    source.close()
    assert got[("hw.gpu.utilization", "uuid-h0")] == 0.57
    assert ("hw.gpu.utilization", "uuid-h1") not in got  # "N/A" is absent
    assert got[("hw.gpu.memory.usage", "uuid-h0")] == 1024 * 2**20
    assert got[("hw.temperature", "uuid-h1")] == 41
    assert ("hw.power", "uuid-h0") not in got  # not supported: no reading, no crash
    assert api.shut


def test_every_declared_amd_metric_comes_from_a_real_recording() -> None:
    from sysgauge.metrics import specs_of

    assert {name for name, _ in readings_of("rocm-smi_telegraf_mi100_rocm571.json")} == {
        s.name for s in specs_of("amd")
    }
