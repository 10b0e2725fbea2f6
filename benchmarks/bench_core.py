"""Side-by-side costs of sysgauge's core, on this machine, in one run.

    .venv/bin/python benchmarks/bench_core.py            # about a minute on 2 cores
    .venv/bin/python benchmarks/bench_core.py --quick    # fewer rounds, for a smoke run

1. CPU time of one sampler tick (default host sources + process tree) vs reading the same values bare with
   psutil (the floor), with the tree found by psutil's children(recursive=True) and by our procfs walk.
2. One SDK collect of all sysgauge instruments vs one collect of the contrib
   opentelemetry-instrumentation-system-metrics package with its defaults (each on its own provider).
3. Slowdown of a CPU-bound pure-Python loop with sysgauge sampling every 2 s vs no instrumentation.
4. Resident memory added by instrument_system beyond importing the SDK, and after 10,000 ticks.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from sysgauge.sources.process import procfs_children


def median_us(fn: Callable[[], object], rounds: int, clock: Callable[[], float] = time.thread_time) -> float:
    samples = []
    for _ in range(rounds):
        start = clock()
        fn()
        samples.append(clock() - start)
    return statistics.median(samples) * 1e6


def bare_psutil(tree: Callable[[], list[int]]) -> Callable[[], object]:
    me = psutil.Process()

    def read() -> object:
        psutil.cpu_times(percpu=True)
        psutil.virtual_memory()
        psutil.swap_memory()
        psutil.disk_io_counters(perdisk=True, nowrap=True)
        psutil.disk_usage("/")
        psutil.net_io_counters(pernic=True, nowrap=True)
        for pid in [me.pid, *tree()]:
            p = psutil.Process(pid)
            with p.oneshot():
                p.cpu_times()
                p.memory_info()
                p.num_threads()
                p.num_fds()
                p.io_counters()
                p.num_ctx_switches()
        return None

    return read


def procfs_tree() -> list[int]:
    children_of = procfs_children()
    pids, i = [os.getpid()], 0
    while i < len(pids):
        pids.extend(children_of(pids[i]))
        i += 1
    return pids[1:]


def bench_tick(rounds: int) -> dict[str, float]:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    monitor = instrument_system(provider, sampling_interval=3600, window=3600)
    try:
        results = {
            "sysgauge tick": median_us(monitor.sampler.tick, rounds),
            "bare psutil, tree by children(recursive=True)": median_us(
                bare_psutil(lambda: [c.pid for c in psutil.Process().children(recursive=True)]), rounds
            ),
            "bare psutil, tree by procfs walk": median_us(bare_psutil(procfs_tree), rounds),
        }
    finally:
        monitor.shutdown()
        provider.shutdown()
    return results


def bench_collect(rounds: int) -> dict[str, float]:
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor as Contrib

    ours_reader, theirs_reader = InMemoryMetricReader(), InMemoryMetricReader()
    ours = MeterProvider(metric_readers=[ours_reader], shutdown_on_exit=False)
    theirs = MeterProvider(metric_readers=[theirs_reader], shutdown_on_exit=False)
    monitor = instrument_system(ours, sampling_interval=0.1, window=30)
    contrib = Contrib()
    contrib.instrument(meter_provider=theirs)
    time.sleep(3)  # a window with ~30 samples, as in production (15 at 2 s / 30 s)
    ours_reader.get_metrics_data()
    theirs_reader.get_metrics_data()
    ours_times: list[float] = []
    theirs_times: list[float] = []
    points = {}
    for _ in range(rounds):  # interleaved, so both see the same machine state
        for reader, times, name in (
            (ours_reader, ours_times, "sysgauge"),
            (theirs_reader, theirs_times, "contrib"),
        ):
            start = time.perf_counter()
            data = reader.get_metrics_data()
            times.append(time.perf_counter() - start)
            points[name] = (
                sum(
                    len(m.data.data_points)
                    for rm in data.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                )
                if data
                else 0
            )
        time.sleep(0.02)
    contrib.uninstrument()
    monitor.shutdown()
    ours.shutdown()
    theirs.shutdown()
    return {
        "sysgauge collect": statistics.median(ours_times) * 1e6,
        "contrib collect": statistics.median(theirs_times) * 1e6,
        "sysgauge points": float(points["sysgauge"]),
        "contrib points": float(points["contrib"]),
    }


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def bench_slowdown(rounds: int, iterations: int) -> dict[str, float]:
    """In one process, alternating, so imports and memory layout are the same for both arms.

    At a 2 s interval a tick is rarer than the run-to-run noise of a pure-Python loop (several %), so the
    same comparison is also made at a 0.02 s interval (100x the ticks) and scaled down: the honest
    estimate of the 2 s cost.
    """
    results: dict[str, float] = {}
    for interval in (2.0, 0.02):
        off: list[float] = []
        on: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            _work(iterations)
            off.append(time.perf_counter() - start)
            provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
            monitor = instrument_system(provider, sampling_interval=interval, window=max(30.0, interval))
            start = time.perf_counter()
            _work(iterations)
            on.append(time.perf_counter() - start)
            monitor.shutdown()
            provider.shutdown()
        slowdown = (statistics.median(on) / statistics.median(off) - 1) * 100
        results[f"loop s, no sysgauge (median), {interval:g} s run"] = statistics.median(off)
        results[f"loop s, sampling every {interval:g} s (median)"] = statistics.median(on)
        results[f"slowdown % at {interval:g} s"] = slowdown
    results["slowdown % at 2 s, scaled from 0.02 s"] = results["slowdown % at 0.02 s"] / 100
    return results


_MEMORY = """
import json, os, psutil
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
provider = MeterProvider(metric_readers=[reader])
reader.get_metrics_data()
me = psutil.Process()
base = me.memory_info().rss
from sysgauge import instrument_system
monitor = instrument_system(provider, sampling_interval=3600, window=3600 * 24)
for _ in range(30):
    monitor.sampler.tick()
reader.get_metrics_data()
after_start = me.memory_info().rss
rss = []
for i in range(20_000):
    monitor.sampler.tick()
    if i % 15 == 0:
        reader.get_metrics_data()
    if i % 2_500 == 2_499:
        rss.append(me.memory_info().rss)
print(json.dumps({
    "added_mib": (after_start - base) / 2**20,
    "rss_every_2500_ticks_mib": [round(r / 2**20, 2) for r in rss],
    "growth_over_20k_ticks_mib": (rss[-1] - after_start) / 2**20,
    "samples_kept": len(monitor.sampler.samples()),
}))
"""


def bench_memory() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _MEMORY], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 50 if args.quick else 500
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, psutil {psutil.__version__}")
    tick = bench_tick(rounds)
    print("\n1. one sampler tick, CPU time (median of", rounds, "), µs")
    for name, us in tick.items():
        print(f"   {name:<48} {us:8.0f}")
    floor = tick["bare psutil, tree by children(recursive=True)"]
    print(f"   ratio sysgauge / bare psutil (children): {tick['sysgauge tick'] / floor:.2f}")

    collect = bench_collect(20 if args.quick else 60)
    print("\n2. one SDK collect (median), µs")
    print(f"   sysgauge {collect['sysgauge collect']:8.0f} µs for {collect['sysgauge points']:.0f} points")
    print(f"   contrib  {collect['contrib collect']:8.0f} µs for {collect['contrib points']:.0f} points")
    print(f"   ratio sysgauge / contrib: {collect['sysgauge collect'] / collect['contrib collect']:.2f}")

    slowdown = bench_slowdown(3 if args.quick else 7, 20_000_000 if args.quick else 60_000_000)
    print("\n3. CPU-bound loop")
    for name, number in slowdown.items():
        print(f"   {name:<48} {number:8.3f}")

    memory = bench_memory()
    print("\n4. resident memory")
    print(f"   added by instrument_system beyond the SDK: {memory['added_mib']:.2f} MiB")
    print(f"   RSS after each 2,500 ticks (MiB):          {memory['rss_every_2500_ticks_mib']}")
    print(
        f"   growth over 20,000 more ticks:             {memory['growth_over_20k_ticks_mib']:.2f} MiB "
        f"(samples kept: {memory['samples_kept']:.0f})"
    )


if __name__ == "__main__":
    main()
