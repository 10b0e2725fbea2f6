"""Soak: many sampler ticks with every source in scope (host sources, two GPUs of the fake NVML driver, one
local OpenMetrics endpoint scraped every 50 ms), a collection every 10 ticks; resident memory, open files,
threads and the window's length are measured along the way.

    .venv/bin/python tests/reliability/soak.py [--ticks 10000] [--collect-every 10] [--json]

The ticks are called directly (`monitor.sampler.tick()`), so the run is as fast as a tick; the handle's
own sampler thread is given a one-hour interval so that it never reads the sources at the same time.
tests/reliability/test_soak.py runs a short version of the same function.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __name__ == "__main__":  # run as a script: make `tests.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from tests.conftest import metric_names
from tests.httpfake import Reply, serve
from tests.nvml_fake.scenario import FakeNvml, build
from tests.reliability.helpers import (
    L4_TEXT,
    MiB,
    nvml_scenario,
    nvml_users,
    sysgauge_threads,
    two_gpus,
    usage,
)

SOURCES = ["cpu", "memory", "disk", "network", "process", "nvidia", "openmetrics"]
WARM_UP_TICKS = 1000
WARM_UP_S = 3.0


@dataclass
class SoakResult:
    ticks: int
    collects: int
    seconds: float
    tick_median_us: float
    rss_start_mib: float
    rss_end_mib: float
    fds_start: int
    fds_end: int
    threads_start: int
    threads_end: int
    sysgauge_threads_start: list[str]
    sysgauge_threads_end: list[str]
    objects_start: int  # Python objects the garbage collector tracks
    objects_end: int
    window_max: int
    window_bound: int
    scrapes: int
    metrics_in_last_collect: int
    warnings: list[str] = field(default_factory=list)
    rss_checkpoints_mib: list[float] = field(default_factory=list)

    @property
    def rss_growth_mib(self) -> float:
        return round(self.rss_end_mib - self.rss_start_mib, 2)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 50:
            self.messages.append(record.getMessage())


def steady() -> tuple[int, int]:
    """Open descriptors and OS threads outside a scrape (a scrape in flight holds two sockets and a
    handler thread of the local test server): the least of ten looks over 0.1 s."""
    looks = []
    for _ in range(10):
        now = usage()
        looks.append((now.fds, now.threads))
        time.sleep(0.01)
    return min(fds for fds, _ in looks), min(threads for _, threads in looks)


def soak(fake: FakeNvml, ticks: int = 10_000, collect_every: int = 10, checkpoints: int = 10) -> SoakResult:
    """Run `ticks` ticks (after a warm-up of WARM_UP_TICKS) and measure; every source is closed after."""
    warnings = _Warnings()
    logging.getLogger("sysgauge").addHandler(warnings)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    try:
        with nvml_scenario(fake, two_gpus(), "soak"), serve(Reply(body=L4_TEXT)) as server:
            handle = instrument_system(
                provider,
                sources=SOURCES,
                sampling_interval=3600,
                window=3600,
                openmetrics_endpoints={"dcgm": server.url},
                openmetrics_interval=0.05,
            )
            try:
                sampler = handle.sampler
                bound = int(handle.options.window / handle.options.sampling_interval) + 3
                # Warm up by count and by time: the scraper thread and the test server's handler threads
                # settle into glibc's malloc arenas during the first seconds.
                warm_until = time.monotonic() + WARM_UP_S
                warmed = 0
                while warmed < WARM_UP_TICKS or time.monotonic() < warm_until:
                    sampler.tick()
                    warmed += 1
                    if warmed % collect_every == 0:
                        reader.get_metrics_data()
                gc.collect()
                start, (start_fds, start_threads), start_objects = usage(), steady(), len(gc.get_objects())
                start_sysgauge = sysgauge_threads()
                window_max = collects = scrapes = 0
                durations = array.array("d")  # 8 bytes a tick: the harness's own memory stays small
                rss: list[float] = []
                names: set[str] = set()
                began = time.monotonic()
                for index in range(1, ticks + 1):
                    tick_began = time.perf_counter()
                    sampler.tick()
                    durations.append(time.perf_counter() - tick_began)
                    window_max = max(window_max, len(sampler.samples()))
                    if index % collect_every == 0:
                        names = metric_names(reader.get_metrics_data())
                        collects += 1
                    if index % max(1, ticks // checkpoints) == 0:
                        rss.append(round(usage().rss / MiB, 2))
                    scrapes += len(server.requests)
                    server.requests.clear()  # the test server's own log is not sysgauge's memory
                seconds = time.monotonic() - began
                gc.collect()
                end, (end_fds, end_threads), end_objects = usage(), steady(), len(gc.get_objects())
                end_sysgauge = sysgauge_threads()
            finally:
                handle.shutdown()
    finally:
        provider.shutdown()
        logging.getLogger("sysgauge").removeHandler(warnings)
    assert nvml_users() == 0
    ordered = sorted(durations)
    return SoakResult(
        ticks=ticks,
        collects=collects,
        seconds=round(seconds, 2),
        tick_median_us=round(ordered[len(ordered) // 2] * 1e6, 1),
        rss_start_mib=round(start.rss / MiB, 2),
        rss_end_mib=round(end.rss / MiB, 2),
        fds_start=start_fds,
        fds_end=end_fds,
        threads_start=start_threads,
        threads_end=end_threads,
        sysgauge_threads_start=start_sysgauge,
        sysgauge_threads_end=end_sysgauge,
        objects_start=start_objects,
        objects_end=end_objects,
        window_max=window_max,
        window_bound=bound,
        scrapes=scrapes,
        metrics_in_last_collect=len(names),
        warnings=warnings.messages,
        rss_checkpoints_mib=rss,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ticks", type=int, default=10_000)
    parser.add_argument("--collect-every", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    fake = FakeNvml(build("current"), Path(tempfile.mkdtemp(prefix="soak-nvml-")))
    result = soak(fake, ticks=args.ticks, collect_every=args.collect_every)
    if args.json:
        print(json.dumps({**asdict(result), "rss_growth_mib": result.rss_growth_mib}))
    else:
        print(
            f"{result.ticks} ticks and {result.collects} collects in {result.seconds} s "
            f"(median tick {result.tick_median_us} µs); {result.scrapes} scrapes\n"
            f"RSS {result.rss_start_mib} -> {result.rss_end_mib} MiB "
            f"(checkpoints {result.rss_checkpoints_mib})\n"
            f"open files {result.fds_start} -> {result.fds_end}; threads {result.threads_start} -> "
            f"{result.threads_end}; Python objects {result.objects_start} -> {result.objects_end}; "
            f"window at most {result.window_max} samples "
            f"(bound {result.window_bound})\n"
            f"sysgauge warnings: {result.warnings or 'none'}"
        )
    flat = (
        result.fds_end == result.fds_start
        and result.threads_end <= result.threads_start
        and result.sysgauge_threads_end == result.sysgauge_threads_start
        and result.window_max <= result.window_bound
        and not result.warnings
    )
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
