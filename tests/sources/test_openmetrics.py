from __future__ import annotations

import gzip
import http.server
import itertools
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sysgauge import instrument_system
from sysgauge.metrics import InstrumentKind
from sysgauge.options import resolve_options
from sysgauge.sources._http import FetchError, fetch
from sysgauge.sources.base import Reading
from sysgauge.sources.openmetrics import (
    ENDPOINT_ATTRIBUTE,
    MAX_LINE_CHARS,
    MetricFilter,
    OpenMetricsSource,
    SeriesCap,
    SpecRegistry,
    parse_families,
    samples_of,
    to_readings,
)
from tests.conftest import metric_names, points
from tests.httpfake import Reply, serve

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "openmetrics"
L4 = (SAMPLES / "openmetrics_dcgm-exporter_nvidia-l4_1gpu_driver580.txt").read_text()
VGPU = (SAMPLES / "openmetrics_dcgm-exporter_vgpu-grid-a100-40c_1gpu_no-power.txt").read_text()
T4_TEMPLATE = (SAMPLES / "openmetrics_dcgm-exporter_tesla-t4_2gpu-k8s_wandb-template.txt").read_text()
T4_VALUES = ("11.5", "12.5", "40", "41", "70.25", "71.75")


def t4() -> str:
    text = T4_TEMPLATE
    for value in T4_VALUES:
        text = text.replace("%f", value, 1)
    return text


def readings(text: str, filters: object = (), endpoint: str = "dcgm", cap: int = 2000) -> list[Reading]:
    samples = samples_of(parse_families(text, "text/plain; version=0.0.4"))
    return to_readings(endpoint, samples, MetricFilter(filters), SpecRegistry(), SeriesCap(cap))  # type: ignore[arg-type]


def named(rs: list[Reading], name: str) -> list[Reading]:
    return [r for r in rs if r.spec.name == name]


def test_dcgm_l4_gauges_and_counters_keep_names_labels_and_values() -> None:
    rs = readings(L4)
    util = named(rs, "DCGM_FI_DEV_GPU_UTIL")
    assert len(util) == 1 and util[0].value == 0.0 and util[0].spec.kind is InstrumentKind.GAUGE
    attrs = dict(util[0].attributes)
    assert attrs[ENDPOINT_ATTRIBUTE] == "dcgm"
    assert attrs["UUID"] == "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
    assert attrs["modelName"] == "NVIDIA L4" and attrs["gpu"] == "0"
    energy = named(rs, "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    assert energy[0].value == 4742776.0 and energy[0].spec.kind is InstrumentKind.COUNTER
    assert named(rs, "DCGM_FI_DEV_POWER_USAGE")[0].value == 16.365
    assert "GPU temperature (in C)." in named(rs, "DCGM_FI_DEV_GPU_TEMP")[0].spec.description


def test_vgpu_sample_without_power_simply_has_no_power() -> None:
    rs = readings(VGPU)
    assert rs and not named(rs, "DCGM_FI_DEV_POWER_USAGE") and not named(rs, "DCGM_FI_DEV_GPU_TEMP")


def test_list_filters_fully_match_endpoint_dot_metric() -> None:
    rs = readings(L4, ["dcgm\\.DCGM_FI_DEV_GPU_UTIL", ".*POWER_USAGE"])
    assert sorted({r.spec.name for r in rs}) == ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE"]
    # Full match: neither the bare metric name nor a prefix matches on its own.
    assert readings(L4, ["DCGM_FI_DEV_GPU_UTIL"]) == []
    assert readings(L4, ["dcgm\\.DCGM_FI_DEV_GPU"]) == []
    assert readings(L4, ["other\\..*"]) == []


def test_mapping_filters_need_every_listed_label_to_match() -> None:
    filters = {".*GPU_TEMP": {"pod": "dcgm-.*"}, ".*POWER_USAGE": {"gpu": "0"}}
    rs = readings(t4(), filters)
    temps = named(rs, "DCGM_FI_DEV_GPU_TEMP")
    assert [(dict(r.attributes)["gpu"], r.value) for r in temps] == [("1", 41.0)]
    assert [(dict(r.attributes)["gpu"], r.value) for r in named(rs, "DCGM_FI_DEV_POWER_USAGE")] == [
        ("0", 70.25)
    ]
    assert not named(rs, "DCGM_FI_DEV_MEM_COPY_UTIL")
    # A label the series does not carry fails the entry (the L4 scrape has no `pod` label).
    assert readings(L4, {".*GPU_TEMP": {"pod": ".*"}}) == []
    # An empty label regex matches only an empty value: GPU 0's pod="".
    empty = readings(t4(), {".*GPU_TEMP": {"pod": ""}})
    assert [dict(r.attributes)["gpu"] for r in empty] == ["0"]


def test_histograms_summaries_and_untyped_samples() -> None:
    text = (
        "# TYPE req_seconds histogram\n"
        'req_seconds_bucket{le="0.1"} 3\nreq_seconds_bucket{le="+Inf"} 5\n'
        "req_seconds_sum 1.5\nreq_seconds_count 5\n"
        "# TYPE lat summary\n"
        'lat{quantile="0.5"} 0.2\nlat_sum 4\nlat_count 10\n'
        "loose 7\n"
        "# TYPE bad gauge\nbad NaN\n"
    )
    rs = readings(text)
    kinds = {r.spec.name: r.spec.kind for r in rs}
    assert kinds == {
        "req_seconds_bucket": InstrumentKind.COUNTER,
        "req_seconds_sum": InstrumentKind.COUNTER,
        "req_seconds_count": InstrumentKind.COUNTER,
        "lat": InstrumentKind.GAUGE,
        "lat_sum": InstrumentKind.COUNTER,
        "lat_count": InstrumentKind.COUNTER,
        "loose": InstrumentKind.GAUGE,
    }
    assert {dict(r.attributes)["le"] for r in named(rs, "req_seconds_bucket")} == {"0.1", "+Inf"}


def test_openmetrics_format_counter_loses_total_suffix() -> None:
    text = "# TYPE jobs counter\n# HELP jobs Jobs done.\njobs_total 42\njobs_created 1700000000\n# EOF\n"
    samples = samples_of(parse_families(text, "application/openmetrics-text; version=1.0.0"))
    assert [(s.name, s.counter, s.value) for s in samples] == [("jobs", True, 42.0)]


def test_series_cap_drops_new_series_and_forgets_churned_ones() -> None:
    cap = SeriesCap(limit=3, forget_after=2)
    assert cap.admit([("m", (("i", str(i)),)) for i in range(5)]) == [True, True, True, False, False]
    assert cap.dropped == 2
    # Three scrapes later the old series are gone; churned label values get in.
    for _ in range(3):
        cap.admit([])
    assert cap.admit([("m", (("i", "new"),))]) == [True]


def source_for(url: str, **options: object) -> OpenMetricsSource:
    return OpenMetricsSource({"ep": url}, interval=0.1, **options)  # type: ignore[arg-type]


def wait_for(source: OpenMetricsSource, predicate: object, timeout: float = 5.0) -> list[Reading]:
    deadline = time.monotonic() + timeout
    while True:
        got = source.read()
        if predicate(got):  # type: ignore[operator]
            return got
        assert time.monotonic() < deadline, f"condition not met; last read: {got[:3]}"
        time.sleep(0.05)


def test_scrape_over_http_with_headers_and_gzip() -> None:
    body = gzip.compress(L4.encode())
    reply = Reply(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4", "Content-Encoding": "gzip"}
    )
    with serve(reply) as server:
        source = source_for(server.url, headers={"ep": {"Authorization": "Bearer s3cret"}})
        try:
            rs = wait_for(source, bool)
        finally:
            source.close()
    assert named(rs, "DCGM_FI_DEV_SM_CLOCK")[0].value == 210.0
    request = server.requests[0]
    assert request["authorization"] == "Bearer s3cret"
    assert "application/openmetrics-text" in request["accept"] and "text/plain" in request["accept"]
    assert "gzip" in request["accept-encoding"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(status=500, body=b"oops"), "HTTP 500"),
        (Reply(status=404, body=b"no"), "HTTP 404"),
        (Reply(body=b"this is { not metrics\n"), "unparseable"),
        (Reply(body=L4.encode(), truncate_to=100), "truncated"),
        (Reply(body=b"m 1\n" + b"# " + b"x" * 60_000 + b"\n"), "byte cap"),
        (Reply(body=b'm{l="\xff\xfe"} 1\n'), "not UTF-8"),
        (Reply(status=302, headers={"Location": "file:///etc/passwd"}), "non-HTTP"),
        (Reply(body=L4.encode(), hang=10), "no answer within"),
    ],
    ids=["500", "404", "garbage", "truncated", "too-big", "not-utf8", "redirect-file", "hang"],
)
def test_bad_endpoints_give_no_readings_and_one_warning(
    reply: Reply, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serve(reply) as server:
        source = source_for(server.url, timeout=0.5, max_bytes=50_000, headers={"ep": {"X-Token": "t0ken"}})
        try:
            with caplog.at_level(logging.WARNING, logger="sysgauge"):
                started = time.monotonic()
                assert source.read() == []  # never blocks the tick, whatever the endpoint does
                assert time.monotonic() - started < 0.1
                deadline = time.monotonic() + 8
                while reason not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)
                assert source.read() == []
        finally:
            server.stop_hanging.set()
            source.close()
    warnings = [r.getMessage() for r in caplog.records if "openmetrics endpoint ep" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert reason in warnings[0]
    assert "t0ken" not in caplog.text


def test_connection_refused_then_the_endpoint_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = source_for(f"http://127.0.0.1:{port}/metrics")
    try:
        with caplog.at_level(logging.WARNING, logger="sysgauge"):
            source.read()
            deadline = time.monotonic() + 5
            while "cannot connect" not in caplog.text:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # Now a server takes the port that refused connections.
        reply_body = L4.encode()

        class Again(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply_body)))
                self.end_headers()
                self.wfile.write(reply_body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Again)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            rs = wait_for(source, bool, timeout=8)
        finally:
            server.shutdown()
            server.server_close()
        assert named(rs, "DCGM_FI_DEV_GPU_TEMP")[0].value == 31.0
    finally:
        source.close()


def test_churning_labels_stay_within_the_series_cap(caplog: pytest.LogCaptureFixture) -> None:
    with serve() as server:
        source = source_for(server.url, max_series=50)
        source.read()  # starts the scraper thread
        try:
            with caplog.at_level(logging.WARNING, logger="sysgauge"):
                for round_ in range(4):
                    server.reply = Reply(
                        body="".join(f'churn{{id="{round_}-{i}"}} 1\n' for i in range(80)).encode()
                    )
                    before = len(server.requests)
                    deadline = time.monotonic() + 5
                    while len(server.requests) < before + 2:
                        assert time.monotonic() < deadline
                        time.sleep(0.02)
                    assert len(source.read()) <= 50
        finally:
            source.close()
    assert len([r for r in caplog.records if "more than 50 series" in r.getMessage()]) == 1


def test_a_line_over_the_length_limit_is_dropped_and_the_rest_of_the_scrape_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    huge = "x" * (MAX_LINE_CHARS + 1)
    body = f'# TYPE before gauge\nbefore 1\nhuge{{a="{huge}"}} 2\n# TYPE after gauge\nafter 3\n'
    with serve(Reply(body=body.encode())) as server:
        source = source_for(server.url)
        try:
            with caplog.at_level(logging.WARNING, logger="sysgauge"):
                got = wait_for(source, lambda rs: rs)
                requests = len(server.requests)
                deadline = time.monotonic() + 5
                while len(server.requests) < requests + 2:  # two more scrapes: still one warning
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
        finally:
            source.close()
    assert {(r.spec.name, r.value) for r in got} == {("before", 1.0), ("after", 3.0)}
    warnings = [r.getMessage() for r in caplog.records if "longer than 65536 characters" in r.getMessage()]
    assert len(warnings) == 1 and "endpoint ep" in warnings[0] and "(1 in this scrape)" in warnings[0]


def test_configuration_accepts_only_http_urls_and_valid_json() -> None:
    with pytest.raises(ValueError, match="only http and https URLs"):
        resolve_options({"openmetrics_endpoints": {"x": "file:///etc/passwd"}}, environ={})
    with pytest.raises(ValueError, match=r"SYSGAUGE_OPENMETRICS_ENDPOINTS=.* expected .* as JSON"):
        resolve_options({}, environ={"SYSGAUGE_OPENMETRICS_ENDPOINTS": "{not json"})
    with pytest.raises(ValueError, match=r"openmetrics_filters=.*valid regular expressions"):
        resolve_options({"openmetrics_filters": ["("]}, environ={})
    with pytest.raises(ValueError, match="single-line Latin-1 values"):
        resolve_options({"openmetrics_headers": {"x": {"A": "b\r\nInjected: 1"}}}, environ={})
    options = resolve_options(
        {},
        environ={
            "SYSGAUGE_OPENMETRICS_ENDPOINTS": '{"dcgm": "http://localhost:9400/metrics"}',
            "SYSGAUGE_OPENMETRICS_FILTERS": '{".*GPU_UTIL": {"gpu": "0"}}',
        },
    )
    assert options.openmetrics_endpoints == {"dcgm": "http://localhost:9400/metrics"}
    assert options.openmetrics_filters == {".*GPU_UTIL": {"gpu": "0"}}


def test_end_to_end_instruments_appear_and_a_hung_endpoint_never_delays_other_sources() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    with serve(Reply(body=L4.encode())) as good, serve(Reply(body=b"x 1\n", hang=30)) as hung:
        monitor = instrument_system(
            provider,
            sources=["memory", "openmetrics"],
            openmetrics_endpoints={"dcgm": good.url, "stuck": hung.url},
            openmetrics_filters=["dcgm\\..*", "stuck\\..*"],
            openmetrics_timeout=5,
            sampling_interval=0.1,
            window=1,
        )
        try:
            time.sleep(1.2)
            ticks = [s.time for s in monitor.sampler.samples()]
            data = reader.get_metrics_data()
        finally:
            hung.stop_hanging.set()
            monitor.shutdown()
            provider.shutdown()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert gaps and max(gaps) < 0.25, gaps
    names = metric_names(data)
    # The Python SDK lowercases instrument names (OTel names are case-insensitive).
    assert {"system.memory.usage", "dcgm_fi_dev_gpu_util", "dcgm_fi_dev_total_energy_consumption"} <= names
    ((value, attrs),) = points(data, "dcgm_fi_dev_gpu_temp")
    assert value == 31.0 and attrs[ENDPOINT_ATTRIBUTE] == "dcgm" and str(attrs["UUID"]).startswith("GPU-c2f7")


def test_headers_follow_a_redirect_only_within_the_same_origin() -> None:
    token = {"Authorization": "Bearer t0ken", "X-Api-Key": "k3y"}
    with serve(Reply(body=b"x 1\n")) as elsewhere, serve() as named:
        named.reply = Reply(status=302, headers={"Location": elsewhere.url})
        response = fetch(named.url, token, timeout=3.0, max_bytes=2**20)
        assert response.body == b"x 1\n"
        assert named.requests[0]["authorization"] == "Bearer t0ken"
        assert "authorization" not in elsewhere.requests[0] and "x-api-key" not in elsewhere.requests[0]
        assert "gzip" in elsewhere.requests[0]["accept-encoding"]
    with serve() as looping:
        looping.reply = Reply(status=302, headers={"Location": looping.url + "?again"})
        with pytest.raises(FetchError):
            fetch(looping.url, token, timeout=3.0, max_bytes=2**20)
        # Same scheme, host and port: the endpoint the user named, so the token goes along.
        assert len(looping.requests) > 1
        assert all(request.get("x-api-key") == "k3y" for request in looping.requests)
