"""`sysgauge plot`: one figure of small charts of a recorded run, one per family.

Building the panels (which series, in which units) is pure and tested on its own; drawing needs matplotlib
(the `sysgauge[plot]` extra), imported only here.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sysgauge import metrics as m
from sysgauge.recording import Point, Recording

FAMILIES = ("cpu", "memory", "disk", "network", "gpu")
_MAX_CORE_LINES = 16
GiB = 2**30


@dataclass
class Series:
    label: str
    times: list[float] = field(default_factory=list)  # seconds since the run started
    values: list[float] = field(default_factory=list)


@dataclass
class Panel:
    title: str
    unit: str  # the y axis label: %, GiB, MB/s, W, °C
    series: list[Series]


def _grouped(points: list[Point], key: Callable[[Point], str | None]) -> dict[str, list[Point]]:
    groups: dict[str, list[Point]] = {}
    for point in points:
        label = key(point)
        if label is not None:
            groups.setdefault(label, []).append(point)
    return groups


def _summed(points: list[Point]) -> list[tuple[float, float]]:
    """Points of several series at each export time summed into one (e.g. over devices or modes)."""
    totals: dict[float, float] = {}
    for point in points:
        totals[point.time] = totals.get(point.time, 0.0) + point.value
    return sorted(totals.items())


def _rates(points: list[Point]) -> list[tuple[float, float]]:
    """A counter as a rate per second between consecutive exports (delta temporality: value / period)."""
    if points and points[0].delta:
        return [(p.time, p.value / (p.time - p.start)) for p in points if p.time > p.start]
    out = []
    for (t0, v0), (t1, v1) in zip(_summed(points), _summed(points)[1:], strict=False):
        if t1 > t0 and v1 >= v0:
            out.append((t1, (v1 - v0) / (t1 - t0)))
    return out


def _series(label: str, pairs: list[tuple[float, float]], start: float, scale: float = 1.0) -> Series:
    return Series(label, [t - start for t, _ in pairs], [v * scale for _, v in pairs])


def _attribute(key: str) -> Callable[[Point], str | None]:
    return lambda point: dict(point.attributes).get(key)


def _host_prefix(recording: Recording, point: Point) -> str:
    return f"{point.host}: " if len(recording.hosts) > 1 else ""


def build_panels(recording: Recording, families: Sequence[str] = FAMILIES) -> list[Panel]:
    start = recording.start
    panels: list[Panel] = []
    if "cpu" in families:
        series = []
        process = recording.named(m.PROCESS_CPU_UTILIZATION.name)
        for label, points in _grouped(process, lambda p: f"{_host_prefix(recording, p)}process tree").items():
            series.append(_series(label, _summed(points), start, 100.0))
        busy = [
            p
            for p in recording.named(m.SYSTEM_CPU_UTILIZATION.name)
            if dict(p.attributes).get(m.CPU_MODE) not in ("idle", "iowait")
        ]
        cores = _grouped(busy, lambda p: dict(p.attributes).get(m.CPU_LOGICAL_NUMBER))
        if len(cores) > _MAX_CORE_LINES:  # 64 lines are a smear: show the mean and the busiest core
            per_core = {core: dict(_summed(points)) for core, points in cores.items()}
            times = sorted({t for values in per_core.values() for t in values})
            mean = [(t, sum(v.get(t, 0.0) for v in per_core.values()) / len(per_core)) for t in times]
            peak = [(t, max(v.get(t, 0.0) for v in per_core.values())) for t in times]
            series += [
                _series("all cores (mean)", mean, start, 100.0),
                _series("busiest core", peak, start, 100.0),
            ]
        else:
            for core, points in sorted(
                cores.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0
            ):
                label = "system" if core is None or core == "None" else f"cpu{core}"
                series.append(_series(label, _summed(points), start, 100.0))
        panels.append(Panel("CPU", "%", series))
    if "memory" in families:
        series = [
            _series(f"{label}process tree RSS", _summed(points), start, 1 / GiB)
            for label, points in _grouped(
                recording.named(m.PROCESS_MEMORY_USAGE.name), lambda p: _host_prefix(recording, p)
            ).items()
        ]
        used = [
            p
            for p in recording.named(m.SYSTEM_MEMORY_USAGE.name)
            if dict(p.attributes).get(m.SYSTEM_MEMORY_STATE) == "used"
        ]
        for label, points in _grouped(used, lambda p: _host_prefix(recording, p)).items():
            series.append(_series(f"{label}system used", _summed(points), start, 1 / GiB))
        panels.append(Panel("Memory", "GiB", series))
    for family, metric, key, title in (
        ("disk", m.SYSTEM_DISK_IO, m.DISK_IO_DIRECTION, "Disk I/O"),
        ("network", m.SYSTEM_NETWORK_IO, m.NETWORK_IO_DIRECTION, "Network"),
    ):
        if family in families:
            directions = _grouped(recording.named(metric.name), _attribute(key))
            series = []
            for direction, points in sorted(directions.items()):
                # Sum over devices per export first, then take the rate of the total.
                by_host = _grouped(points, lambda p: _host_prefix(recording, p))
                for host, host_points in by_host.items():
                    series.append(_series(f"{host}{direction}", _rates(host_points), start, 1e-6))
            panels.append(Panel(title, "MB/s", series))
    if "gpu" in families:
        gpu_panels: tuple[tuple[str, str, str, float, dict[str, str]], ...] = (
            ("GPU utilization", "%", m.HW_GPU_UTILIZATION.name, 100.0, {m.HW_GPU_TASK: "general"}),
            ("GPU memory", "GiB", m.HW_GPU_MEMORY_USAGE.name, 1 / GiB, {}),
            ("GPU power", "W", m.HW_POWER.name, 1.0, {}),
            ("GPU temperature", "°C", m.HW_TEMPERATURE.name, 1.0, {}),
        )
        for title, unit, name, scale, match in gpu_panels:
            points = [
                p
                for p in recording.named(name)
                if all(dict(p.attributes).get(k) == v for k, v in match.items())
            ]
            if not points:
                continue
            devices = _grouped(
                points,
                lambda p: (
                    _host_prefix(recording, p)
                    + str(dict(p.attributes).get(m.HW_NAME, dict(p.attributes).get(m.HW_ID)))
                ),
            )
            panels.append(
                Panel(
                    title,
                    unit,
                    [_series(label, _summed(ps), start, scale) for label, ps in sorted(devices.items())],
                )
            )
    return [panel for panel in panels if any(s.values for s in panel.series)]


def title_of(recording: Recording) -> str:
    hosts = ", ".join(sorted(h for h in recording.hosts if h)) or "unknown host"
    started = datetime.datetime.fromtimestamp(recording.start).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{hosts} · started {started} · {_duration(recording.end - recording.start)}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class MatplotlibMissing(Exception):
    pass


def draw(panels: Sequence[Panel], title: str) -> Any:
    """A matplotlib Figure with one small chart per panel (Agg backend: no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise MatplotlibMissing("sysgauge plot needs matplotlib: pip install 'sysgauge[plot]'") from None
    columns = 2 if len(panels) > 1 else 1
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(6.4 * columns, 2.8 * rows + 0.6), layout="constrained")
    figure.suptitle(title)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for series in panel.series:
            # Markers while there are few exports, so a single point still shows.
            marker = "o" if len(series.values) < 30 else None
            axes.plot(
                series.times, series.values, label=series.label, linewidth=1.4, marker=marker, markersize=3
            )
        axes.set_title(panel.title)
        axes.set_ylabel(panel.unit)
        axes.set_xlabel("seconds since start")
        axes.grid(True, alpha=0.3)
        if panel.unit == "%":
            axes.set_ylim(bottom=0)
        if panel.series:
            axes.legend(fontsize="small", loc="upper left")
    return figure


def save(figure: Any, path: Path, title: str = "sysgauge") -> None:
    suffix = path.suffix.lower()
    if suffix in (".png", ".svg", ".pdf"):
        figure.savefig(path, dpi=110)
        return
    if suffix in (".html", ".htm"):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
        svg = buffer.getvalue()
        svg = svg[svg.find("<svg") :]  # inline: no XML prologue inside HTML
        path.write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{_escape(title)}</title></head><body>{svg}</body></html>\n",
            encoding="utf-8",
        )
        return
    raise ValueError(f"-o {str(path)!r}: expected a .png, .svg, .pdf or .html file name")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
