"""Configuration fuzzing: every option of resolve_options, as a keyword and as its SYSGAUGE_* variable.

The contract (README, options.py): a bad value raises ValueError naming the option (or the variable) and
what it accepts; nothing else escapes; instrument_system leaves no thread behind when it raises.

The bugs these tests found (docs/reliability.md, bugs 1-10) are fixed; their tests below guard the fixes,
and the fuzz tests tolerate no failure.
"""

from __future__ import annotations

import json
import operator
import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider

import sysgauge.monitor as monitor_module
from sysgauge import instrument_system
from sysgauge.options import OPTION_SPECS, SOURCE_NAMES, Options, resolve_options
from sysgauge.sources.base import Source
from tests.nvml_fake.scenario import FakeNvml
from tests.parts import free_port
from tests.reliability.helpers import nvml_scenario, nvml_users, two_gpus

OPTIONS = {spec.name: spec for spec in OPTION_SPECS}
# Fuzzed regexes draw re's "possible nested set" FutureWarnings; they are not the subject here.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# --- strategies -----------------------------------------------------------------------------------------


def nested_list(depth: int) -> list[Any]:
    root: list[Any] = []
    inner = root
    for _ in range(depth):
        child: list[Any] = []
        inner.append(child)
        inner = child
    return root


EDGE_NUMBERS = st.sampled_from(
    [0, -1, 1, 2, 2**31 - 1, 2**31, 2**63, 10**400, 1e-300, 5e-324, 1e308, float("inf"), float("nan"), -0.0]
)
NUMERIC_TEXT = st.sampled_from(
    [
        "1",
        " 2 ",
        "0.5",
        "1e400",
        "1e-300",
        "nan",
        "inf",
        "-1",
        "0",
        "1_000",
        "²",
        "٣",
        "0x10",
        "1,5",
        "3600.1",
    ]
) | st.from_regex(r"\s*-?\d{1,6}(\.\d{0,3})?\s*", fullmatch=True)
WORDS = st.sampled_from(
    [
        "",
        ",",
        "true",
        "off",
        "YES",
        "cpu,memory",
        "gpu",
        "process, nvidia",
        "/",
        "/nonexistent",
        "lo",
        r"loop\d*",
        "(",
        "[",
        "process.memory.usage",
        "hw.gpu.memory.usage",
        "process.cpu.time",
    ]
)
HUGE_TEXT = st.builds(
    operator.mul,
    st.sampled_from(["a", "é", "9", "[", "(", ",", "\x00", "\U0001f600", " "]),
    st.integers(1000, 60_000),
)
JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
).map(json.dumps) | st.sampled_from(
    [
        '{"dcgm": "http://127.0.0.1:9/metrics"}',
        '{"a": "ftp://x/"}',
        '{"a": {"Authorization": "Bearer x"}}',
        '{".*": {"gpu": "0"}}',
        '["a\\\\..*"]',
        "{oops",
        "[" * 3000,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=10),
    EDGE_NUMBERS,
    NUMERIC_TEXT,
    WORDS,
    HUGE_TEXT,
    JSON_TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8) | WORDS, inner, max_size=3)
        | st.frozensets(st.text(max_size=6), max_size=3)
    ),
    max_leaves=10,
) | st.integers(1, 5000).map(nested_list)
# Near-valid values, so the fuzz also walks the paths behind the first checks.
ENDPOINT_URLS = st.sampled_from(
    ["http://127.0.0.1:9/metrics", "https://localhost/m", "http://[::1]:9/", "http:///nohost", "ftp://h/"]
) | st.text(max_size=30)
NEAR_VALID: dict[str, st.SearchStrategy[Any]] = {
    "sources": st.lists(st.sampled_from([*SOURCE_NAMES, "gpu", " cpu ", ""]), max_size=4),
    "disk_paths": st.lists(st.sampled_from(["/", "/tmp", "/nonexistent", "\udc80", "a" * 5000]), max_size=3),
    "peaks": st.lists(st.sampled_from(["process.memory.usage", "process.cpu.time", "x"]), max_size=3),
    "openmetrics_endpoints": st.dictionaries(
        st.sampled_from(["dcgm", "a.b-c", "", "bad name", "x" * 70]), ENDPOINT_URLS, max_size=2
    ),
    "openmetrics_filters": st.dictionaries(
        st.sampled_from([".*", "(", "dcgm\\..*"]),
        st.dictionaries(st.sampled_from(["gpu", "le"]), st.sampled_from(["0", ".*", "["]), max_size=2),
        max_size=2,
    )
    | st.lists(st.sampled_from([".*", "(", "a{2,1}"]), max_size=3),
    "openmetrics_headers": st.dictionaries(
        st.sampled_from(["dcgm", "x"]),
        st.dictionaries(
            st.sampled_from(["Authorization", "X-Ok", "bad name", ""]),
            st.sampled_from(["Bearer x", "a\r\nb", "é"]),
            max_size=2,
        ),
        max_size=2,
    ),
}


SCOPE_SOURCES = ["cpu", "memory", "disk", "network", "process", "nvidia", "openmetrics"]
PEAKABLE = [
    "process.memory.usage",
    "system.memory.usage",
    "hw.gpu.memory.usage",
    "sysgauge.process.gpu.memory.usage",
]
SECONDS = st.floats(0.01, 5.0) | st.sampled_from([0.05, 1, "0.5", " 2 "])
REGEXES = st.lists(st.sampled_from([r"loop\d*", "lo", "eth.*", ".*", "sd[a-z]"]), max_size=3)
# Values each option accepts (one combination in a few is refused: window < sampling_interval).
VALID: dict[str, st.SearchStrategy[Any]] = {
    "sampling_interval": SECONDS,
    "window": SECONDS | st.floats(5.0, 120.0),
    "sources": st.lists(st.sampled_from(SCOPE_SOURCES), min_size=1, max_size=7, unique=True),
    "pid": st.sampled_from([None, os.getpid(), str(os.getpid())]),
    "process_tree": st.booleans() | st.sampled_from(["on", "0"]),
    "disk_paths": st.lists(st.sampled_from(["/", "/tmp", "/nonexistent"]), min_size=1, max_size=2),
    "per_cpu": st.booleans(),
    "disk_include": REGEXES,
    "disk_exclude": REGEXES,
    "network_include": REGEXES,
    "network_exclude": REGEXES,
    "peaks": st.lists(st.sampled_from(PEAKABLE), max_size=4),
    "cgroup": st.booleans(),
    "nvidia_processes": st.booleans(),
    "nvidia_xid": st.sampled_from([False, False, False, True]),  # True costs a 0.5 s event wait at close
    "openmetrics_endpoints": st.dictionaries(
        st.sampled_from(["dcgm", "node"]), st.just("http://127.0.0.1:9/m"), max_size=2
    ),
    "openmetrics_filters": st.lists(st.sampled_from([".*", r"dcgm\..*"]), max_size=2),
    "openmetrics_headers": st.just({"dcgm": {"X-Test": "1"}}),
    "openmetrics_interval": st.none() | SECONDS,
    "openmetrics_timeout": st.floats(0.1, 3.0),
    "openmetrics_max_bytes": st.integers(1, 10**7),
    "openmetrics_max_series": st.integers(1, 5000),
}
# The options of the seven sources this suite covers; options added since are fuzzed through
# resolve_options only (instrument_system would act on them: connect to a TPU address, start tools).
IN_SCOPE = set(VALID)
VALID_KWARGS = st.fixed_dictionaries({}, optional=VALID)
# A valid configuration with one value replaced by anything at all.
SPOILED_KWARGS = st.tuples(VALID_KWARGS, st.sampled_from(list(OPTIONS)), VALUES).map(
    lambda drawn: {**drawn[0], drawn[1]: drawn[2]}
)


def value_for(name: str) -> st.SearchStrategy[Any]:
    near = NEAR_VALID.get(name)
    return VALUES if near is None else (VALUES | near)


KWARGS = st.fixed_dictionaries({}, optional={name: value_for(name) for name in OPTIONS}) | st.dictionaries(
    st.text(min_size=1, max_size=12) | st.sampled_from(list(OPTIONS)), VALUES, max_size=3
)
ENV_TEXT = st.one_of(st.text(max_size=40), NUMERIC_TEXT, WORDS, HUGE_TEXT, JSON_TEXT)
ENVIRON = st.dictionaries(
    st.sampled_from([spec.env for spec in OPTION_SPECS]), ENV_TEXT, max_size=4
) | st.dictionaries(st.sampled_from([spec.env for spec in OPTION_SPECS]), ENV_TEXT, min_size=1, max_size=1)


# --- the verdicts ---------------------------------------------------------------------------------------


def acceptable(exc: BaseException, labels: list[str]) -> str | None:
    """None if `exc` is the promised ValueError naming one of `labels`; else what is wrong with it."""
    if isinstance(exc, ValueError):
        message = str(exc)
        if any(message.startswith(f"{label}=") for label in labels):
            return None  # "<option or VARIABLE>=<value> is not valid: expected ..."
        if message.startswith("window (") and "sampling_interval" in message:
            return None  # the one rule across two options names both options
        if message.startswith("unknown option "):
            return None
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def check_keywords(kwargs: Mapping[str, Any]) -> Options | None:
    try:
        return resolve_options(kwargs, environ={})
    except Exception as exc:  # every kind, so the verdict can say which escaped
        problem = acceptable(exc, [str(name) for name in kwargs])
        assert problem is None, f"{problem!s} for {short(kwargs)}"
        return None


def short(value: object) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) < 400 else text[:397] + "..."


@FUZZ
@given(kwargs=KWARGS | SPOILED_KWARGS)
def test_keyword_options_raise_only_value_errors_that_name_the_option(kwargs: dict[str, Any]) -> None:
    check_keywords(kwargs)


@FUZZ
@given(environ=ENVIRON)
def test_variables_raise_only_value_errors_that_name_the_variable(environ: dict[str, str]) -> None:
    try:
        resolve_options({}, environ=environ)
    except Exception as exc:
        problem = acceptable(exc, list(environ))
        assert problem is None, f"{problem!s} for {short(environ)}"


@FUZZ
@given(kwargs=KWARGS, environ=ENVIRON)
def test_keywords_and_variables_together_raise_only_value_errors_naming_one_of_them(
    kwargs: dict[str, Any], environ: dict[str, str]
) -> None:
    # A variable is parsed even when a keyword overrides it: garbage in either is reported, by its name.
    try:
        resolve_options(kwargs, environ=environ)
    except Exception as exc:
        problem = acceptable(exc, [*map(str, kwargs), *environ])
        assert problem is None, f"{problem!s} for {short(kwargs)} / {short(environ)}"


def loopback_only(options: Options) -> bool:
    hosts = {urllib.parse.urlsplit(url).hostname for url in options.openmetrics_endpoints.values()}
    return hosts <= {"127.0.0.1", "localhost"}


@FUZZ
@given(kwargs=VALID_KWARGS | SPOILED_KWARGS | KWARGS)
def test_instrument_system_raises_only_value_error_and_leaves_no_thread(
    fake_nvml_library: FakeNvml, kwargs: dict[str, Any]
) -> None:
    kwargs = {name: raw for name, raw in kwargs.items() if name in IN_SCOPE or name not in OPTIONS}
    options = check_keywords(kwargs)
    if options is not None:
        assume(loopback_only(options))  # stay on this machine
        if options.openmetrics_endpoints:
            kwargs["openmetrics_endpoints"] = {
                name: f"http://127.0.0.1:{free_port()}/m" for name in options.openmetrics_endpoints
            }
    before = {t.ident for t in threading.enumerate()}
    users = nvml_users()
    provider = MeterProvider(shutdown_on_exit=False)
    with nvml_scenario(fake_nvml_library, two_gpus(), "config-fuzz"):
        try:
            handle = instrument_system(provider, **kwargs)
        except Exception as exc:
            event(f"instrument_system raised {type(exc).__name__}")
            problem = acceptable(exc, [str(name) for name in kwargs])
            assert problem is None, f"{problem!s} for {short(kwargs)}"
            left = [t.name for t in threading.enumerate() if t.ident not in before]
            assert not [n for n in left if n.startswith("sysgauge-")], f"threads left behind: {left}"
            assert nvml_users() == users, "NVML left initialized by a failed instrument_system"
        else:
            event(f"instrument_system started {len(handle.sources)} sources")
            handle.shutdown()
        finally:
            provider.shutdown()
    started = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("sysgauge-")]
    for thread in started:
        thread.join(2.0)
    assert not [t.name for t in started if t.is_alive()], "shutdown left a sysgauge thread running"
    assert nvml_users() == users


# --- the bugs the fuzz found, one test each -------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["sampling_interval", "window", "openmetrics_interval", "openmetrics_timeout"]
)
def test_a_huge_integer_for_seconds_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        resolve_options({name: 10**400}, environ={})


@pytest.mark.parametrize("raw", ["²", "9" * 5000])
@pytest.mark.parametrize("form", ["keyword", "variable"])
def test_pid_strings_that_isdigit_accepts_but_int_refuses_name_the_option(raw: str, form: str) -> None:
    if form == "keyword":
        with pytest.raises(ValueError, match="pid="):
            resolve_options({"pid": raw}, environ={})
    else:
        with pytest.raises(ValueError, match="SYSGAUGE_PID="):
            resolve_options({}, environ={"SYSGAUGE_PID": raw})


@pytest.mark.parametrize("raw", [nested_list(100_000), 10**5000], ids=["nested-list", "huge-int"])
def test_the_error_message_survives_any_bad_value(raw: object) -> None:
    with pytest.raises(ValueError, match=r"^pid=.* is not valid"):
        resolve_options({"pid": raw}, environ={})


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a": 1' + "0" * 5000 + "}"], ids=["deep", "long-number"])
@pytest.mark.parametrize(
    "variable",
    ["SYSGAUGE_OPENMETRICS_ENDPOINTS", "SYSGAUGE_OPENMETRICS_FILTERS", "SYSGAUGE_OPENMETRICS_HEADERS"],
)
def test_json_variables_that_json_loads_cannot_decode_name_the_variable(text: str, variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        resolve_options({}, environ={variable: text})


@pytest.mark.parametrize("url", ["http://[::1/metrics", "http://a\uff03b/metrics"])
def test_urls_that_urlsplit_refuses_name_the_option(url: str) -> None:
    with pytest.raises(ValueError, match="openmetrics_endpoints"):
        resolve_options({"openmetrics_endpoints": {"x": url}}, environ={})


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 5000 + ")" * 5000], ids=["repeat", "nesting"])
@pytest.mark.parametrize("name", ["disk_include", "network_exclude", "openmetrics_filters"])
def test_regexes_that_re_compile_cannot_handle_name_the_option(pattern: str, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        resolve_options({name: [pattern]}, environ={})


def test_pid_two_to_the_31_is_refused_by_validation() -> None:
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        with pytest.raises(ValueError, match="pid"):
            instrument_system(provider, pid=2**31, sources=["memory"]).shutdown()
    finally:
        provider.shutdown()


def test_a_tiny_sampling_interval_is_a_value_error() -> None:
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        with pytest.raises(ValueError, match="sampling_interval"):
            instrument_system(provider, sources=["memory"], sampling_interval=1e-300).shutdown()
    finally:
        provider.shutdown()


def test_a_failure_after_the_probes_releases_what_they_opened(
    fake_nvml_library: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Source] = []

    def failing_monitor(provider: object, sources: list[Source], options: Options) -> None:
        built.extend(sources)
        raise RuntimeError("a failure after the probes (injected)")

    monkeypatch.setattr(monitor_module, "SystemMonitor", failing_monitor)
    before = {t.ident for t in threading.enumerate()}
    users = nvml_users()
    provider = MeterProvider(shutdown_on_exit=False)
    try:
        with nvml_scenario(fake_nvml_library, two_gpus(), "late-failure"):
            with pytest.raises(RuntimeError):
                instrument_system(provider, sources=["memory", "nvidia"], nvidia_xid=True)
            left = [t.name for t in threading.enumerate() if t.ident not in before]
            leaked_users = nvml_users() - users
    finally:
        for source in built:  # clean up for the tests that follow, whatever the verdict
            source.close()
        provider.shutdown()
    assert left == [] and leaked_users == 0, (left, leaked_users)


def test_header_values_http_cannot_send_are_refused_at_configuration() -> None:
    with pytest.raises(ValueError, match="openmetrics_headers"):
        resolve_options({"openmetrics_headers": {"dcgm": {"Authorization": "Bearer \u20ac"}}}, environ={})
