"""Cost of one NVIDIA tick under the fake libnvidia-ml.so.1 with 8 GPUs (the Python side: nvidia-ml-py's
ctypes calls and sysgauge's shaping; the fake answers in nanoseconds, a real driver does not).

    .venv/bin/python benchmarks/bench_gpu.py

Side by side: sysgauge's NvidiaSource.read() against bare nvidia-ml-py calls of the same values (the floor).
Needs gcc (builds the fake). Timings are printed, never asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.nvml_fake.scenario import FakeNvml, build, load

ROUNDS = 300
GPUS = 8


def main() -> None:
    fake = FakeNvml(build("current"), Path(tempfile.mkdtemp()))
    os.environ["FAKE_NVML_SCENARIO"] = str(fake.write(load("h100x8", root=os.getpid(), child=1, other=1)))

    import pynvml

    from sysgauge.sources._nvml import Nvml
    from sysgauge.sources.nvidia import NvidiaSource

    nvml = Nvml()
    source = NvidiaSource(nvml=nvml, tree=False, pid=os.getpid())
    assert source.probe() is None
    source.read()  # first read learns what each device supports
    calls_before = nvml.calls
    samples = []
    for _ in range(ROUNDS):
        start = time.thread_time()
        source.read()
        samples.append(time.thread_time() - start)
    calls_per_gpu_tick = (nvml.calls - calls_before) / ROUNDS / GPUS
    ours = statistics.median(samples) * 1e6

    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(GPUS)]

    fields = [197, 198] + [(f, link) for link in range(18) for f in (138, 139)]

    def bare() -> list[float]:
        # The same calls, each value read once into a list: what a hand-written loop would do.
        out: list[float] = []
        for h in handles:
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            out += [util.gpu, util.memory]
            out.append(pynvml.nvmlDeviceGetEncoderUtilization(h)[0])
            out.append(pynvml.nvmlDeviceGetDecoderUtilization(h)[0])
            memory = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
            out += [memory.used, memory.total]
            out.append(pynvml.nvmlDeviceGetTemperatureV(h, 0))
            out.append(pynvml.nvmlDeviceGetPowerUsage(h))
            out.append(pynvml.nvmlDeviceGetEnforcedPowerLimit(h))
            out.append(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
            out.append(pynvml.nvmlDeviceGetClockInfo(h, 1))
            out.append(pynvml.nvmlDeviceGetClockInfo(h, 2))
            out.append(pynvml.nvmlDeviceGetTotalEccErrors(h, 0, 1))
            out.append(pynvml.nvmlDeviceGetTotalEccErrors(h, 1, 1))
            out.append(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h))
            out += [v.value.ullVal for v in pynvml.nvmlDeviceGetFieldValues(h, fields) if v.nvmlReturn == 0]
            out += [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
            out += [p.usedGpuMemory for p in pynvml.nvmlDeviceGetGraphicsRunningProcesses(h)]
            out += [s.smUtil for s in pynvml.nvmlDeviceGetProcessUtilization(h, 0)] if h is handles[0] else []
        return out

    floor = []
    for _ in range(ROUNDS):
        start = time.thread_time()
        bare()
        floor.append(time.thread_time() - start)
    floor_us = statistics.median(floor) * 1e6
    source.close()

    print(f"8 fake GPUs, median of {ROUNDS} ticks (CPU time)")
    print(f"  sysgauge NvidiaSource.read():      {ours:7.0f} µs per tick, {ours / GPUS:5.0f} µs per GPU")
    print(
        f"  bare nvidia-ml-py, same values:    {floor_us:7.0f} µs per tick, {floor_us / GPUS:5.0f} µs per GPU"
    )
    print(f"  ratio sysgauge / bare:             {ours / floor_us:.2f}")
    print(f"  NVML calls per GPU per tick:       {calls_per_gpu_tick:.1f} (sysgauge, with process lists)")


if __name__ == "__main__":
    main()
