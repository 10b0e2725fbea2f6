"""Apple silicon GPUs through the `apple_gpu_stats --json` tool (macOS on arm64 only).

The tool prints one JSON object; `parse_apple_gpu_stats` is pure. Temperature is the mean of the GPU sensors
that read non-zero (`m1Gpu1`… on M1; `m2Gpu*`, `m3Gpu*` on later chips; unused ones read 0). GPU power is
the larger of `gpuPower` and `gpuPowerPMVR`: which rail carries the reading depends on the chip (the M1 Max
sample reports 0 W on one and 8.4 W on the other).
"""

from __future__ import annotations

import json
import logging
import platform
import re
import sys
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._poller import Poller
from sysgauge.sources._tools import Tool, ToolError
from sysgauge.sources.base import Attributes, Reading, finite_number, from_percent

_logger = logging.getLogger("sysgauge")
_GPU_SENSOR = re.compile(r"m\d+Gpu\d+")


def parse_apple_gpu_stats(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        raise ValueError("apple_gpu_stats printed no JSON")
    try:
        document, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"apple_gpu_stats printed broken JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise ValueError("apple_gpu_stats printed JSON that is not an object")
    return document


def to_readings(stats: dict[str, Any]) -> list[Reading]:
    name = str(stats.get("name") or "Apple GPU")
    ident: Attributes = (
        (m.HW_ID, "apple-gpu0"),
        (m.HW_NAME, "gpu0"),
        (m.HW_VENDOR, "apple"),
        (m.HW_MODEL, name),
        (m.HW_TYPE, "gpu"),
        (m.GPU_INDEX, 0),
    )
    out = []
    percent = finite_number(stats.get("utilization"))
    utilization = None if percent is None else from_percent(percent)
    if utilization is not None:
        out.append(Reading(m.APPLE_GPU_UTILIZATION, utilization, (*ident, (m.HW_GPU_TASK, "general"))))
    in_use = finite_number(stats.get("inUseSystemMemory"))
    if in_use is not None:
        out.append(Reading(m.APPLE_GPU_MEMORY_USAGE, in_use, ident))
    allocated = finite_number(stats.get("allocatedSystemMemory"))
    if allocated is not None:
        out.append(Reading(m.APPLE_GPU_MEMORY_ALLOCATED, allocated, ident))
    sensors = [finite_number(v) for k, v in stats.items() if _GPU_SENSOR.fullmatch(k)]
    temperatures = [t for t in sensors if t is not None and t > 0]
    if temperatures:
        # Divided first: a sum of garbled huge readings would overflow to infinity.
        out.append(Reading(m.APPLE_TEMPERATURE, sum(t / len(temperatures) for t in temperatures), ident))
    power, pmvr = finite_number(stats.get("gpuPower")), finite_number(stats.get("gpuPowerPMVR"))
    rails = [p for p in (power, pmvr) if p is not None]
    if rails:
        out.append(Reading(m.APPLE_POWER, max(rails), ident))
    system = finite_number(stats.get("systemPower"))
    if system is not None:
        out.append(Reading(m.APPLE_HOST_POWER, system))
    return out


class AppleSource:
    name = "apple"

    def __init__(
        self,
        tool: Tool | None = None,
        interval: float = 2.0,
        timeout: float = 10.0,
        system: str = sys.platform,
        machine: str = platform.machine(),
    ) -> None:
        self._tool = tool or Tool.find("apple_gpu_stats")
        self._timeout = timeout
        self._system = system
        self._machine = machine
        self._log = LogOnce(_logger)
        self._poller = Poller(
            "apple",
            self._read_now,
            interval,
            stale_after=max(3 * interval, timeout + interval),
            on_error=self._failed,
        )

    def probe(self) -> str | None:
        if self._system != "darwin" or self._machine not in ("arm64", "aarch64"):
            return (
                f"Apple GPUs are read on macOS on Apple silicon only (this is {self._system} {self._machine})"
            )
        if self._tool.path is None:
            return "apple_gpu_stats not found on PATH"
        try:
            parse_apple_gpu_stats(self._tool.run(["--json"], timeout=self._timeout))
        except (ToolError, ValueError) as exc:
            return str(exc)
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("apple")

    def read(self) -> list[Reading]:
        return self._poller.latest()

    def close(self) -> None:
        self._poller.close()

    def _failed(self, exc: Exception) -> None:
        self._log.warning(f"apple:{exc}", "sysgauge: Apple GPU readings skipped: %s", exc)

    def _read_now(self) -> list[Reading]:
        return to_readings(parse_apple_gpu_stats(self._tool.run(["--json"], timeout=self._timeout)))
