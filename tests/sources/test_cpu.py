from __future__ import annotations

from sysgauge import metrics as m
from sysgauge.sources.cpu import CpuSource
from tests.fakes import CpuTimes, FakePsutil
from tests.fakes import by_spec as by


def test_per_cpu_modes_follow_semconv_and_interrupt_sums_irq_and_softirq() -> None:
    ps = FakePsutil()
    ps.per_cpu = [CpuTimes(1, 2, 3, 4, 5, 6, 7, 8), CpuTimes(10, 0, 0, 90, 0, 0, 0, 0)]
    readings = CpuSource(ps, per_cpu=True).read()
    times = by(readings, m.SYSTEM_CPU_TIME)
    assert times[(("cpu.mode", "interrupt"), ("cpu.logical_number", 0))] == 13.0
    assert times[(("cpu.mode", "steal"), ("cpu.logical_number", 0))] == 8.0
    assert times[(("cpu.mode", "user"), ("cpu.logical_number", 1))] == 10.0
    assert {dict(a)["cpu.mode"] for a in times} == {
        "user",
        "nice",
        "system",
        "idle",
        "iowait",
        "interrupt",
        "steal",
    }
    assert by(readings, m.SYSTEM_CPU_UTILIZATION) == times  # cumulative; the sampler turns it into Δ/Δt
    assert by(readings, m.SYSTEM_CPU_LOGICAL_COUNT) == {(): 2.0}


def test_aggregate_mode_divides_by_cpu_count_so_the_rate_is_a_machine_fraction() -> None:
    ps = FakePsutil()
    ps.per_cpu = [CpuTimes(10, 0, 0, 90, 0, 0, 0, 0), CpuTimes(30, 0, 0, 70, 0, 0, 0, 0)]
    readings = CpuSource(ps, per_cpu=False).read()
    assert by(readings, m.SYSTEM_CPU_TIME)[(("cpu.mode", "user"),)] == 40.0
    assert by(readings, m.SYSTEM_CPU_UTILIZATION)[(("cpu.mode", "user"),)] == 20.0
