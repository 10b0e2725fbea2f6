"""The IPU source: a stand-in gcipuinfo module passed through the constructor, and the real subprocess path
with a fake `gc-info` executable printing the recorded IPU-M2000 listing (or failing, hanging, flooding)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from sysgauge import metrics as m
from sysgauge.sources._tools import Tool, ToolError
from sysgauge.sources.base import Reading
from sysgauge.sources.ipu import IpuSource, device_readings, parse_gc_info, quantity, readings_of
from tests.fake_modules import gcipuinfo as fake_gcipuinfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ipu"
GC_INFO_TEXT = FIXTURES / "gc-info_device-info_ipu-m2000_fabric.txt"
FAKE_TOOL = Path(__file__).resolve().parents[1] / "fake_tools" / "gc_info.py"
RECORDED = fake_gcipuinfo.RECORDED


def by_key(readings: list[Reading]) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    out = {}
    for reading in readings:
        key = (reading.spec.name, reading.attributes)
        assert key not in out, f"duplicate series {key}"
        out[key] = reading.value
    return out


def expected_wandb_device(ipu: int, board: float, die: float) -> dict[tuple[str, Any], Any]:
    ident = ((m.IPU_ID, ipu),)
    return {
        (m.IPU_UTILIZATION.name, ident): pytest.approx(0.2125),
        (m.IPU_TEMPERATURE.name, (*ident, (m.IPU_SENSOR, "board"))): board,
        (m.IPU_TEMPERATURE.name, (*ident, (m.IPU_SENSOR, "die"))): die,
        (m.IPU_POWER.name, ident): 120.0,
        (m.IPU_CLOCK.name, ident): 1.3e9,
    }


def fake_tool(tmp_path: Path, **config: Any) -> Tool:
    """The fake gc-info as an executable named gc-info in tmp_path/bin, with its instructions beside it."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    target = folder / "gc-info"
    shutil.copyfile(FAKE_TOOL, target)
    target.chmod(0o755)
    config.setdefault("mode", "record")
    config.setdefault("text", str(GC_INFO_TEXT))
    (folder / "gc-info.json").write_text(json.dumps(config))
    tool = Tool.find("gc-info", str(target))
    assert tool.path == str(target)
    return tool


def tool_source(tool: Tool, **kwargs: Any) -> IpuSource:
    return IpuSource(tool=tool, try_import_gcipuinfo=False, **kwargs)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# --- the gcipuinfo module -----------------------------------------------------------------------


def test_module_only_the_ipus_of_the_monitored_process() -> None:
    """wandb's rule: the device whose `user process id` is ours (123), not 456's, not the unattached one."""
    module = fake_gcipuinfo.with_devices(RECORDED)
    source = IpuSource(module=module, tool=Tool("gc-info", None), pid=123, tree=False)
    assert source.probe() is None
    assert source.mode == "gcipuinfo"
    assert module.state.update_mode is True
    got = by_key(source.read_now())
    assert got == expected_wandb_device(1, board=30.0, die=39.0)
    source.close()


def test_module_process_tree_counts_children() -> None:
    children = {100: [456], 456: []}
    source = IpuSource(
        module=fake_gcipuinfo, tool=Tool("gc-info", None), pid=100, children_of=lambda p: children.get(p, [])
    )
    assert source.probe() is None
    assert by_key(source.read_now()) == expected_wandb_device(0, board=20.0, die=25.0)
    source.close()


def test_module_every_ipu_without_a_pid() -> None:
    source = IpuSource(module=fake_gcipuinfo.with_devices(RECORDED), tool=Tool("gc-info", None), pid=None)
    assert source.probe() is None
    got = by_key(source.read_now())
    assert len(got) == 3 * 5
    assert got == {
        **expected_wandb_device(0, board=20.0, die=25.0),
        **expected_wandb_device(1, board=30.0, die=39.0),
        **expected_wandb_device(2, board=20.0, die=39.0),
    }


def test_module_with_no_ipu_of_ours_reports_none_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    source = IpuSource(
        module=fake_gcipuinfo.with_devices(RECORDED), tool=Tool("gc-info", None), pid=999, tree=False
    )
    assert source.probe() is None
    caplog.set_level(logging.INFO, logger="sysgauge")
    assert source.read_now() == []
    assert source.read_now() == []
    assert len([r for r in caplog.records if "no IPU is attached" in r.getMessage()]) == 1


def test_device_missing_half_its_keys(caplog: pytest.LogCaptureFixture) -> None:
    half = {
        "id": "7",
        "user process id": "123",
        "clock": "1330MHz",
        "ipu utilisation": "N/A",
        "board type": "C2",
    }
    module = fake_gcipuinfo.with_devices([half, RECORDED[1]])
    source = IpuSource(module=module, tool=Tool("gc-info", None), pid=123, tree=False)
    assert source.probe() is None
    caplog.set_level(logging.INFO, logger="sysgauge")
    for _ in range(3):
        got = by_key(source.read_now())
        assert got == {
            (m.IPU_CLOCK.name, ((m.IPU_ID, 7),)): 1.33e9,  # "N/A" utilisation: no reading, not 0
            **expected_wandb_device(1, board=30.0, die=39.0),
        }
    said = [r.getMessage() for r in caplog.records]
    assert said == ["sysgauge: IPU 7 reports no average board temp, average die temp, ipu power"]


def test_broken_module_falls_back_to_gc_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sysgauge")
    source = IpuSource(
        module=fake_gcipuinfo.with_devices(RuntimeError("no driver")), tool=fake_tool(tmp_path)
    )
    assert source.probe() is None
    assert source.mode == "gc-info"
    assert any("gcipuinfo unusable" in r.getMessage() for r in caplog.records)


def test_module_answering_nonsense_later_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Any] = [RECORDED]
    module = fake_gcipuinfo.with_devices(RECORDED)
    source = IpuSource(module=module, tool=Tool("gc-info", None), pid=None, interval=0.05, timeout=1.0)
    assert source.probe() is None
    source._info.getDevices = lambda: answers[-1]  # the binding starts answering nonsense
    answers.append("not a list")
    caplog.set_level(logging.WARNING, logger="sysgauge")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not caplog.records:
        assert source.read() == []
        time.sleep(0.05)
    time.sleep(0.3)  # several more failed polls
    source.close()
    said = [r.getMessage() for r in caplog.records]
    assert said == ["sysgauge: IPU readings skipped: gcipuinfo.getDevices() returned str, not a list"]


# --- gc-info, the real subprocess path ----------------------------------------------------------


def test_gc_info_recorded_m2000(tmp_path: Path) -> None:
    source = tool_source(fake_tool(tmp_path), pid=os.getpid())
    assert source.probe() is None
    assert source.mode == "gc-info"
    # gc-info's text has no `user process id`: nothing tells ours from others', so the IPU is reported.
    got = by_key(source.read_now())
    assert got == {
        (m.IPU_UTILIZATION.name, ((m.IPU_ID, 0),)): 0.0,
        (m.IPU_CLOCK.name, ((m.IPU_ID, 0),)): 1.33e9,
    }  # temperatures and power are N/A in the recording: no readings
    source.close()


def test_gc_info_through_the_poller(tmp_path: Path) -> None:
    source = tool_source(fake_tool(tmp_path), interval=0.1)
    assert source.probe() is None
    deadline = time.monotonic() + 10
    readings: list[Reading] = []
    while time.monotonic() < deadline and not readings:
        readings = source.read()
        time.sleep(0.05)
    source.close()
    assert {r.spec.name for r in readings} == {m.IPU_UTILIZATION.name, m.IPU_CLOCK.name}


def test_gc_info_missing() -> None:
    source = tool_source(Tool.find("gc-info", "/nonexistent/gc-info"))
    assert source.probe() == "gc-info not found on PATH, and the gcipuinfo Python module is not importable"
    assert source.read_now() == []


def test_gc_info_exits_non_zero(tmp_path: Path) -> None:
    source = tool_source(fake_tool(tmp_path, mode="fail"))
    assert source.probe() == (
        "gc-info exited with status 3: Error: could not open the IPU driver (no IPU attached)"
    )


def test_gc_info_hangs_killed_at_the_timeout_with_its_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    source = tool_source(fake_tool(tmp_path, mode="hang", pids=str(pids)), timeout=1.0)
    started = time.monotonic()
    reason = source.probe()
    assert time.monotonic() - started < 4
    assert reason == "gc-info did not finish within 1 s (killed)"
    tool_pid, child_pid = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (alive(tool_pid) or alive(child_pid)):
        time.sleep(0.05)
    assert not alive(tool_pid)
    assert not alive(child_pid)


def test_gc_info_garbage(tmp_path: Path) -> None:
    source = tool_source(fake_tool(tmp_path, mode="garbage"))
    assert source.probe() == "gc-info printed no device (no `id:` line)"


def test_gc_info_turns_to_garbage_after_probe(tmp_path: Path) -> None:
    tool = fake_tool(tmp_path)
    source = tool_source(tool)
    assert source.probe() is None
    (tmp_path / "bin" / "gc-info.json").write_text(json.dumps({"mode": "garbage"}))
    with pytest.raises(ValueError, match="no device"):
        source.read_now()


def test_gc_info_50_mb_is_capped(tmp_path: Path) -> None:
    source = tool_source(fake_tool(tmp_path, mode="huge"))
    started = time.monotonic()
    reason = source.probe()
    assert time.monotonic() - started < 8
    assert reason is not None
    assert reason.startswith("gc-info printed more than") and reason.endswith("bytes (killed)")


# --- parsing and shaping ------------------------------------------------------------------------


def test_parse_recorded_listing() -> None:
    devices = parse_gc_info(GC_INFO_TEXT.read_text())
    assert len(devices) == 1
    device = devices[0]
    assert device["id"] == "0"
    assert device["clock"] == "1330MHz"
    assert device["average board temp"] == "N/A"
    assert device["ipu utilisation (session)"] == "0.00%"
    assert device["ipuof host"] == "10.1.5.17"
    assert len(device) == 41


def test_parse_several_devices_with_and_without_headers() -> None:
    one = "id: 0\nclock: 1330MHz\nipu utilisation: 10.5%\n"
    two = "id: 1\nclock: 1.33GHz\naverage die temp: 35.4C\n"
    for text in (f"Device Info:\n{one}Device Info:\n{two}", one + two, f"\t{one}\n\t{two}"):
        devices = parse_gc_info(text)
        assert [d["id"] for d in devices] == ["0", "1"]
        got = by_key(readings_of(devices, None))
        assert got[(m.IPU_CLOCK.name, ((m.IPU_ID, 1),))] == pytest.approx(1.33e9)
        assert got[(m.IPU_TEMPERATURE.name, ((m.IPU_ID, 1), (m.IPU_SENSOR, "die")))] == 35.4
        assert got[(m.IPU_UTILIZATION.name, ((m.IPU_ID, 0),))] == pytest.approx(0.105)


@pytest.mark.parametrize("text", ["", "\x00\x01\x02", "Device Info:\n", "clock: 1330MHz\n", "a\nb\nc"])
def test_parse_garbage_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gc_info(text)


@pytest.mark.parametrize(
    ("value", "units", "expected"),
    [
        ("1330MHz", {"MHz": 1e6}, 1.33e9),
        ("1330 MHz", {"MHz": 1e6}, 1.33e9),
        ("35.4C", {"C": 1.0}, 35.4),
        ("120W", {"W": 1.0}, 120.0),
        ("500mW", {"W": 1.0, "mW": 1e-3}, 0.5),
        ("21.25%", {"%": 0.01}, 0.2125),
        ("N/A", {"%": 0.01}, None),
        ("", {"": 1.0}, None),
        ("fast", {"MHz": 1e6}, None),
        ("12 furlongs", {"MHz": 1e6}, None),
        ("16 GT/s", {"MHz": 1e6}, None),
    ],
)
def test_quantity(value: str, units: dict[str, float], expected: float | None) -> None:
    assert quantity(value, units) == (pytest.approx(expected) if expected is not None else None)


def test_device_readings_clamps_a_rounding_overshoot_and_drops_garbage() -> None:
    def utilisation(text: str) -> list[float]:
        return [r.value for r in device_readings({"ipu utilisation": text}, ((m.IPU_ID, 0),))]

    assert utilisation("100.4%") == [1.0]
    assert utilisation("250%") == []
    assert utilisation("-3%") == []


def test_tool_errors_are_tool_errors(tmp_path: Path) -> None:
    tool = fake_tool(tmp_path, mode="fail")
    with pytest.raises(ToolError):
        tool.run(["--device-info"], timeout=5)


def test_specs_are_the_declared_ipu_metrics() -> None:
    assert set(IpuSource(tool=Tool("gc-info", None), try_import_gcipuinfo=False).specs()) == {
        m.IPU_UTILIZATION,
        m.IPU_TEMPERATURE,
        m.IPU_POWER,
        m.IPU_CLOCK,
    }
