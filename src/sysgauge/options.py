"""Options of `instrument_system`, each also settable as a SYSGAUGE_* environment variable.

Keyword arguments win over the environment; every bad value raises ValueError naming the option (or the
variable) and what it accepts. The README's configuration table is generated from OPTION_SPECS.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import reprlib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sysgauge.metrics import DEFAULT_PEAKS

_logger = logging.getLogger("sysgauge")

# A list of name regexes, or {name regex: {label: value regex}} (docs/openmetrics.md).
OpenMetricsFilters = tuple[str, ...] | Mapping[str, Mapping[str, str]]

ENV_PREFIX = "SYSGAUGE_"
MIN_INTERVAL_S = 0.001
MAX_INTERVAL_S = 3600.0
MAX_PID = 2**22  # Linux's largest pid_max
MAX_WINDOW_S = 86400.0
# Every host source; the default `sources` is "all of these that are available here".
SOURCE_NAMES: tuple[str, ...] = (
    "cpu",
    "memory",
    "disk",
    "network",
    "process",
    "nvidia",
    "amd",
    "apple",
    "tpu",
    "trainium",
    "ipu",
    "openmetrics",
)
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Options:
    sampling_interval: float = 2.0
    window: float = 30.0
    sources: tuple[str, ...] | None = None
    pid: int | None = None
    process_tree: bool = True
    disk_paths: tuple[str, ...] = ("/",)
    per_cpu: bool = True
    disk_include: tuple[str, ...] = ()
    disk_exclude: tuple[str, ...] = (r"loop\d*", r"ram\d*", r"zram\d*")
    network_include: tuple[str, ...] = ()
    network_exclude: tuple[str, ...] = ("lo",)
    peaks: tuple[str, ...] = DEFAULT_PEAKS
    cgroup: bool = True
    nvidia_processes: bool = True
    nvidia_xid: bool = False
    tpu_address: str = "localhost:8431"
    neuron_monitor_path: str | None = None
    neuron_all_runtimes: bool = False
    openmetrics_endpoints: Mapping[str, str] = field(default_factory=dict)
    openmetrics_filters: OpenMetricsFilters = ()
    openmetrics_headers: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    openmetrics_interval: float | None = None
    openmetrics_timeout: float = 3.0
    openmetrics_max_bytes: int = 10_000_000
    openmetrics_max_series: int = 2000

    @property
    def window_samples(self) -> int:
        return math.ceil(self.window / self.sampling_interval)


class _Invalid(Exception):
    """A value that does not parse; the caller adds which option or variable it came from."""


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid("a number of seconds")
    if isinstance(value, int | float):
        try:
            result = float(value)
        except OverflowError:  # an int beyond 1e308
            raise _Invalid("a number of seconds") from None
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _Invalid("a number of seconds") from None
    else:
        raise _Invalid("a number of seconds")
    if not math.isfinite(result):
        raise _Invalid("a finite number of seconds")
    return result


def _interval(value: Any) -> float:
    seconds = _number(value)
    # Below a millisecond a "schedule" is a busy loop (and the window's deque size overflows).
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise _Invalid(f"a number of seconds > 0 (at least {MIN_INTERVAL_S:g}) and <= {MAX_INTERVAL_S:g}")
    return seconds


def _window(value: Any) -> float:
    seconds = _number(value)
    if not 0.0 < seconds <= MAX_WINDOW_S:
        raise _Invalid(f"a number of seconds > 0 and <= {MAX_WINDOW_S:g}")
    return seconds


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Invalid("true or false (also 1/0, yes/no, on/off)")


def _pid(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid("a process id (a positive integer)")
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 10:
            raise _Invalid("a process id (a positive integer)")
        value = int(text)
    if not isinstance(value, int) or value <= 0 or value > MAX_PID:
        raise _Invalid("a process id (a positive integer)")
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        return tuple(item for item in items if item)
    if isinstance(value, Iterable) and not isinstance(value, bytes | Mapping):
        items = list(value)
        if all(isinstance(item, str) for item in items):
            return tuple(item for item in (i.strip() for i in items) if item)
    raise _Invalid(f"a list of {what} (or one comma-separated string)")


def _sources(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = _strings(value, "source names")
    unknown = [name for name in names if name not in SOURCE_NAMES]
    if unknown:
        raise _Invalid(f"source names from {', '.join(SOURCE_NAMES)} (unknown: {', '.join(unknown)})")
    if not names:
        raise _Invalid(f"at least one source name from {', '.join(SOURCE_NAMES)}")
    return tuple(dict.fromkeys(names))


def _paths(value: Any) -> tuple[str, ...]:
    paths = _strings(value, "paths")
    if not paths:
        raise _Invalid("at least one path")
    for path in paths:
        if "\x00" in path or len(path) > 4096:
            raise _Invalid("paths without NUL characters, at most 4096 characters long")
    return paths


def _patterns(value: Any) -> tuple[str, ...]:
    patterns = _strings(value, "regular expressions")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Invalid(f"valid regular expressions ({pattern!r}: {exc})") from None
    return patterns


def _peaks(value: Any) -> tuple[str, ...]:
    from sysgauge.metrics import ALL_SPECS

    names = _strings(value, "metric names")
    peakable = [spec.name for spec in ALL_SPECS if spec.can_peak]
    unknown = [name for name in names if name not in peakable]
    if unknown:
        raise _Invalid(f"names of sampled gauges: {', '.join(peakable)} (not: {', '.join(unknown)})")
    return names


def _json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # JSONDecodeError, too-long ints, too-deep nesting
            raise _Invalid(f"{what} as JSON") from None
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _Invalid(what)
    return dict(value)


def _endpoints(value: Any) -> dict[str, str]:
    what = 'a mapping {name: "http(s)://host:port/metrics"}'
    endpoints = _string_map(_json(value, what), what)
    for name, url in endpoints.items():
        if not _ENDPOINT_NAME.fullmatch(name):
            raise _Invalid(f"{what} with names of letters, digits, '_', '.', '-' (not {name!r})")
        try:
            parsed = urllib.parse.urlsplit(url)
            hostname = parsed.hostname
        except ValueError:  # a bad IPv6 literal, characters NFKC turns into URL syntax
            raise _Invalid(f"{what} with valid URLs (not {url[:100]!r})") from None
        if parsed.scheme not in ("http", "https") or not hostname:
            raise _Invalid(f"{what}; only http and https URLs with a host are accepted (not {url!r})")
    return endpoints


def _filters(value: Any) -> OpenMetricsFilters:
    what = "a list of regexes, or a mapping {name regex: {label: value regex}}"
    value = _json(value, what)
    if isinstance(value, Mapping):
        result: dict[str, dict[str, str]] = {}
        for pattern, labels in value.items():
            if not isinstance(pattern, str):
                raise _Invalid(what)
            result[pattern] = _string_map(labels, what)
            for regex in (pattern, *result[pattern].values()):
                _compile(regex)
        return result
    patterns = _strings(value, "regexes") if isinstance(value, list | tuple) else None
    if patterns is None:
        raise _Invalid(what)
    for pattern in patterns:
        _compile(pattern)
    return patterns


def _compile(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _Invalid(f"valid regular expressions ({pattern[:100]!r}: {exc})") from None
    except (OverflowError, RecursionError):  # repeat counts or nesting beyond what re can compile
        raise _Invalid(f"valid regular expressions ({pattern[:100]!r} is too large)") from None


def _headers(value: Any) -> dict[str, dict[str, str]]:
    what = 'a mapping {endpoint name: {"Header-Name": "value"}}'
    value = _json(value, what)
    if not isinstance(value, Mapping):
        raise _Invalid(what)
    headers: dict[str, dict[str, str]] = {}
    for endpoint, fields_ in value.items():
        if not isinstance(endpoint, str):
            raise _Invalid(what)
        headers[endpoint] = _string_map(fields_, what)
        for name, text in headers[endpoint].items():
            if not _HEADER_NAME.fullmatch(name) or any(c in text for c in "\r\n\x00") or not _latin1(text):
                raise _Invalid(f"{what} with valid header names and single-line Latin-1 values")
    return headers


def _optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value or len(value) > 4096:
        raise _Invalid("a path to an executable (a non-empty string)")
    return value.strip()


def _address(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", value.strip()):
        raise _Invalid("host:port")
    return value.strip()


def _latin1(text: str) -> bool:
    """HTTP/1.1 carries header values as Latin-1 (what http.client will send)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _optional_interval(value: Any) -> float | None:
    return None if value is None else _interval(value)


def _positive_int(limit: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _Invalid(f"a whole number from 1 to {limit}")
        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise _Invalid(f"a whole number from 1 to {limit}") from None
        if not isinstance(number, int) or not 1 <= number <= limit:
            raise _Invalid(f"a whole number from 1 to {limit}")
        return number

    return parse


@dataclass(frozen=True)
class OptionSpec:
    name: str
    parse: Callable[[Any], Any]
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("sampling_interval", _interval, "seconds between two samples of every source"),
    OptionSpec(
        "window",
        _window,
        "seconds of samples behind each exported value; set it to your export "
        "interval (must be >= sampling_interval)",
    ),
    OptionSpec(
        "sources", _sources, f"which sources to read: {', '.join(SOURCE_NAMES)}; default every available one"
    ),
    OptionSpec("pid", _pid, "root of the monitored process tree; default this process"),
    OptionSpec("process_tree", _boolean, "include the root's descendants (DataLoader workers, subprocesses)"),
    OptionSpec("disk_paths", _paths, "paths whose filesystems get usage metrics"),
    OptionSpec(
        "per_cpu", _boolean, "system.cpu.* per logical CPU (cpu.logical_number); off = one series per mode"
    ),
    OptionSpec("disk_include", _patterns, "block devices to keep (full-match regexes; empty = all)"),
    OptionSpec("disk_exclude", _patterns, "block devices to leave out (full-match regexes)"),
    OptionSpec("network_include", _patterns, "interfaces to keep (full-match regexes; empty = all)"),
    OptionSpec("network_exclude", _patterns, "interfaces to leave out (full-match regexes)"),
    OptionSpec("peaks", _peaks, "gauges that also report their window maximum as sysgauge.peak.*"),
    OptionSpec("cgroup", _boolean, "relate memory and process CPU to the cgroup v2 limits when finite"),
    OptionSpec(
        "nvidia_processes",
        _boolean,
        "report the GPU memory and SM use of the monitored process tree per GPU (sysgauge.process.gpu.*)",
    ),
    OptionSpec(
        "nvidia_xid",
        _boolean,
        "count XID critical errors per GPU (sysgauge.gpu.xid.errors) from a driver event thread",
    ),
    OptionSpec("tpu_address", _address, "address of libtpu's runtime metrics gRPC service"),
    OptionSpec(
        "neuron_monitor_path", _optional_path, "the neuron-monitor executable; default: found on PATH"
    ),
    OptionSpec(
        "neuron_all_runtimes",
        _boolean,
        "report every Neuron runtime on the host, not only those in the monitored process tree",
    ),
    OptionSpec(
        "openmetrics_endpoints",
        _endpoints,
        "Prometheus/OpenMetrics endpoints to scrape, "
        '`{"name": "http://host:port/metrics"}` (JSON in the variable)',
    ),
    OptionSpec(
        "openmetrics_filters",
        _filters,
        "which scraped metrics to keep: a list of regexes, or "
        "`{name regex: {label: value regex}}`; empty = all (docs/openmetrics.md)",
    ),
    OptionSpec(
        "openmetrics_headers",
        _headers,
        'HTTP headers per endpoint, `{"name": {"Authorization": "Bearer ..."}}`; never logged',
    ),
    OptionSpec(
        "openmetrics_interval", _optional_interval, "seconds between scrapes; default sampling_interval"
    ),
    OptionSpec("openmetrics_timeout", _interval, "seconds one scrape may take"),
    OptionSpec("openmetrics_max_bytes", _positive_int(2**31), "largest response accepted, in bytes"),
    OptionSpec(
        "openmetrics_max_series",
        _positive_int(10**6),
        "series kept per endpoint; past it, new series are dropped (warned once)",
    ),
)
_BY_NAME = {spec.name: spec for spec in OPTION_SPECS}
assert set(_BY_NAME) == {f.name for f in fields(Options)}, "every Options field needs an OptionSpec"


def resolve_options(kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Options:
    """Merge SYSGAUGE_* variables and keyword arguments (which win) into validated Options."""
    environ = os.environ if environ is None else environ
    unknown = sorted(set(kwargs) - set(_BY_NAME))
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(repr(u) for u in unknown)}; accepted: {', '.join(_BY_NAME)}"
        )
    values: dict[str, Any] = {}
    for spec in OPTION_SPECS:
        if spec.env in environ:
            values[spec.name] = _parse(spec, environ[spec.env], spec.env)
    for name, raw in kwargs.items():
        values[name] = _parse(_BY_NAME[name], raw, name)
    _warn_unknown_variables(environ)
    options = Options(**values)
    if options.window < options.sampling_interval:
        raise ValueError(
            f"window ({options.window:g} s) must be >= sampling_interval ({options.sampling_interval:g} s)"
        )
    return options


def parse_option(name: str, raw: Any, label: str) -> Any:
    """Parse one option's value, naming `label` (a flag such as --interval) in the error."""
    return _parse(_BY_NAME[name], raw, label)


def _parse(spec: OptionSpec, raw: Any, label: str) -> Any:
    try:
        return spec.parse(raw)
    except _Invalid as exc:
        raise ValueError(f"{label}={_shown(raw)} is not valid: expected {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        # A value shaped to break the parsers themselves (deep nesting, giant numbers): still a clear error.
        raise ValueError(f"{label}={_shown(raw)} is not valid") from None


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3
_REPR.maxlong = 60


def _shown(raw: Any) -> str:
    try:
        shown = _REPR.repr(raw)
    except Exception:  # a repr that raises, or an int too long to print
        shown = f"<{type(raw).__name__}>"
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    known = {spec.env for spec in OPTION_SPECS}
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in known:
            _logger.warning(
                "ignoring unknown environment variable %s (known: %s)", key, ", ".join(sorted(known))
            )
