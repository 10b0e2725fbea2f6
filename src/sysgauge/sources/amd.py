"""AMD GPUs: the `amdsmi` Python API when it imports and its library loads, else `rocm-smi -a --json`.

rocm-smi takes 1 to 3 seconds per call, so reading happens on a Poller thread and the sampler's tick takes
the latest result. Parsing is pure (`parse_rocm_smi`, `card_readings`) and tolerant of what real releases
print: a warning line before the JSON, values with units or "N/A (Secondary die)", keys renamed between
ROCm 4.3 and 6.x. Nothing rocm-smi prints reaches the user's console.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from sysgauge import metrics as m
from sysgauge._logonce import LogOnce
from sysgauge.sources._poller import Poller
from sysgauge.sources._tools import Tool, ToolError
from sysgauge.sources.base import Attributes, Reading, finite_number, from_percent, ratio, share

_logger = logging.getLogger("sysgauge")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_AMDSMI_NA = (0xFFFF, 0xFFFFFFFF, "N/A")

# Each quantity under every name a ROCm release used for it, in order of preference.
_UTILIZATION = ("GPU use (%)",)
_MEMORY_PERCENT = ("GPU Memory Allocated (VRAM%)", "GPU memory use (%)")
_VRAM_TOTAL = ("VRAM Total Memory (B)",)
_VRAM_USED = ("VRAM Total Used Memory (B)",)
# Edge is the closest to NVIDIA's GPU temperature; partial reports may only have the memory sensor.
_TEMPERATURE = (
    "Temperature (Sensor edge) (C)",
    "Temperature (Sensor junction) (C)",
    "Temperature (Sensor memory) (C)",
)
# MI300 reports the current socket power; earlier parts the average (wandb issue #8623).
_POWER = ("Average Graphics Package Power (W)", "Current Socket Graphics Package Power (W)")
_POWER_MAX = ("Max Graphics Package Power (W)",)
_MODEL = ("Card Series", "Card series", "Device Name", "Card Model", "Card model")


def number(value: object) -> float | None:
    """'20C', '1300MHz', '17.8 C', '89.0' -> a float; 'N/A', 'N/A (Secondary die)', '' -> None (not 0)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return finite_number(value)
    if not isinstance(value, str) or value.strip().upper().startswith("N/A"):
        return None
    match = _NUMBER.search(value)
    return finite_number(float(match.group())) if match else None


def parse_rocm_smi(text: str) -> dict[str, dict[str, str]]:
    """The `cardN` sections of `rocm-smi -a --json` output, ordered numerically (card10 after card9)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("rocm-smi printed no JSON")
    try:
        document, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"rocm-smi printed broken JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise ValueError("rocm-smi printed JSON that is not an object")
    cards = {k: v for k, v in document.items() if k.startswith("card") and isinstance(v, dict)}
    return dict(sorted(cards.items(), key=lambda item: _card_number(item[0])))


def _card_number(name: str) -> int:
    digits = name[4:]
    return int(digits) if digits.isdigit() else 1 << 30


def _first(fields: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in fields:
            value = number(fields[key])
            if value is not None:
                return value
    return None


def identities(cards: Mapping[str, Mapping[str, Any]]) -> dict[str, Attributes]:
    """hw.id from the unique id, else the PCI bus, else the card name; made unique within the report."""
    ids = {}
    for card, fields in cards.items():
        unique = str(fields.get("Unique ID", "")).strip()
        bus = str(fields.get("PCI Bus", "")).strip()
        ids[card] = unique if unique and not unique.upper().startswith("N/A") else bus or card
    if len(set(ids.values())) < len(ids):  # copied or missing ids: the card name disambiguates
        ids = {card: f"{card}/{value}" for card, value in ids.items()}
    out = {}
    for card, fields in cards.items():
        model = next((str(fields[k]) for k in _MODEL if k in fields and str(fields[k]).strip()), "AMD GPU")
        attrs: list[tuple[str, str | int]] = [
            (m.HW_ID, ids[card]),
            (m.HW_NAME, card),
            (m.HW_VENDOR, "amd"),
            (m.HW_MODEL, model),
            (m.HW_TYPE, "gpu"),
            (m.GPU_INDEX, _card_number(card)),
        ]
        bus = str(fields.get("PCI Bus", "")).strip()
        if bus:
            attrs.append((m.GPU_PCI_BUS_ID, bus))
        out[card] = tuple(attrs)
    return out


def card_readings(fields: Mapping[str, Any], ident: Attributes) -> list[Reading]:
    """One card's readings; a key the card lacks simply gives no reading."""
    out = []
    utilization = _percent(_first(fields, _UTILIZATION))
    if utilization is not None:
        out.append(Reading(m.AMD_GPU_UTILIZATION, utilization, (*ident, (m.HW_GPU_TASK, "general"))))
    total, used = _first(fields, _VRAM_TOTAL), _first(fields, _VRAM_USED)
    percent = _percent(_first(fields, _MEMORY_PERCENT))
    if total and used is not None:
        out += [Reading(m.AMD_GPU_MEMORY_USAGE, used, ident), Reading(m.AMD_GPU_MEMORY_LIMIT, total, ident)]
        fraction = share(used, total)
        if fraction is not None:
            out.append(Reading(m.AMD_GPU_MEMORY_UTILIZATION, fraction, ident))
    elif percent is not None:
        out.append(Reading(m.AMD_GPU_MEMORY_UTILIZATION, percent, ident))
    temperature = _first(fields, _TEMPERATURE)
    if temperature is not None:
        out.append(Reading(m.AMD_TEMPERATURE, temperature, ident))
    power, limit = _first(fields, _POWER), _first(fields, _POWER_MAX)
    if power is not None:
        out.append(Reading(m.AMD_POWER, power, ident))
    if limit:
        out.append(Reading(m.AMD_POWER_LIMIT, limit, ident))
        drawn = None if power is None else ratio(power, limit)
        if drawn is not None:
            out.append(Reading(m.AMD_POWER_UTILIZATION, drawn, ident))
    return out


def _percent(value: float | None) -> float | None:
    return None if value is None else from_percent(value)


class AmdSource:
    name = "amd"

    def __init__(
        self,
        tool: Tool | None = None,
        amdsmi: Any | None = None,
        interval: float = 2.0,
        timeout: float = 10.0,
        driver_state: str = "/sys/module/amdgpu/initstate",
        try_import_amdsmi: bool = True,
    ) -> None:
        self._tool = tool or Tool.find("rocm-smi")
        self._amdsmi = amdsmi
        self._try_import = try_import_amdsmi and amdsmi is None
        self._timeout = timeout
        self._driver_state = driver_state
        self._handles: list[Any] = []
        self._log = LogOnce(_logger)
        self.mode = ""
        self._poller = Poller(
            "amd",
            self._read_now,
            interval,
            stale_after=max(3 * interval, timeout + interval),
            on_error=self._failed,
        )

    def probe(self) -> str | None:
        if self._amdsmi is None and self._try_import:
            self._amdsmi = _import_amdsmi()
        if self._amdsmi is not None:
            try:
                self._amdsmi.amdsmi_init()
                self._handles = list(self._amdsmi.amdsmi_get_processor_handles())
            except Exception as exc:
                self._log.info("amdsmi", "sysgauge: amdsmi unusable (%s); trying rocm-smi", exc)
                self._handles = []
            if self._handles:
                self.mode = "amdsmi"
                return None
        if not _driver_live(self._driver_state):
            return "the amdgpu driver is not loaded"
        if self._tool.path is None:
            return "rocm-smi not found on PATH, and the amdsmi Python package is not usable"
        try:
            cards = parse_rocm_smi(self._tool.run(["-a", "--json"], timeout=self._timeout))
        except (ToolError, ValueError) as exc:
            return str(exc)
        if not cards:
            return "rocm-smi reports no AMD GPU"
        self.mode = "rocm-smi"
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("amd")

    def read(self) -> list[Reading]:
        return self._poller.latest()

    def close(self) -> None:
        self._poller.close()
        if self.mode == "amdsmi" and self._amdsmi is not None:
            try:
                self._amdsmi.amdsmi_shut_down()
            except Exception:
                pass

    def _failed(self, exc: Exception) -> None:
        self._log.warning(f"amd:{exc}", "sysgauge: AMD GPU readings skipped: %s", exc)

    def _read_now(self) -> list[Reading]:
        if self.mode == "amdsmi":
            return self._read_amdsmi()
        cards = parse_rocm_smi(self._tool.run(["-a", "--json"], timeout=self._timeout))
        ident = identities(cards)
        return [reading for card, fields in cards.items() for reading in card_readings(fields, ident[card])]

    def _read_amdsmi(self) -> list[Reading]:
        api: Any = self._amdsmi
        out = []
        for index, handle in enumerate(self._handles):
            ident: Attributes = (
                (m.HW_ID, str(_call(api.amdsmi_get_gpu_device_uuid, handle) or f"amd{index}")),
                (m.HW_NAME, f"card{index}"),
                (m.HW_VENDOR, "amd"),
                (
                    m.HW_MODEL,
                    str((_call(api.amdsmi_get_gpu_asic_info, handle) or {}).get("market_name", "AMD GPU")),
                ),
                (m.HW_TYPE, "gpu"),
                (m.GPU_INDEX, index),
            )
            activity = _call(api.amdsmi_get_gpu_activity, handle) or {}
            gfx = _percent(_value(activity.get("gfx_activity")))
            if gfx is not None:
                out.append(Reading(m.AMD_GPU_UTILIZATION, gfx, (*ident, (m.HW_GPU_TASK, "general"))))
            vram = _call(api.amdsmi_get_gpu_vram_usage, handle) or {}
            total, used = _value(vram.get("vram_total")), _value(vram.get("vram_used"))
            if total and used is not None:  # MB
                out += [
                    Reading(m.AMD_GPU_MEMORY_USAGE, used * 2**20, ident),
                    Reading(m.AMD_GPU_MEMORY_LIMIT, total * 2**20, ident),
                ]
                fraction = share(used, total)
                if fraction is not None:
                    out.append(Reading(m.AMD_GPU_MEMORY_UTILIZATION, fraction, ident))
            edge = getattr(getattr(api, "AmdSmiTemperatureType", None), "EDGE", 0)
            current = getattr(getattr(api, "AmdSmiTemperatureMetric", None), "CURRENT", 0)
            temperature = _value(_call(api.amdsmi_get_temp_metric, handle, edge, current))
            if temperature is not None:
                out.append(Reading(m.AMD_TEMPERATURE, temperature, ident))
            power = _call(api.amdsmi_get_power_info, handle) or {}
            # The key moved between amdsmi releases; the power limit's unit did too, so it is not read here.
            watts = next(
                (
                    w
                    for key in ("average_socket_power", "current_socket_power", "socket_power")
                    if (w := _value(power.get(key))) is not None
                ),
                None,
            )
            if watts is not None:
                out.append(Reading(m.AMD_POWER, watts, ident))
        return out


def _call(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except Exception:  # AmdSmiLibraryException(NOT_SUPPORTED) and friends: no reading
        return None


def _value(value: Any) -> float | None:
    if value is None or value in _AMDSMI_NA:
        return None
    return number(value)


def _driver_live(path: str) -> bool:
    try:
        with open(path) as handle:
            return handle.read().strip() == "live"
    except OSError:
        return False


def _import_amdsmi() -> Any | None:
    try:
        import amdsmi  # type: ignore[import-not-found]
    except Exception:  # a missing libamd_smi.so makes `import amdsmi` raise KeyError, not ImportError
        return None
    return amdsmi
