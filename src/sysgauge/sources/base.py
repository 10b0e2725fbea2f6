"""What every source shares: the reading it produces and the shape it has."""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

from sysgauge.metrics import MetricSpec

AttributeValue = str | int
Attributes = tuple[tuple[str, AttributeValue], ...]


class Reading(NamedTuple):
    """One value of one metric for one attribute set, taken at one tick."""

    spec: MetricSpec
    value: float
    attributes: Attributes = ()


class Source(Protocol):
    """A family of readings (cpu, memory, ...). Reads raw values, shapes them, never sees a Meter."""

    name: str

    def probe(self) -> str | None:
        """None when the source can be read here, else the reason it cannot (for `sysgauge detect`)."""

    def specs(self) -> tuple[MetricSpec, ...]:
        """The metrics this source may emit with its configuration (registration reads this)."""

    def read(self) -> list[Reading]:
        """One snapshot. Raises only when the whole source failed; partial failures drop single readings."""

    def close(self) -> None:
        """Release what the source holds (child tools, handles)."""


# --- numbers from tools and drivers (pure) --------------------------------------------------------
# A tool's output can be garbled (a truncated read, a driver bug, -1 for "not available"). A value that
# cannot be what it claims is dropped rather than reported: no negative usage share, no 1e12 % (found by
# tests/reliability/test_vendor_parser_fuzz.py).


def finite_number(value: object) -> float | None:
    """A JSON number (not a bool) as a finite float; None for anything else (NaN, Infinity, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator when both are >= 0 (the denominator > 0) and the result is finite."""
    if not (denominator > 0 and numerator >= 0):
        return None
    value = numerator / denominator
    return value if math.isfinite(value) else None


def share(part: float, whole: float) -> float | None:
    """The fraction of `whole` that `part` is (memory in use of memory in total); None above 1."""
    value = ratio(part, whole)
    return value if value is not None and value <= 1.0 else None


# Tools round: gc-info prints 100.4 % for a busy IPU, a duty cycle can read a hair over 100. A reading
# further over its scale than this is garbage, not a measurement.
PERCENT_OVERSHOOT = 5.0


def from_percent(percent: float) -> float | None:
    """A 0..100 percentage as a fraction; a rounding overshoot (to 105 %) is 1.0; None below 0 or beyond."""
    if not 0.0 <= percent <= 100.0 + PERCENT_OVERSHOOT:
        return None
    return min(percent, 100.0) / 100.0
