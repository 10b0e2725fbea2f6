"""What every source shares: the reading it produces and the shape it has."""

from __future__ import annotations

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
