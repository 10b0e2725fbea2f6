"""The `sysgauge` command: monitor, run, detect, metrics."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sysgauge._version import __version__
from sysgauge.options import SOURCE_NAMES, parse_option

EXIT_USAGE = 2

_DESCRIPTION = """\
sysgauge samples this machine (CPU, memory, disk, network) and a process tree every few seconds
and exports the aggregate of each window as OpenTelemetry metrics.

With no exporter option and no OTEL_EXPORTER_OTLP_ENDPOINT, it prints a table on the console.
"""

_EPILOG = """\
examples:
  sysgauge                                  print a table of this machine's metrics every 30 s
  sysgauge monitor --interval 1 --window 5  sample every second, print every 5 s
  sysgauge monitor --jsonl run.jsonl        record OTLP-JSON lines (the Collector file exporter's format)
  sysgauge monitor --otlp                   send to the OTLP endpoint in OTEL_EXPORTER_OTLP_* (or localhost)
  sysgauge run -- python train.py           monitor a command's process tree; summary when it ends
  sysgauge plot run.jsonl -o run.png        chart a recorded run
  sysgauge detect                           which sources work here, and why not

Every option also has a SYSGAUGE_* variable (see the README); command-line flags win.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: what a script calling us can show as it is.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_monitor_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--interval", metavar="S", help="seconds between samples (default 2)")
    group.add_argument(
        "--window", metavar="S", help="seconds per exported aggregate, also the export interval (default 30)"
    )
    group.add_argument(
        "--sources",
        nargs="+",
        metavar="NAME",
        help=f"sources to read: {', '.join(SOURCE_NAMES)} (default: every available one)",
    )
    group.add_argument(
        "--no-per-cpu", action="store_true", help="one system.cpu.* series per mode, not per CPU"
    )
    scrape = parser.add_argument_group("Prometheus/OpenMetrics endpoints (docs/openmetrics.md)")
    scrape.add_argument(
        "--openmetrics",
        action="append",
        metavar="NAME=URL",
        help="scrape this endpoint (repeatable), e.g. dcgm=http://localhost:9400/metrics",
    )
    scrape.add_argument(
        "--openmetrics-filter",
        action="append",
        metavar="REGEX",
        help="keep metrics whose ENDPOINT.METRIC fully matches REGEX (repeatable)",
    )
    scrape.add_argument(
        "--openmetrics-filters",
        metavar="JSON",
        help='filters as JSON: a list of regexes or {"name regex": {"label": "value regex"}}',
    )
    scrape.add_argument(
        "--openmetrics-header",
        action="append",
        metavar="NAME=HEADER:VALUE",
        help="send this HTTP header to endpoint NAME (repeatable); never printed",
    )
    out = parser.add_argument_group("output (several may be combined)")
    out.add_argument(
        "--console", action="store_true", help="print a table (the default without --jsonl/--otlp)"
    )
    out.add_argument("--jsonl", metavar="FILE", help="append OTLP-JSON lines to FILE")
    out.add_argument(
        "--otlp",
        nargs="?",
        const="",
        metavar="URL",
        help="export over OTLP; URL defaults to OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT. "
        "Protocol from OTEL_EXPORTER_OTLP_PROTOCOL (grpc, or http/protobuf)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sysgauge",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sysgauge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    monitor = commands.add_parser(
        "monitor",
        help="sample this machine and export every window (the default)",
        description="Sample this machine and a process tree; export every window.",
    )
    _add_monitor_options(monitor)
    monitor.add_argument(
        "--pid", metavar="PID", help="root of the monitored process tree (default: sysgauge)"
    )
    monitor.add_argument(
        "--duration", metavar="S", type=float, help="stop after S seconds (default: until Ctrl-C)"
    )

    run = commands.add_parser(
        "run",
        help="run a command and monitor its process tree",
        description="Run CMD, monitor its process tree, forward SIGINT/SIGTERM, exit with "
        "its exit code and print a summary (mean and peak).",
        usage="sysgauge run [options] -- CMD [ARGS...]",
    )
    _add_monitor_options(run)
    run.add_argument("--no-summary", action="store_true", help="do not print the summary at the end")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command and its arguments")

    commands.add_parser("detect", help="list every source, whether it works here and why not")
    plot = commands.add_parser(
        "plot",
        help="chart a recorded run (--jsonl files, or the Collector's file exporter output)",
        description="Draw one figure of small charts of a recorded run: CPU, memory, disk and network rates, "
        "and per GPU utilization, memory, power and temperature. Needs matplotlib (sysgauge[plot]).",
    )
    plot.add_argument(
        "files", nargs="+", metavar="RUN.jsonl", help="OTLP-JSON lines; several files are joined"
    )
    plot.add_argument(
        "-o", "--output", metavar="FILE", help="a .png, .svg, .pdf or .html file (default: RUN.png)"
    )
    plot.add_argument(
        "--metrics", nargs="+", metavar="FAMILY", help="families to draw: cpu memory disk network gpu"
    )
    metrics = commands.add_parser("metrics", help="list every metric sysgauge can emit (markdown)")
    metrics.add_argument("--options", action="store_true", help="list the options and variables instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known_commands = {"monitor", "run", "detect", "metrics", "plot"}
    if not argv or (argv[0] not in known_commands and argv[0] not in ("-h", "--help", "--version")):
        argv = ["monitor", *argv]  # bare `sysgauge` (or `sysgauge --interval 1`) monitors
    args = parser.parse_args(argv)
    try:
        if args.command == "detect":
            return _detect()
        if args.command == "metrics":
            from sysgauge.metric_table import metric_table, option_table

            print(option_table() if args.options else metric_table())
            return 0
        if args.command == "run":
            return _run(args)
        if args.command == "plot":
            return _plot(args)
        return _monitor(args)
    except ValueError as exc:
        print(f"sysgauge: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _options(args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    """Keyword arguments for instrument_system; flag values are checked here so errors name the flag."""
    options: dict[str, Any] = {}
    if args.interval is not None:
        options["sampling_interval"] = parse_option("sampling_interval", args.interval, "--interval")
    if args.window is not None:
        options["window"] = parse_option("window", args.window, "--window")
    if args.sources:
        names = [s for item in args.sources for s in item.split(",")]
        options["sources"] = parse_option("sources", names, "--sources")
    if args.no_per_cpu:
        options["per_cpu"] = False
    options.update(_openmetrics_options(args))
    if pid is not None:
        options["pid"] = pid
    return options


def _openmetrics_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.openmetrics:
        endpoints = {}
        for item in args.openmetrics:
            name, sep, url = item.partition("=")
            if not sep:
                raise ValueError(f"--openmetrics {item!r} is not valid: expected NAME=URL")
            endpoints[name] = url
        options["openmetrics_endpoints"] = parse_option("openmetrics_endpoints", endpoints, "--openmetrics")
    if args.openmetrics_filter and args.openmetrics_filters:
        raise ValueError("--openmetrics-filter and --openmetrics-filters cannot be combined")
    if args.openmetrics_filter:
        options["openmetrics_filters"] = parse_option(
            "openmetrics_filters", args.openmetrics_filter, "--openmetrics-filter"
        )
    if args.openmetrics_filters:
        options["openmetrics_filters"] = parse_option(
            "openmetrics_filters", args.openmetrics_filters, "--openmetrics-filters"
        )
    if args.openmetrics_header:
        headers: dict[str, dict[str, str]] = {}
        for item in args.openmetrics_header:
            name, sep, header = item.partition("=")
            field, colon, value = header.partition(":")
            if not sep or not colon:
                # The value may be a secret: name the shape, not the text.
                raise ValueError(
                    f"--openmetrics-header for {name!r} is not valid: expected NAME=HEADER:VALUE"
                )
            headers.setdefault(name, {})[field.strip()] = value.strip()
        options["openmetrics_headers"] = parse_option("openmetrics_headers", headers, "--openmetrics-header")
    return options


def _monitor(args: argparse.Namespace) -> int:
    from sysgauge._pipeline import Pipeline

    pid = None if args.pid is None else parse_option("pid", args.pid, "--pid")
    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration {args.duration:g} is not valid: expected a number of seconds > 0")
    pipeline = Pipeline.start(args, _options(args, pid))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stop.wait(args.duration)
    finally:
        pipeline.close()  # one last export of what the window holds
    return 0


def _run(args: argparse.Namespace) -> int:
    from sysgauge._pipeline import Pipeline
    from sysgauge.summary import RunSummary

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ValueError("run needs a command: sysgauge run [options] -- CMD [ARGS...]")
    # Validate the options before starting anything the user would have to clean up.
    from sysgauge.options import resolve_options

    resolve_options(_options(args, None))
    try:
        # No sysgauge thread runs yet, so a preexec_fn is safe here.
        child = subprocess.Popen(cmd, preexec_fn=_end_with_this_process())
    except OSError as exc:
        print(f"sysgauge: error: cannot run {cmd[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    forward = _Forwarder(child)
    summary = RunSummary()
    pipeline = None
    try:
        pipeline = Pipeline.start(args, _options(args, child.pid), listener=summary, console_default=False)
        code = child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise
    finally:
        forward.restore()
        if pipeline is not None:
            pipeline.close()
    if not args.no_summary:
        sys.stderr.write(summary.render())
        if args.jsonl:
            recorded = os.path.abspath(args.jsonl)
            sys.stderr.write(f"sysgauge: recorded to {recorded}; chart it with: sysgauge plot {recorded}\n")
    return 128 - code if code < 0 else code


# prctl(2) option: the signal the calling process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1


def _end_with_this_process() -> Callable[[], None] | None:
    """On Linux, a preexec_fn that sends the command SIGTERM when sysgauge ends, even killed by SIGKILL
    or the OOM killer, so that it never runs on unmonitored (docs/reliability.md, limitation 14).

    SIGTERM rather than SIGKILL: the program may save its work, as under any supervisor that stops it.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # sysgauge died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class _Forwarder:
    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self._child = child
        self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in self._previous:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # Ctrl-C on a terminal already reached the child: it is in our foreground group
        try:
            self._child.send_signal(signum)
        except OSError:
            pass

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _terminal_delivers_sigint() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sysgauge.plot import FAMILIES, MatplotlibMissing, build_panels, draw, save, title_of
    from sysgauge.recording import RecordingError, read_recording

    families = [f for item in (args.metrics or FAMILIES) for f in item.split(",")]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(
            f"--metrics {' '.join(unknown)} is not valid: expected some of {', '.join(FAMILIES)}"
        )
    output = Path(args.output) if args.output else Path(args.files[0]).with_suffix(".png")
    if output.suffix.lower() not in (".png", ".svg", ".pdf", ".html", ".htm"):
        raise ValueError(f"-o {str(output)!r} is not valid: expected a .png, .svg, .pdf or .html file name")
    try:
        recording = read_recording(args.files)
    except RecordingError as exc:
        raise ValueError(str(exc)) from None
    panels = build_panels(recording, families)
    if not panels:
        raise ValueError(f"nothing to draw: the recording has none of {', '.join(families)}")
    try:
        figure = draw(panels, title_of(recording))
    except MatplotlibMissing as exc:
        raise ValueError(str(exc)) from None
    try:
        save(figure, output, title_of(recording))
    except OSError as exc:
        raise ValueError(f"-o {str(output)!r}: cannot write: {exc.strerror or exc}") from None
    print(f"sysgauge: wrote {output} ({len(panels)} charts)")
    return 0


def _detect() -> int:
    from sysgauge.options import resolve_options
    from sysgauge.sources import SOURCE_FACTORIES, build_source

    options = resolve_options({})
    width = max(len(name) for name in SOURCE_FACTORIES)
    for name in SOURCE_FACTORIES:
        source = build_source(name, options)
        reason = source.probe()
        state = "available" if reason is None else f"unavailable: {reason}"
        print(f"{name:<{width}}  {state}")
        describe = getattr(source, "describe", None)
        if reason is None and describe is not None:
            for line in describe().splitlines():
                print(f"{'':<{width}}    {line}")
        check = getattr(source, "check", None)
        if reason is None and check is not None:
            for endpoint, error in check().items():
                print(f"{'':<{width}}    {endpoint}: {'answers' if error is None else error}")
        source.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
