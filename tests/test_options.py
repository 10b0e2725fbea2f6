from __future__ import annotations

import logging
import re

import pytest

from sysgauge.options import SOURCE_NAMES, Options, resolve_options


def test_defaults() -> None:
    options = resolve_options({}, environ={})
    assert options == Options()
    assert options.sampling_interval == 2.0 and options.window == 30.0
    assert options.disk_paths == ("/",) and options.per_cpu and options.process_tree
    assert "lo" in options.network_exclude


def test_environment_sets_every_option_and_keywords_win() -> None:
    env = {
        "SYSGAUGE_SAMPLING_INTERVAL": "0.5",
        "SYSGAUGE_WINDOW": "10",
        "SYSGAUGE_SOURCES": "cpu, memory",
        "SYSGAUGE_PID": "1",
        "SYSGAUGE_PROCESS_TREE": "off",
        "SYSGAUGE_DISK_PATHS": "/,/data",
        "SYSGAUGE_PER_CPU": "false",
        "SYSGAUGE_DISK_INCLUDE": "sd.*",
        "SYSGAUGE_DISK_EXCLUDE": "",
        "SYSGAUGE_NETWORK_INCLUDE": "eth.*",
        "SYSGAUGE_NETWORK_EXCLUDE": "docker.*",
        "SYSGAUGE_PEAKS": "process.memory.usage",
        "SYSGAUGE_CGROUP": "no",
    }
    options = resolve_options({}, environ=env)
    assert options == Options(
        sampling_interval=0.5,
        window=10.0,
        sources=("cpu", "memory"),
        pid=1,
        process_tree=False,
        disk_paths=("/", "/data"),
        per_cpu=False,
        disk_include=("sd.*",),
        disk_exclude=(),
        network_include=("eth.*",),
        network_exclude=("docker.*",),
        peaks=("process.memory.usage",),
        cgroup=False,
    )
    assert resolve_options({"window": 20, "sources": ["disk"]}, environ=env).window == 20.0
    assert resolve_options({"sources": ["disk"]}, environ=env).sources == ("disk",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"samplng_interval": 1}, r"unknown option 'samplng_interval'; accepted: sampling_interval, window"),
        ({"sampling_interval": -1}, r"sampling_interval=-1 is not valid: expected a number of seconds > 0"),
        ({"sampling_interval": 0}, r"sampling_interval=0 is not valid"),
        ({"sampling_interval": float("nan")}, r"expected a finite number"),
        ({"sampling_interval": True}, r"sampling_interval=True is not valid"),
        ({"window": 1, "sampling_interval": 2}, r"window \(1 s\) must be >= sampling_interval \(2 s\)"),
        (
            {"sources": ["cpu", "gpu"]},
            r"sources=\['cpu', 'gpu'\] is not valid: expected source names from "
            + re.escape(", ".join(SOURCE_NAMES))
            + r" \(unknown: gpu\)",
        ),
        ({"sources": []}, r"at least one source name"),
        ({"pid": -5}, r"pid=-5 is not valid: expected a process id"),
        ({"per_cpu": "maybe"}, r"per_cpu='maybe' is not valid: expected true or false"),
        ({"disk_exclude": ["("]}, r"disk_exclude=\['\('\] is not valid: expected valid regular expressions"),
        ({"disk_paths": 5}, r"disk_paths=5 is not valid: expected a list of paths"),
        ({"peaks": ["process.cpu.time"]}, r"expected names of sampled gauges"),
    ],
)
def test_bad_keyword_values_name_the_option_and_what_is_accepted(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_options(kwargs, environ={})


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        (
            "SYSGAUGE_SAMPLING_INTERVAL",
            "fast",
            r"SYSGAUGE_SAMPLING_INTERVAL='fast' is not valid: expected a number",
        ),
        ("SYSGAUGE_WINDOW", "-3", r"SYSGAUGE_WINDOW='-3' is not valid"),
        ("SYSGAUGE_PID", "12abc", r"SYSGAUGE_PID='12abc' is not valid: expected a process id"),
        ("SYSGAUGE_PROCESS_TREE", "2", r"SYSGAUGE_PROCESS_TREE='2' is not valid: expected true or false"),
        ("SYSGAUGE_SOURCES", "cpu,gpu", r"SYSGAUGE_SOURCES='cpu,gpu' is not valid: .*unknown: gpu"),
    ],
)
def test_garbage_in_variables_names_the_variable(variable: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_options({}, environ={variable: raw})


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        resolve_options({"sampling_interval": "x" * 10_000}, environ={})
    assert len(str(info.value)) < 200


def test_unknown_variable_is_warned_about_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sysgauge"):
        resolve_options({}, environ={"SYSGAUGE_INTERVALL": "1"})
    assert "SYSGAUGE_INTERVALL" in caplog.text
