"""Scenarios for the fake libnvidia-ml.so.1: JSON for people, flattened to the "key value" lines the C side
reads. Building the library is here too (gcc), cached by the source's hash."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "fake_nvml.c"
SCENARIOS = HERE / "scenarios"
BUILD_ROOT = HERE.parents[1] / ".cache" / "fake_nvml"


class CompilerMissing(Exception):
    pass


def build(variant: str = "current") -> Path:
    """Compile the fake (variant "old" lacks the _v2/_v3 symbols of newer drivers); returns the .so path."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise CompilerMissing("no C compiler (cc/gcc) to build the fake libnvidia-ml.so.1")
    digest = hashlib.sha256(SOURCE.read_bytes() + variant.encode()).hexdigest()[:16]
    directory = BUILD_ROOT / f"{variant}-{digest}"
    library = directory / "libnvidia-ml.so.1"
    if not library.exists():
        directory.mkdir(parents=True, exist_ok=True)
        flags = ["-DOLD_DRIVER"] if variant == "old" else []
        partial = directory / "libnvidia-ml.so.1.tmp"
        subprocess.run(
            [
                compiler,
                "-shared",
                "-fPIC",
                "-O1",
                "-Wall",
                "-Wextra",
                "-Werror",
                *flags,
                "-Wl,-soname,libnvidia-ml.so.1",
                "-o",
                str(partial),
                str(SOURCE),
            ],
            check=True,
        )
        partial.rename(library)
    return library


def load(name: str, **substitutions: int) -> dict[str, Any]:
    """A shipped scenario; "{root}"-style placeholders in pids are replaced (real pids of the test)."""
    text = (SCENARIOS / f"{name}.json").read_text()
    for key, value in substitutions.items():
        text = text.replace("{" + key + "}", str(value))
    scenario: dict[str, Any] = json.loads(text)
    return scenario


def to_lines(scenario: dict[str, Any]) -> str:
    lines = []
    for key in ("driver_version", "cuda_version"):
        if key in scenario:
            lines.append(f"{key} {scenario[key]}")
    if "init_return" in scenario:
        lines.append(f"init.return {scenario['init_return']}")
    gpus = scenario.get("devices", [])
    lines.append(f"device_count {len(gpus)}")
    next_index = len(gpus)
    for index, gpu in enumerate(gpus):
        lines += _device_lines(index, gpu)
        mig = gpu.get("mig")
        if mig:
            lines.append(f"dev.{index}.mig.mode {1 if mig.get('enabled', True) else 0}")
            lines.append(f"dev.{index}.mig.max {mig['max']}")
            for slot, instance in enumerate(mig.get("instances", [])):
                if instance is None:
                    continue  # an empty slot
                lines.append(f"dev.{index}.mig.slot.{slot} {next_index}")
                lines += _device_lines(next_index, instance)
                lines.append(f"dev.{next_index}.parent {index}")
                next_index += 1
    return "\n".join(lines) + "\n"


def _device_lines(index: int, gpu: dict[str, Any]) -> list[str]:
    p = f"dev.{index}."
    lines = [f"{p}uuid {gpu['uuid']}"]
    simple = {
        "name": "name",
        "pci_bus_id": "pci_bus_id",
        "temperature": "temperature",
        "power_mw": "power_mw",
        "power_limit_mw": "power_limit_mw",
        "energy_mj": "energy_mj",
        "fan": "fan",
        "encoder": "encoder",
        "decoder": "decoder",
        "clock_events": "clock_events",
        "lost_after": "lost_after",
    }
    for key, field in simple.items():
        if key in gpu:
            lines.append(f"{p}{field} {gpu[key]}")
    for group, fields in (
        ("util", ("gpu", "memory")),
        ("memory", ("total", "used", "free", "reserved")),
        ("clocks", ("sm", "mem")),
        ("pcie", ("tx", "rx")),
        ("ecc", ("corrected", "uncorrected")),
        ("nvlink", ("links", "tx_kib", "rx_kib")),
    ):
        section = gpu.get(group, {})
        prefix = "clock" if group == "clocks" else group
        for field in fields:
            if field in section:
                lines.append(f"{p}{prefix}.{field} {section[field]}")
    for kind in ("compute", "graphics"):
        processes = gpu.get("processes", {}).get(kind, [])
        if processes:
            lines.append(f"{p}processes.{kind} " + ",".join(f"{x['pid']}:{x['memory']}" for x in processes))
    samples = gpu.get("process_samples", [])
    if samples:
        lines.append(
            f"{p}process_samples " + ",".join(f"{s['pid']}:{s['sm']}:{s.get('mem', 0)}" for s in samples)
        )
    for function, code in gpu.get("returns", {}).items():
        lines.append(f"{p}return.{function} {code}")
    return lines


class FakeNvml:
    """The fake library loaded into this process, and its test controls."""

    def __init__(self, library: Path, scenario_dir: Path) -> None:
        # Loaded under its soname before pynvml's own CDLL("libnvidia-ml.so.1"), which then finds it.
        self.lib = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        self.lib.fake_nvml_call_count.restype = ctypes.c_ulonglong
        self.lib.fake_nvml_call_count.argtypes = [ctypes.c_char_p]
        self.lib.fake_nvml_set.argtypes = [ctypes.c_char_p]
        self.path = library
        self._dir = scenario_dir

    def write(self, scenario: dict[str, Any], name: str = "scenario") -> Path:
        path = self._dir / f"{name}.txt"
        path.write_text(to_lines(scenario))
        return path

    def set(self, line: str) -> None:
        self.lib.fake_nvml_set(line.encode())

    def calls(self, function: str) -> int:
        return int(self.lib.fake_nvml_call_count(function.encode()))

    def reset_counts(self) -> None:
        self.lib.fake_nvml_reset_counts()
