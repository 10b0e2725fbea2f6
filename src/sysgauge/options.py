"""Options of `instrument_system`, each also settable as a SYSGAUGE_* environment variable.

Keyword arguments win over the environment; every bad value raises ValueError naming the option (or the
variable) and what it accepts. The README's configuration table is generated from OPTION_SPECS.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sysgauge.metrics import DEFAULT_PEAKS

_logger = logging.getLogger("sysgauge")

ENV_PREFIX = "SYSGAUGE_"
MAX_INTERVAL_S = 3600.0
MAX_WINDOW_S = 86400.0
# Every host source; the default `sources` is "all of these that are available here".
SOURCE_NAMES: tuple[str, ...] = ("cpu", "memory", "disk", "network", "process")
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

    @property
    def window_samples(self) -> int:
        return math.ceil(self.window / self.sampling_interval)


class _Invalid(Exception):
    """A value that does not parse; the caller adds which option or variable it came from."""


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid("a number of seconds")
    if isinstance(value, int | float):
        result = float(value)
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
    if not 0.0 < seconds <= MAX_INTERVAL_S:
        raise _Invalid(f"a number of seconds > 0 and <= {MAX_INTERVAL_S:g}")
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
        if not value.strip().isdigit():
            raise _Invalid("a process id (a positive integer)")
        value = int(value.strip())
    if not isinstance(value, int) or value <= 0 or value > 2**31:
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
        shown = repr(raw)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ValueError(f"{label}={shown} is not valid: expected {exc}") from None


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    known = {spec.env for spec in OPTION_SPECS}
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in known:
            _logger.warning(
                "ignoring unknown environment variable %s (known: %s)", key, ", ".join(sorted(known))
            )
