"""Network interface counters: bytes, packets, drops and errors per direction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sysgauge import metrics as m
from sysgauge.sources._filters import NameFilter
from sysgauge.sources.base import Attributes, Reading

# (metric, psutil field for transmit, psutil field for receive)
_FIELDS = (
    (m.SYSTEM_NETWORK_IO, "bytes_sent", "bytes_recv"),
    (m.SYSTEM_NETWORK_PACKET_COUNT, "packets_sent", "packets_recv"),
    (m.SYSTEM_NETWORK_PACKET_DROPPED, "dropout", "dropin"),
    (m.SYSTEM_NETWORK_ERRORS, "errout", "errin"),
)


class NetworkSource:
    name = "network"

    def __init__(self, ps: Any, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self._ps = ps
        self._keep = NameFilter(include, exclude)
        self._attrs: dict[str, tuple[Attributes, Attributes]] = {}

    def probe(self) -> str | None:
        try:
            counters = self._ps.net_io_counters(pernic=True, nowrap=False)
        except Exception as exc:
            return f"cannot read network counters: {exc}"
        if not counters:
            return "no network interfaces"
        return None

    def specs(self) -> tuple[m.MetricSpec, ...]:
        return m.specs_of("network")

    def read(self) -> list[Reading]:
        readings: list[Reading] = []
        # nowrap=False: on 64-bit kernels these counters do not wrap, and psutil's wrap cache is
        # process-global: one misread decrease adds the old value to every later reading. A clean-clone
        # CI run saw lo at twice the kernel's count with nowrap=True (cause not pinned down). A real
        # reset stays visible as one, which cumulative-sum backends handle.
        for interface, io in self._ps.net_io_counters(pernic=True, nowrap=False).items():
            if not self._keep(interface):
                continue
            transmit, receive = self._attributes_of(interface)
            for spec, sent_field, received_field in _FIELDS:
                readings.append(Reading(spec, float(getattr(io, sent_field)), transmit))
                readings.append(Reading(spec, float(getattr(io, received_field)), receive))
        return readings

    def close(self) -> None:
        pass

    def _attributes_of(self, interface: str) -> tuple[Attributes, Attributes]:
        attrs = self._attrs.get(interface)
        if attrs is None:
            base = ((m.NETWORK_INTERFACE, interface),)
            attrs = (
                (*base, (m.NETWORK_IO_DIRECTION, "transmit")),
                (*base, (m.NETWORK_IO_DIRECTION, "receive")),
            )
            if len(self._attrs) < 4096:
                self._attrs[interface] = attrs
        return attrs
