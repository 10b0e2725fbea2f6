"""What `sysgauge run` prints when the command ends: mean and peak of the main metrics over the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sysgauge import metrics as m
from sysgauge._format import human
from sysgauge.sampler import Sample, SeriesKey

Extract = Callable[[dict[SeriesKey, float]], float | None]


def _sum(metric: str, **match: str) -> Extract:
    def extract(values: dict[SeriesKey, float]) -> float | None:
        total, found = 0.0, False
        for (name, attrs), value in values.items():
            if name == metric and all(dict(attrs).get(k) == v for k, v in match.items()):
                total += value
                found = True
        return total if found else None

    return extract


def _busy_cpu(values: dict[SeriesKey, float]) -> float | None:
    # Cumulative non-idle CPU-seconds per CPU: its rate is the machine's busy fraction.
    busy, cpus = 0.0, set()
    for (name, attrs), value in values.items():
        if name == m.SYSTEM_CPU_UTILIZATION.name:
            a = dict(attrs)
            cpus.add(a.get(m.CPU_LOGICAL_NUMBER))
            if a.get(m.CPU_MODE) not in ("idle", "iowait"):
                busy += value
    return busy / len(cpus) if cpus else None


@dataclass
class _Line:
    label: str
    unit: str
    extract: Extract
    rate: bool  # the extracted value is cumulative; report its rate
    first: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    total: float = 0.0
    count: int = 0
    peak: float | None = None

    def add(self, t: float, value: float) -> None:
        if not self.rate:
            self.total += value
            self.count += 1
            self.peak = value if self.peak is None else max(self.peak, value)
            return
        if self.first is None:
            self.first = (t, value)
        elif self.previous is not None and t > self.previous[0]:
            rate = max(0.0, (value - self.previous[1]) / (t - self.previous[0]))
            self.peak = rate if self.peak is None else max(self.peak, rate)
        self.previous = (t, value)

    def mean(self) -> float | None:
        if not self.rate:
            return self.total / self.count if self.count else None
        if self.first is None or self.previous is None or self.previous[0] <= self.first[0]:
            return None
        return max(0.0, (self.previous[1] - self.first[1]) / (self.previous[0] - self.first[0]))


def _default_lines() -> list[_Line]:
    return [
        _Line("process tree CPU (of the CPUs it may use)", "1", _sum(m.PROCESS_CPU_UTILIZATION.name), True),
        _Line("process tree memory (RSS)", "By", _sum(m.PROCESS_MEMORY_USAGE.name), False),
        _Line("process tree threads", "{thread}", _sum(m.PROCESS_THREAD_COUNT.name), False),
        _Line("system CPU busy", "1", _busy_cpu, True),
        _Line(
            "system memory used",
            "1",
            _sum(m.SYSTEM_MEMORY_UTILIZATION.name, **{m.SYSTEM_MEMORY_STATE: "used"}),
            False,
        ),
        _Line("disk read", "By/s", _sum(m.SYSTEM_DISK_IO.name, **{m.DISK_IO_DIRECTION: "read"}), True),
        _Line("disk write", "By/s", _sum(m.SYSTEM_DISK_IO.name, **{m.DISK_IO_DIRECTION: "write"}), True),
        _Line(
            "network receive",
            "By/s",
            _sum(m.SYSTEM_NETWORK_IO.name, **{m.NETWORK_IO_DIRECTION: "receive"}),
            True,
        ),
        _Line(
            "network transmit",
            "By/s",
            _sum(m.SYSTEM_NETWORK_IO.name, **{m.NETWORK_IO_DIRECTION: "transmit"}),
            True,
        ),
    ]


@dataclass
class RunSummary:
    """A sampler tick listener that keeps running means and peaks (O(1) memory per line)."""

    lines: list[_Line] = field(default_factory=_default_lines)
    start: float | None = None
    end: float | None = None
    samples: int = 0

    gpus: set[str] = field(default_factory=set)

    def __call__(self, sample: Sample) -> None:
        self._add_gpus(sample)
        self.start = sample.time if self.start is None else self.start
        self.end = sample.time
        self.samples += 1
        for line in self.lines:
            value = line.extract(sample.values)
            if value is not None:
                line.add(sample.time, value)

    def _add_gpus(self, sample: Sample) -> None:
        # GPUs join the summary as the NVIDIA source reports them: utilization, memory, power,
        # temperature, and the memory the process tree uses there.
        for (name, attrs), _ in sample.values.items():
            if name != m.HW_GPU_MEMORY_USAGE.name:
                continue
            found = dict(attrs)
            gpu_id = str(found.get(m.HW_ID))
            if gpu_id in self.gpus:
                continue
            self.gpus.add(gpu_id)
            label = str(found.get(m.HW_NAME, gpu_id))
            ident = {m.HW_ID: gpu_id}
            self.lines += [
                _Line(
                    f"{label} utilization",
                    "1",
                    _sum(m.HW_GPU_UTILIZATION.name, **ident, **{m.HW_GPU_TASK: "general"}),
                    False,
                ),
                _Line(f"{label} memory", "By", _sum(m.HW_GPU_MEMORY_USAGE.name, **ident), False),
                _Line(
                    f"{label} memory used by the tree",
                    "By",
                    _sum(m.PROCESS_GPU_MEMORY_USAGE.name, **ident),
                    False,
                ),
                _Line(f"{label} power", "W", _sum(m.HW_POWER.name, **ident), False),
                _Line(f"{label} temperature", "Cel", _sum(m.HW_TEMPERATURE.name, **ident), False),
            ]

    def rows(self) -> list[tuple[str, str, str]]:
        out = []
        for line in self.lines:
            mean = line.mean()
            if mean is None:
                continue
            peak = "" if line.peak is None else human(line.peak, line.unit)
            out.append((line.label, human(mean, line.unit), peak))
        return out

    def render(self) -> str:
        duration = (self.end - self.start) if self.start is not None and self.end is not None else 0.0
        header = f"sysgauge: {duration:.1f} s, {self.samples} samples"
        rows = self.rows()
        if not rows:
            return header + " (too short for a summary: no two samples)\n"
        width = max(len(r[0]) for r in rows)
        lines = [header, f"  {'':<{width}}  {'mean':>12}  {'peak':>12}"]
        lines += [f"  {label:<{width}}  {mean:>12}  {peak:>12}" for label, mean, peak in rows]
        return "\n".join(lines) + "\n"
