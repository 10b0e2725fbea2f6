"""Graphcore IPUs: the `gcipuinfo` Python module when it imports, else the `gc-info --device-info` text.

Both give, per IPU, the same attributes as strings with their units: "ipu utilisation: 21.25%",
"clock: 1330MHz", "average board temp: 35.4C", "ipu power: 120W", or "N/A" (sensors are only read while an
application runs with GCDA_MONITOR=1). Parsing (`parse_gc_info`) and shaping (`device_readings`) are pure;
"N/A", a missing key, or a value in a unit we do not know gives no reading, never a zero.

Which IPUs (the decision wandb's 3.8 notes leave to us): wandb reports only the devices whose
`user process id` is its monitored process. sysgauge keeps that idea for the process *tree* (a launcher's
child attaches the IPUs): with a `pid`, a device is reported when its `user process id` is in the tree of
`pid`. Two cases differ from wandb, on purpose:
- when no device carries `user process id` at all (gc-info's text, an SDK that does not say), nothing tells
  ours from others', so every device is reported (rather than none, which would hide the IPUs entirely);
- `pid=None` reports every device (a host-wide view).
The PIDs are those gcipuinfo sees; inside a container with its own PID namespace they may match none of
ours, and then no device is reported while process information exists (said in `describe()` once seen).

Reading runs on a Poller thread: gc-info takes about a second, and the module's update mode also queries
the devices, so the sampler's tick takes the latest complete reading and never waits.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._poller import Poller
from sysgauge.sources._tools import Tool, ToolError
from sysgauge.sources.base import Attributes, Reading, from_percent
from sysgauge.sources.process import ChildrenOf, walk_tree

_logger = logging.getLogger("sysgauge")

USER_PID = "user process id"
_QUANTITY = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%/]*)\s*")
# key -> (spec, {unit as printed: factor to the spec's unit}, extra attribute)
_FIELDS: tuple[tuple[str, m.MetricSpec, Mapping[str, float], tuple[tuple[str, str], ...]], ...] = (
    ("ipu utilisation", m.IPU_UTILIZATION, {"%": 0.01}, ()),
    ("average board temp", m.IPU_TEMPERATURE, {"C": 1.0, "": 1.0}, ((m.IPU_SENSOR, "board"),)),
    ("average die temp", m.IPU_TEMPERATURE, {"C": 1.0, "": 1.0}, ((m.IPU_SENSOR, "die"),)),
    ("ipu power", m.IPU_POWER, {"W": 1.0, "mW": 1e-3, "": 1.0}, ()),
    ("clock", m.IPU_CLOCK, {"MHz": 1e6, "GHz": 1e9, "kHz": 1e3, "Hz": 1.0}, ()),
)


# --- parsing and shaping (pure) -----------------------------------------------------------------


def parse_gc_info(text: str) -> list[dict[str, str]]:
    """`gc-info --device-info` text -> one {attribute: value} per device, in printed order.

    A device starts at a "Device Info:" header or at an `id:` line when the current one already has an id
    (so one listing or several, with or without headers, both parse). Lines that are not `key: value` are
    skipped. Raises ValueError when nothing in the text looks like a device.
    """
    devices: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.lower().rstrip(":") == "device info":
            current = None
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            continue
        key, value = key.strip().lower(), value.strip()
        if current is None or (key == "id" and "id" in current):
            current = {}
            devices.append(current)
        current.setdefault(key, value)
    devices = [d for d in devices if "id" in d]
    if not devices:
        raise ValueError("gc-info printed no device (no `id:` line)")
    return devices


def quantity(value: str, units: Mapping[str, float]) -> float | None:
    """'1330MHz' with {MHz: 1e6} -> 1.33e9; 'N/A', '', 'fast', or a unit not in `units` -> None."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    factor = units.get(match.group(2))
    if factor is None:
        return None
    return float(match.group(1)) * factor


def ipu_id(device: Mapping[str, str], position: int) -> str | int:
    """The device's `id` (an integer when it is one), else its position in the listing."""
    raw = str(device.get("id", "")).strip()
    if raw.isdigit():
        return int(raw)
    return raw or position


def device_readings(device: Mapping[str, str], ident: Attributes) -> list[Reading]:
    """One IPU's readings; a key the device lacks, or "N/A", simply gives no reading."""
    out = []
    for key, spec, units, extra in _FIELDS:
        raw = device.get(key)
        if not isinstance(raw, str):
            continue
        value = quantity(raw, units)
        if value is None:
            continue
        if spec is m.IPU_UTILIZATION:
            value = from_percent(value * 100.0)
            if value is None:
                continue
        out.append(Reading(spec, value, (*ident, *extra)))
    return out


def select(devices: list[dict[str, str]], tree: set[int] | None) -> list[tuple[int, dict[str, str]]]:
    """(position, device) of the devices to report; see the module docstring for the rule."""
    indexed = list(enumerate(devices))
    if tree is None or not any(USER_PID in d for d in devices):
        return indexed
    return [(i, d) for i, d in indexed if _pid_of(d) in tree]


def _pid_of(device: Mapping[str, str]) -> int | None:
    raw = str(device.get(USER_PID, "")).strip()
    return int(raw) if raw.isdigit() else None


def readings_of(devices: list[dict[str, str]], tree: set[int] | None) -> list[Reading]:
    """The readings of the devices `select` keeps, each named by its id."""
    out = []
    for position, device in select(devices, tree):
        out += device_readings(device, ((m.IPU_ID, ipu_id(device, position)),))
    return out


# --- the source ---------------------------------------------------------------------------------


class IpuSource:
    name = "ipu"

    def __init__(
        self,
        module: Any | None = None,
        tool: Tool | None = None,
        pid: int | None = None,
        tree: bool = True,
        children_of: ChildrenOf | None = None,
        interval: float = 2.0,
        timeout: float = 10.0,
        try_import_gcipuinfo: bool = True,
    ) -> None:
        self._module = module
        self._try_import = try_import_gcipuinfo and module is None
        self._tool = tool or Tool.find("gc-info")
        self._pid = pid
        self._tree = tree
        self._children_of = children_of
        self._timeout = timeout
        self._info: Any = None
        self._log = LogOnce(_logger)
        self.mode = ""
        self.notes: list[str] = []
        self._poller = Poller(
            "ipu",
            self.read_now,
            interval,
            stale_after=max(3 * interval, timeout + interval),
            on_error=self._failed,
        )

    def probe(self) -> str | None:
        if self._module is None and self._try_import:
            self._module = _import_gcipuinfo()
        if self._module is not None:
            try:
                info = self._module.gcipuinfo()
                if hasattr(info, "setUpdateMode"):
                    info.setUpdateMode(True)  # re-read the sensors on each getDevices()
                devices = _as_devices(info.getDevices())
            except Exception as exc:
                self._log.info("gcipuinfo", "sysgauge: gcipuinfo unusable (%r); trying gc-info", exc)
            else:
                if devices:
                    self._info, self.mode = info, "gcipuinfo"
                    self.notes.append(f"gcipuinfo: {len(devices)} IPU(s)")
                    return None
        if self._tool.path is None:
            return "gc-info not found on PATH, and the gcipuinfo Python module is not importable"
        try:
            devices = parse_gc_info(self._tool.run(["--device-info"], timeout=self._timeout))
        except (ToolError, ValueError) as exc:
            return str(exc)
        self.mode = "gc-info"
        self.notes.append(f"gc-info: {len(devices)} IPU(s)")
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("ipu")

    def describe(self) -> str:
        return "\n".join(self.notes)

    def read(self) -> list[Reading]:
        return self._poller.latest()

    def read_now(self) -> list[Reading]:
        """One reading, synchronously (the Poller's thread calls this). Raises when nothing was readable."""
        if self.mode == "gcipuinfo":
            devices = _as_devices(self._info.getDevices())
        elif self.mode == "gc-info":
            devices = parse_gc_info(self._tool.run(["--device-info"], timeout=self._timeout))
        else:
            return []
        tree = self._tree_pids()
        chosen = select(devices, tree)
        if tree is not None and devices and not chosen and any(USER_PID in d for d in devices):
            self._log.info(
                "ipu:none-ours",
                "sysgauge: no IPU is attached to process %d or its children; IPU readings wait for one",
                self._pid,
            )
        for position, device in chosen:
            missing = [key for key, *_ in _FIELDS if key not in device]
            if missing:
                self._log.info(
                    f"ipu:missing:{ipu_id(device, position)}:{','.join(missing)}",
                    "sysgauge: IPU %s reports no %s",
                    ipu_id(device, position),
                    ", ".join(missing),
                )
        return readings_of(devices, tree)

    def close(self) -> None:
        self._poller.close()
        self._info = None

    def _failed(self, exc: Exception) -> None:
        self._log.warning(f"ipu:{exc}", "sysgauge: IPU readings skipped: %s", exc)

    def _tree_pids(self) -> set[int] | None:
        if self._pid is None:
            return None
        if not self._tree:
            return {self._pid}
        if self._children_of is None:
            import psutil

            from sysgauge.sources.process import default_children_of

            self._children_of = default_children_of(psutil)
        return set(walk_tree(self._pid, self._children_of))


def _as_devices(answer: Any) -> list[dict[str, str]]:
    """getDevices() as a list of {str: str}; entries that are not mappings are dropped."""
    if not isinstance(answer, Iterable) or isinstance(answer, str | bytes | Mapping):
        raise ValueError(f"gcipuinfo.getDevices() returned {type(answer).__name__}, not a list")
    out = []
    for entry in answer:
        if isinstance(entry, Mapping):
            out.append({str(k).strip().lower(): str(v).strip() for k, v in entry.items()})
    return out


def _import_gcipuinfo() -> Any | None:
    try:
        return importlib.import_module("gcipuinfo")
    except Exception:  # a missing libgcipuinfo.so raises more than ImportError
        return None
