"""A short soak (tests/reliability/soak.py runs the long one): ticks with every source in scope, periodic
collections; memory, open files and threads flat, the window bounded."""

from __future__ import annotations

import time
from dataclasses import asdict

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from tests.nvml_fake.scenario import FakeNvml
from tests.reliability.helpers import record
from tests.reliability.soak import soak

TICKS = 2_000
RSS_SLACK_MIB = 2.0


def test_a_short_soak_is_flat(fake_nvml_library: FakeNvml) -> None:
    result = soak(fake_nvml_library, ticks=TICKS, collect_every=10)
    record("soak-short", **asdict(result), rss_growth_mib=result.rss_growth_mib)
    assert result.warnings == []
    assert result.fds_end == result.fds_start
    # Other tests' leftover threads may end meanwhile: no thread may start and stay.
    assert result.threads_end <= result.threads_start
    assert (
        result.sysgauge_threads_end
        == result.sysgauge_threads_start
        == ["sysgauge-openmetrics-dcgm", "sysgauge-sampler", "sysgauge-watchdog"]
    )
    assert result.window_max <= result.window_bound
    assert result.objects_end - result.objects_start < 1000, "Python objects accumulate"
    assert result.rss_growth_mib < RSS_SLACK_MIB, result.rss_checkpoints_mib
    # After the first tenth, flat: at most 1 MiB between the first and the last checkpoint.
    assert result.rss_checkpoints_mib[-1] - result.rss_checkpoints_mib[0] < 1.0, result.rss_checkpoints_mib
    assert result.scrapes > 0 and result.metrics_in_last_collect > 50


def test_the_window_stays_bounded_by_time_on_the_sampler_thread() -> None:
    """In the soak above the window is bounded by its length cap (one-hour window); here the sampler's
    own thread ticks every 10 ms and the window is pruned by age."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    handle = instrument_system(
        provider, sources=["cpu", "memory", "process"], sampling_interval=0.01, window=0.05
    )
    longest, widest = 0, 0.0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            samples = handle.sampler.samples()
            longest = max(longest, len(samples))
            widest = max(widest, samples[-1].time - samples[0].time)
            reader.get_metrics_data()
            time.sleep(0.005)
    finally:
        handle.shutdown()
        provider.shutdown()
    record(
        "window-by-time", sampling_interval_s=0.01, window_s=0.05, longest=longest, widest_s=round(widest, 3)
    )
    # Pruned by age: the samples of the last 0.05 s, the base sample before them (for rates), and slack for
    # a late tick on a busy machine; the length cap (window / interval + 3) is a safety net behind it.
    assert widest < 0.05 + 2 * 0.01 + 0.03, widest
    assert 1 <= longest <= int(0.05 / 0.01) + 3, longest
