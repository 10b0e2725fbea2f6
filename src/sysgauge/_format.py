"""Numbers for people: fractions as %, bytes in KiB/MiB/GiB, rates per second."""

from __future__ import annotations

_BINARY = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def human(value: float, unit: str) -> str:
    if unit == "1":
        return f"{value * 100:.1f} %"
    if unit in ("By", "By/s"):
        suffix = "/s" if unit == "By/s" else ""
        for name, size in _BINARY:
            if abs(value) >= size:
                return f"{value / size:.2f} {name}{suffix}"
        return f"{value:.0f} B{suffix}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "Hz":
        return f"{value / 1e6:.0f} MHz"
    if unit == "Cel":
        return f"{value:.0f} °C"
    if unit == "W":
        return f"{value:.1f} W"
    if unit == "J":
        return f"{value / 1e3:.1f} kJ" if abs(value) < 1e6 else f"{value / 1e6:.2f} MJ"
    if unit.startswith("{"):
        return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
    return f"{value:.4g} {unit}"


def short_attributes(attributes: dict[str, object]) -> str:
    """`cpu.mode=user cpu.logical_number=0` -> `mode=user logical_number=0` (the last name segment)."""
    return " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in attributes.items())
